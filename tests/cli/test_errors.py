"""Bad input: exit code >= 3 and a one-line message naming the problem; nothing written."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import pytest


def _write(adata, tmp_path, name="bad.h5ad"):
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


def test_missing_perturbation_column(gim, screen, tmp_path):
    rc, err, out = _train(
        gim, _write(screen, tmp_path), tmp_path, "--perturbation-key", "treatment"
    )
    assert rc >= 3 and "'treatment'" in err and len(err.splitlines()) == 1
    assert not (out / "model.pt").exists()


def test_missing_dose_column(gim, screen, tmp_path):
    rc, err, _ = _train(gim, _write(screen, tmp_path), tmp_path, "--dose-key", "conc")
    assert rc >= 3 and "'conc'" in err


def test_no_control_cells(gim, screen, tmp_path):
    rc, err, _ = _train(
        gim, _write(screen, tmp_path), tmp_path, "--control", "DMSO", "--smiles-key", "smiles"
    )
    assert rc >= 3 and "no control cells" in err and "'DMSO'" in err


def test_no_control_in_one_cell_line(gim, screen, tmp_path):
    drop = (screen.obs["condition"] == "control") & (screen.obs["cell_line"] == "line1")
    rc, err, _ = _train(
        gim,
        _write(screen[~drop.to_numpy()].copy(), tmp_path),
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
    rc, err, _ = _train(gim, _write(screen, tmp_path), tmp_path, "--smiles-key", "smiles")
    assert rc >= 3 and "Aspirin" in err and "Caffeine" in err and "unparseable SMILES" in err


def test_perturbation_without_features(gim, screen, tmp_path):
    csv = tmp_path / "f.csv"
    pd.DataFrame({"name": ["Aspirin"], "smiles": ["CC(=O)OC1=CC=CC=C1C(=O)O"]}).to_csv(
        csv, index=False
    )
    rc, err, _ = _train(gim, _write(screen, tmp_path), tmp_path, "--drug-features", csv)
    assert rc >= 3 and "no SMILES" in err and "Caffeine" in err


def test_missing_file_and_corrupt_file(gim, tmp_path):
    rc, err, _ = _train(gim, tmp_path / "nope.h5ad", tmp_path)
    assert rc >= 3 and "no such file" in err
    bad = tmp_path / "corrupt.h5ad"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 20)
    rc, err, _ = _train(gim, bad, tmp_path)
    assert rc >= 3 and "cannot read" in err and "corrupt.h5ad" in err


def test_negative_values(gim, screen, tmp_path):
    X = screen.X.toarray()
    X[0, 0] = -1.0
    screen.X = X
    rc, err, _ = _train(gim, _write(screen, tmp_path), tmp_path, "--smiles-key", "smiles")
    assert rc >= 3 and "negative" in err


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
