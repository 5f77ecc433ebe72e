"""The public library API (gimcli/__init__.py, gimcli/api.py): the same options as the CLI, with
the same defaults, documented; the CLI calls it; docs/api.md's example runs."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

import gimcli

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("train", "predict", "explain", "evaluate", "simulate")
# presentation of a command's output, which a library call returns instead
CLI_ONLY = {"as_json", "quiet", "fmt"}
CLI_ONLY_OF = {"explain": {"out"}}
# the one default that differs: `gim train` writes ./gim_run, gimcli.train(adata) returns the run
# and writes only where asked (out=...)
OTHER_DEFAULT = {("train", "out")}


def _click_commands():
    from gimcli.cli import _register
    from gimcli.cli._app import app

    _register()
    return typer.main.get_command(app).commands


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_a_keyword_of_the_api_with_the_same_default(name):
    func = getattr(gimcli, name)
    sig = inspect.signature(func).parameters
    cmd = _click_commands()[name]
    n_args = sum(getattr(p, "param_type_name", "") == "argument" for p in cmd.params)
    positional = [n for n, q in sig.items() if q.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert len(positional) == n_args
    for p in cmd.params:
        if p.name in CLI_ONLY | CLI_ONLY_OF.get(name, set()) or p.name == "help":
            continue
        if getattr(p, "param_type_name", "") == "argument":  # the API's positional arguments
            continue
        assert p.name in sig, f"gim {name} --{p.name}: not an option of gimcli.{name}"
        assert sig[p.name].kind is inspect.Parameter.KEYWORD_ONLY, p.name
        if not p.required and (name, p.name) not in OTHER_DEFAULT:
            default = p.default() if callable(p.default) else p.default
            api_default = sig[p.name].default
            if isinstance(api_default, Path | str) and default is not None:
                default, api_default = str(default), str(api_default)
            assert api_default == default, f"{name} {p.name}: {api_default!r} != {default!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_numpydoc_docstrings_name_every_option(name):
    func = getattr(gimcli, name)
    doc = inspect.getdoc(func)
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc
    section = doc.split("Parameters\n----------", 1)[1].split("Returns\n-------", 1)[0]
    documented = set(
        re.findall(
            r"[a-z_0-9]+",
            " ".join(ln for ln in section.splitlines() if ln and not ln.startswith(" ")),
        )
    )
    for p in inspect.signature(func).parameters:
        assert p in documented, f"gimcli.{name}: {p} undocumented"


def test_the_package_imports_nothing_until_the_api_is_used():
    code = (
        "import sys, gimcli; assert 'torch' not in sys.modules and 'anndata' not in sys.modules; "
        "gimcli.GimRun; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(gimcli.__all__) >= {"train", "predict", "explain", "evaluate", "simulate", "GimRun"}


def _example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return blocks[0]


def test_the_documented_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_example(), "docs/api.md", "exec"), ns)  # noqa: S102 (our own documentation)
    run, pred = ns["run"], ns["pred"]
    assert run.evaluation is not None and len(run.evaluation.table)
    assert (tmp_path / "run" / "model.json").exists()
    assert pred.n_obs > 0 and "X_pca" in pred.obsm


def test_the_cli_and_the_library_train_the_same_model(gim, tmp_path):
    from tests.tiny import TRAIN_ARGS, write_tiny

    data = write_tiny(tmp_path / "tiny.h5ad")
    rc, _, err = gim("train", data, "--out", tmp_path / "cli", "--steps", "30", *TRAIN_ARGS)
    assert rc == 0, err
    lib = gimcli.train(
        data, out=tmp_path / "lib", dose_key="dose", feature_keys=["f0", "f1", "f2"], steps=30
    )
    cli = gimcli.GimRun.load(tmp_path / "cli")
    for k, v in cli.module.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), lib.module.state_dict()[k].numpy())
    a = gimcli.predict(cli, conditions="drug00", doses=[100])
    b = gimcli.predict(tmp_path / "lib", conditions=["drug00"], doses="100")
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())
    rec = lib.meta.options
    assert rec["values"]["steps"] == 30 and rec["sources"]["steps"] == "argument"
    assert rec["sources"]["lr"] == "default"


def test_evaluate_takes_a_held_out_set_that_shares_the_training_controls():
    """A notebook user's held-out set is the new drugs plus the controls that training saw too,
    so cell names repeat across the two sets: the feature lookup over both sets' cells had raised
    'cannot reindex on an axis with duplicate labels'."""
    a = gimcli.simulate(n_genes=8, n_drugs=8, doses="10,100", n_cells=15, n_control=60, seed=0)
    drugs = sorted(set(a.obs["condition"]) - {"control"})
    held = a.obs["condition"].isin(drugs[:2]).to_numpy()
    ctrl = (a.obs["condition"] == "control").to_numpy()
    train, test = a[~held].copy(), a[held | ctrl].copy()
    feats = [c for c in a.obs.columns if c.startswith("f")]
    run = gimcli.train(train, dose_key="dose", feature_keys=feats, steps=60, seed=0)
    table = gimcli.evaluate(run, test, train=train, methods=["gim", "control"]).table
    per = table[table["scope"] == "context"]
    assert len(per) == 2 * 2 * 2  # 2 drugs x 2 doses x 2 methods
    assert set(per["condition"]) == set(drugs[:2]) and np.isfinite(per["r2_mean"]).all()
