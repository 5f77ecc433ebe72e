"""--config FILE.toml and GIM_<COMMAND>_<OPTION> variables: flag > env > file > default, for
every command, and the resolved values with their sources in model.json."""

from __future__ import annotations

import json

import anndata as ad
import pytest

from tests.tiny import TRAIN_ARGS, write_tiny


def _n_genes(gim, tmp_path, *flags, name="s.h5ad"):
    out = tmp_path / name
    rc, _, err = gim(
        "simulate", "--out", out, "--overwrite", "--n-control", "10", "--n-cells", "3", *flags
    )
    assert rc == 0, err
    return ad.read_h5ad(out).n_vars


@pytest.mark.parametrize(
    "file, env, flag, want",
    [
        (None, None, None, 20),  # the default
        (7, None, None, 7),  # file > default
        (7, 8, None, 8),  # env > file
        (7, 8, 9, 9),  # flag > env
        (None, 8, 9, 9),
        (7, None, 9, 9),
    ],
)
def test_precedence_flag_env_file_default(gim, tmp_path, monkeypatch, file, env, flag, want):
    flags = []
    if file is not None:
        cfg = tmp_path / "gim.toml"
        cfg.write_text(f"[simulate]\nn-genes = {file}\n")
        flags += ["--config", cfg]
    if env is not None:
        monkeypatch.setenv("GIM_SIMULATE_N_GENES", str(env))
    if flag is not None:
        flags += ["--n-genes", str(flag)]
    assert _n_genes(gim, tmp_path, *flags) == want


def test_file_forms_top_level_tables_lists_and_gim_config(gim, tmp_path, monkeypatch):
    cfg = tmp_path / "gim.toml"
    # top level applies to every command that has the option; a table wins over it; lists join
    cfg.write_text("seed = 3\nn_genes = 6\ndoses = [5, 50]\n[simulate]\nn-genes = 5\n")
    monkeypatch.setenv("GIM_CONFIG", str(cfg))
    out = tmp_path / "s.h5ad"
    assert _n_genes(gim, tmp_path) == 5
    assert sorted(set(ad.read_h5ad(out).obs["dose"].astype(str)) - {"0"}) == ["5", "50"]


def test_bad_files_are_usage_errors(gim, tmp_path):
    cfg = tmp_path / "gim.toml"
    cfg.write_text("[simulate]\nn-genez = 5\n")
    rc, _, err = gim("simulate", "--out", tmp_path / "s.h5ad", "--config", cfg)
    assert rc == 2 and "n-genez" in err
    cfg.write_text("no_such_option = 1\n")
    rc, _, err = gim("simulate", "--out", tmp_path / "s.h5ad", "--config", cfg)
    assert rc == 2 and "no_such_option" in err
    cfg.write_text("n-genes = [\n")
    rc, _, err = gim("simulate", "--out", tmp_path / "s.h5ad", "--config", cfg)
    assert rc == 2 and "TOML" in err


def test_train_records_resolved_options_and_sources(gim, tmp_path, monkeypatch):
    data = write_tiny(tmp_path / "tiny.h5ad")
    cfg = tmp_path / "gim.toml"
    cfg.write_text("[train]\nsteps = 12\nlr = 0.02\nseed = 4\n")
    monkeypatch.setenv("GIM_TRAIN_LR", "0.03")
    monkeypatch.setenv("GIM_TRAIN_FIX_GRAPH", "1")
    run = tmp_path / "run"
    rc, _, err = gim("train", data, "--out", run, "--config", cfg, "--seed", "5", *TRAIN_ARGS)
    assert rc == 0, err
    meta = json.loads((run / "model.json").read_text())
    c, opt = meta["config"], meta["options"]
    assert (c["steps"], c["lr"], c["seed"], c["fix_graph"]) == (12, 0.03, 5, True)
    assert opt["sources"]["steps"] == "file"
    assert opt["sources"]["lr"] == "env" and opt["sources"]["fix_graph"] == "env"
    assert opt["sources"]["seed"] == "flag" and opt["sources"]["target_cost"] == "default"
    assert opt["values"]["lr"] == 0.03 and opt["config_file"] == str(cfg)
