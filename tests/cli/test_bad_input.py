"""Bad input through the real CLI: exit code >= 3, one line naming the file, column, value or
cell, and no output written. CASES (on the tiny numeric screen) is also what
bench/robust_messages.py prints; the SMILES screen covers features, per-group controls and the
other commands."""

from __future__ import annotations

import json
import os

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from gimcli.errors import ModelError
from tests.tiny import TRAIN_ARGS, tiny_screen, write_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense(a):
    a.X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    return a


def _set_x(a, i, j, v):
    a = _dense(a)
    a.X[i, j] = v
    return a


def _obs(a, col, fn):
    obs = a.obs.copy()
    obs[col] = fn(obs)
    a.obs = obs
    return a


def _counts(a):
    a = _dense(a)
    a.X = np.round(np.expm1(a.X) * 10).astype(np.float32)
    return a


def _dup_var(a):
    a.var_names = ["G0", "G0", *a.var_names[2:]]
    return a


def _dup_obs(a):
    a.obs_names = ["cell0", "cell0", *a.obs_names[2:]]
    return a


# id -> (corrupt the tiny screen, extra CLI args, substrings the one-line message must contain)
CASES = {
    "nan_in_X": (
        lambda a: _set_x(a, 5, 2, np.nan),
        [],
        ["X: contains NaN", "cell 'cell5'", "gene 'G2'"],
    ),
    "inf_in_X": (lambda a: _set_x(a, 7, 1, np.inf), [], ["infinite", "cell 'cell7'", "gene 'G1'"]),
    "negative_in_X": (
        lambda a: _set_x(a, 3, 4, -0.5),
        [],
        ["negative values (min -0.5", "cell 'cell3'"],
    ),
    "normalised_not_logged": (
        lambda a: _dense(_set_x(_counts(a), 0, 0, 1234.5)),
        [],
        ["non-integer values up to", "1234", "neither integer counts nor log-normalised"],
    ),
    "counts_mixed_with_log": (
        lambda a: _set_x(_counts(a), 130, 6, 0.6931),
        [],
        ["non-integer values up to", "0.6931 at cell 'cell130', gene 'G6'"],
    ),
    "counts_layer_not_integer": (
        lambda a: (a.layers.__setitem__("counts", a.X.copy()), a)[1],
        ["--counts-layer", "counts"],
        ["--counts-layer given but", "not integer counts"],
    ),
    "counts_layer_missing": (
        lambda a: a,
        ["--counts-layer", "raw"],
        ["--counts-layer 'raw': no such layer"],
    ),
    "duplicated_genes": (_dup_var, [], ["duplicated gene names", "'G0'"]),
    "duplicated_cells": (_dup_obs, [], ["duplicated cell names", "'cell0'"]),
    "missing_covariate_column": (
        lambda a: a,
        ["--covariate-keys", "plate"],
        ["covariate column 'plate' not in obs"],
    ),
    "missing_feature_column": (
        lambda a: a,
        ["--feature-keys", "f0,logP"],
        ["feature column 'logP' not in obs"],
    ),
    "missing_perturbation_column": (
        lambda a: a,
        ["--perturbation-key", "treatment"],
        ["perturbation column 'treatment' not in obs"],
    ),
    "missing_dose_column": (lambda a: a, ["--dose-key", "conc"], ["dose column 'conc' not in obs"]),
    "bad_dose_value": (
        lambda a: _obs(
            a, "dose", lambda o: o["dose"].astype(str).where(o.index != "cell100", "ten")
        ),
        [],
        ["column 'dose': dose 'ten' is not a number"],
    ),
    "negative_dose": (
        lambda a: _obs(
            a, "dose", lambda o: o["dose"].astype(str).where(o.index != "cell100", "-5")
        ),
        [],
        ["dose '-5' must be finite and >= 0"],
    ),
    "perturbation_missing_values": (
        lambda a: _obs(
            a, "condition", lambda o: o["condition"].astype(object).where(o.index != "cell90", None)
        ),
        [],
        ["perturbation column 'condition' has 1 missing values", "cell90"],
    ),
    "no_control_cells": (lambda a: a, ["--control", "DMSO"], ["no control cells: no value 'DMSO'"]),
    "no_perturbed_cells": (
        lambda a: a[a.obs["condition"] == "control"].copy(),
        [],
        ["no perturbed cells"],
    ),
    "perturbation_without_features": (
        lambda a: _obs(a, "f1", lambda o: o["f1"].where(o["condition"] != "drug02", np.nan)),
        [],
        ["no values in feature columns", "drug02"],
    ),
    "non_numeric_feature": (
        lambda a: _obs(a, "f0", lambda o: o["f0"].astype(str)),
        [],
        ["feature column 'f0' is not numeric"],
    ),
    "no_cells": (lambda a: a[:0].copy(), [], ["has 0 cells x 8 genes"]),
}


def _run_case(gim, tmp_path, name):
    corrupt, extra, _ = CASES[name]
    path = tmp_path / "bad.h5ad"
    corrupt(tiny_screen()).write_h5ad(path)
    out = tmp_path / "run"
    rc, stdout, err = gim("train", path, "--out", out, *TRAIN_ARGS, "--steps", "5", *extra)
    return rc, err.strip(), out


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named_on_one_line(gim, tmp_path, name):
    rc, err, out = _run_case(gim, tmp_path, name)
    assert rc >= 3, err
    assert (
        len(err.splitlines()) == 1 and err.startswith("gim: error: ") and "Traceback" not in err
    ), err
    for s in CASES[name][2]:
        assert s in err, (s, err)
    assert not (out / "model.pt").exists() and not (out / "annotated.h5ad").exists()


def test_a_context_of_two_cells_is_kept(gim, tmp_path):
    """Bulk screens have one sample per context: no context is dropped for its size by default."""
    a = tiny_screen()
    keep = (a.obs["condition"] != "drug03").to_numpy()
    keep[np.flatnonzero(~keep)[:2]] = True  # drug03 keeps 2 cells
    path = tmp_path / "few.h5ad"
    a[keep].copy().write_h5ad(path)
    rc, _, err = gim(
        "train",
        path,
        "--out",
        tmp_path / "run",
        *[x for x in TRAIN_ARGS if x != "-q"],
        "--steps",
        "5",
    )
    assert rc == 0, err
    assert "skipping" not in err
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    n = {c["condition"]: c["n_cells"] for c in meta["contexts"]}
    assert n["drug03"] == 2 and len(meta["contexts"]) == 5


def test_empty_truncated_and_non_h5ad_files(gim, tmp_path):
    good = write_tiny(tmp_path / "good.h5ad")
    cases = {
        "empty.h5ad": b"",
        "text.h5ad": b"condition,dose\ncontrol,0\n",
        "truncated.h5ad": good.read_bytes()[: good.stat().st_size // 2],
    }
    msgs = {}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        rc, _, err = gim("train", p, "--out", tmp_path / "run", *TRAIN_ARGS)
        assert rc == 3 and len(err.strip().splitlines()) == 1 and name in err, err
        msgs[name] = err
    assert "file is empty" in msgs["empty.h5ad"]
    assert (
        "cannot read as .h5ad" in msgs["text.h5ad"]
        and "cannot read as .h5ad" in msgs["truncated.h5ad"]
    )
    assert not (tmp_path / "run" / "model.pt").exists()


def write_legacy_h5ad(path):
    """The pre-0.7 AnnData layout (obs/var as compound datasets, dense X), which anndata still
    reads."""
    a = tiny_screen()
    obs = a.obs
    dt = [
        ("index", "S16"),
        ("condition", "S16"),
        ("dose", "S8"),
        ("f0", "f8"),
        ("f1", "f8"),
        ("f2", "f8"),
    ]
    rec = np.array(
        list(
            zip(
                obs.index.str.encode("ascii"),
                obs["condition"].astype(str).str.encode("ascii"),
                obs["dose"].astype(str).str.encode("ascii"),
                obs["f0"],
                obs["f1"],
                obs["f2"],
                strict=True,
            )
        ),
        dtype=dt,
    )
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=a.X.toarray())
        f.create_dataset("obs", data=rec)
        f.create_dataset(
            "var", data=np.array([(g.encode(),) for g in a.var_names], dtype=[("index", "S8")])
        )
    return a


def test_legacy_h5ad_layouts_train(gim, tmp_path):
    src = write_legacy_h5ad(tmp_path / "legacy.h5ad")
    rc, _, err = gim(
        "train", tmp_path / "legacy.h5ad", "--out", tmp_path / "r1", *TRAIN_ARGS, "--steps", "5"
    )
    assert rc == 0, err
    meta = json.loads((tmp_path / "r1" / "model.json").read_text())
    assert meta["training"]["n_cells"] == src.n_obs and len(meta["contexts"]) == 5
    # CSC matrix, int64 counts and a .raw: other layouts seen in the wild
    a = _counts(tiny_screen())
    a.raw = a.copy()
    a.X = sp.csc_matrix(a.X.astype(np.int64))
    a.write_h5ad(tmp_path / "csc.h5ad")
    rc, _, err = gim(
        "train", tmp_path / "csc.h5ad", "--out", tmp_path / "r2", *TRAIN_ARGS, "--steps", "5"
    )
    assert rc == 0, err
    assert (
        json.loads((tmp_path / "r2" / "model.json").read_text())["preprocess"]["is_counts"] is True
    )


def test_counts_mixed_with_non_integers_beyond_the_detection_sample():
    """Detection looks at a sample; the full check still catches a concatenated log block."""
    from gimcli.data.checks import check_scale
    from gimcli.errors import InputError

    X = sp.csr_matrix(np.vstack([np.full((3, 4), 7.0), [[0, 0.5, 0, 0]]]))
    with pytest.raises(
        InputError,
        match=r"integer counts mixed with non-integer values \(e.g. 0.5 at cell 'c3', "
        r"gene 'g1'\)",
    ):
        check_scale(
            X,
            True,
            where="X",
            obs_names=["c0", "c1", "c2", "c3"],
            var_names=["g0", "g1", "g2", "g3"],
        )
    check_scale(X[:3], True, where="X")  # all integers: fine


# -- gene alignment at predict/evaluate time ---------------------------------------------------
def test_new_data_aligned_by_gene_name_missing_genes_named():
    from gimcli.data.preprocess import PreprocessInfo, transform_new

    genes = [f"G{i}" for i in range(20)]
    info = PreprocessInfo(
        source="X",
        is_counts=False,
        target_sum=None,
        log1p=False,
        hvg_flavor=None,
        n_top_genes=20,
        genes=genes,
    )
    X = np.random.default_rng(0).random((6, 20)).astype(np.float32)
    a = ad.AnnData(X, var={"_": np.zeros(20)})
    a.var_names = genes
    order = np.random.default_rng(1).permutation(20)
    shuffled = a[:, order].copy()
    np.testing.assert_array_equal(
        transform_new(shuffled, info)[0].toarray(), X
    )  # by name, not position
    two = a[:, 2:].copy()  # 2 of 20 missing (10%): zero-filled, named
    Xg, missing = transform_new(two, info)
    assert missing == ["G0", "G1"] and not Xg.toarray()[:, :2].any()
    np.testing.assert_array_equal(Xg.toarray()[:, 2:], X[:, 2:])
    with pytest.raises(
        ModelError, match=r"test.h5ad: 3 of the model's 20 genes are missing.*'G0', 'G1', 'G2'"
    ):
        transform_new(a[:, 3:].copy(), info, where="test.h5ad")
    counts = ad.AnnData(np.round(X * 50), var=a.var.copy())
    with pytest.raises(Exception, match="looks like raw integer counts"):
        transform_new(counts, info, where="test.h5ad")


# -- run directories: incompatible, truncated, tampered, malicious -----------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from gimcli.cli import main

    d = tmp_path_factory.mktemp("run")
    data = write_tiny(d / "tiny.h5ad")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(data), "--out", str(d / "run"), *TRAIN_ARGS, "--steps", "5"]) == 0
    finally:
        torch.set_num_threads(n)
    return d / "run"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _copy_run(src, dst):
    import shutil

    return shutil.copytree(src, dst)


def _predict(gim, run, tmp_path):
    out = tmp_path / "pred.h5ad"
    rc, _, err = gim("predict", run, "--conditions", "drug00", "--doses", "100", "--out", out, "-q")
    assert not out.exists()
    return rc, err.strip()


def test_model_dir_malicious_truncated_tampered_incompatible(gim, trained_run, tmp_path):
    marker = tmp_path / "pwned"
    # a pickle that runs code when unpickled: refused by weights_only, nothing runs
    run = _copy_run(trained_run, tmp_path / "evil")
    torch.save({"module.sem.B": _Evil(str(marker))}, run / "model.pt")
    meta = json.loads((run / "model.json").read_text())
    meta.pop("weights_sha256")  # as if an attacker also edited model.json
    (run / "model.json").write_text(json.dumps(meta))
    rc, err = _predict(gim, run, tmp_path)
    assert (
        rc == 4 and "holds pickled objects other than tensors; refused" in err and "model.pt" in err
    ), err
    assert not marker.exists()
    # truncated weights (e.g. a copy interrupted by a quota)
    run = _copy_run(trained_run, tmp_path / "trunc")
    w = (run / "model.pt").read_bytes()
    (run / "model.pt").write_bytes(w[: len(w) // 3])
    rc, err = _predict(gim, run, tmp_path)
    assert rc == 4 and "does not match model.json (SHA-256 differs)" in err, err
    # model.pt and model.json from different runs
    run = _copy_run(trained_run, tmp_path / "mixed")
    t = torch.load(run / "model.pt", weights_only=True)
    t["module.sem.B"] = t["module.sem.B"] + 1
    torch.save(t, run / "model.pt")
    rc, err = _predict(gim, run, tmp_path)
    assert rc == 4 and "SHA-256 differs" in err
    # missing, corrupt and incompatible metadata
    run = _copy_run(trained_run, tmp_path / "nometa")
    (run / "model.json").unlink()
    rc, err = _predict(gim, run, tmp_path)
    assert rc == 4 and "not a gim run directory (missing model.json)" in err
    run = _copy_run(trained_run, tmp_path / "badjson")
    (run / "model.json").write_text((trained_run / "model.json").read_text()[:100])
    rc, err = _predict(gim, run, tmp_path)
    assert rc == 4 and "corrupt model metadata" in err
    run = _copy_run(trained_run, tmp_path / "future")
    meta = json.loads((run / "model.json").read_text())
    meta["format_version"] = 99
    (run / "model.json").write_text(json.dumps(meta))
    rc, err = _predict(gim, run, tmp_path)
    assert rc == 4 and "model format 99" in err and "retrain" in err
    # and the intact directory works, so the failures above are the corruptions'
    rc, _, err = gim(
        "predict",
        trained_run,
        "--conditions",
        "drug00",
        "--doses",
        "100",
        "--out",
        tmp_path / "ok.h5ad",
        "-q",
    )
    assert rc == 0, err


# -- the SMILES screen (two cell lines, pairs): features, controls per group, other commands -----
def _write_screen(adata, tmp_path, name="bad.h5ad"):
    p = tmp_path / name
    adata.write_h5ad(p)
    return p


@pytest.fixture
def screen(smiles_h5ad):
    return ad.read_h5ad(smiles_h5ad)


def _train(gim, path, tmp_path, *extra):
    out = tmp_path / "run"
    rc, _, err = gim("train", path, "--out", out, "--steps", "5", "-q", *extra)
    return rc, err.strip(), out


def test_no_control_in_one_cell_line(gim, screen, tmp_path):
    drop = (screen.obs["condition"] == "control") & (screen.obs["cell_line"] == "line1")
    rc, err, _ = _train(
        gim,
        _write_screen(screen[~drop.to_numpy()].copy(), tmp_path),
        tmp_path,
        "--covariate-keys",
        "cell_line",
        "--smiles-key",
        "smiles",
    )
    assert rc >= 3 and "cell_line=line1" in err


def test_unparseable_smiles_are_all_named(gim, screen, tmp_path):
    obs = screen.obs.copy()
    obs["smiles"] = obs["smiles"].astype(str)
    obs.loc[obs["condition"] == "Aspirin", "smiles"] = "C1CC(notasmiles"
    obs.loc[obs["condition"] == "Caffeine", "smiles"] = "XYZ"
    screen.obs = obs
    rc, err, _ = _train(gim, _write_screen(screen, tmp_path), tmp_path, "--smiles-key", "smiles")
    assert rc >= 3 and "Aspirin" in err and "Caffeine" in err and "unparseable SMILES" in err


def test_perturbation_without_features(gim, screen, tmp_path):
    csv = tmp_path / "f.csv"
    pd.DataFrame({"name": ["Aspirin"], "smiles": ["CC(=O)OC1=CC=CC=C1C(=O)O"]}).to_csv(
        csv, index=False
    )
    rc, err, _ = _train(gim, _write_screen(screen, tmp_path), tmp_path, "--drug-features", csv)
    assert rc >= 3 and "no SMILES" in err and "Caffeine" in err


def test_missing_file_and_corrupt_file(gim, tmp_path):
    rc, err, _ = _train(gim, tmp_path / "nope.h5ad", tmp_path)
    assert rc >= 3 and "no such file" in err
    bad = tmp_path / "corrupt.h5ad"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 20)
    rc, err, _ = _train(gim, bad, tmp_path)
    assert rc >= 3 and "cannot read" in err and "corrupt.h5ad" in err


def test_usage_error_is_exit_2(gim, tmp_path):
    rc, _, _ = gim("train")
    assert rc == 2
    rc, _, _ = gim("train", "x.h5ad", "--no-such-option")
    assert rc == 2


def test_predict_unknown_condition_and_bad_run_dir(gim, tmp_path):
    rc, _, err = gim("predict", tmp_path, "--conditions", "A", "--out", tmp_path / "p.h5ad")
    assert rc >= 3 and "not a gim run directory" in err
    assert not (tmp_path / "p.h5ad").exists()


def test_simulate_refuses_more_pairs_than_exist(gim, tmp_path):
    rc, _, err = gim("simulate", "--out", tmp_path / "s.h5ad", "--n-drugs", "3", "--n-combos", "5")
    assert rc == 3 and "at most 3 exist" in err


def test_explain_refuses_conditions_with_features(gim, tmp_path):
    csv = tmp_path / "f.csv"
    csv.write_text("name,smiles\nx,CCO\n")
    rc, _, err = gim("explain", tmp_path, "--conditions", "A", "--features", csv)
    assert rc == 3 and "not both" in err
