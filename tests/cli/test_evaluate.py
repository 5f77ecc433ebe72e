"""train --holdout-* and gim evaluate through the real entry point; numbers checked by hand."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gimcli import _keys

TRAIN = (
    "--dose-key",
    "dose",
    "--covariate-keys",
    "cell_line",
    "--smiles-key",
    "smiles",
    "--steps",
    "120",
    "-q",
)


@pytest.fixture(scope="module")
def split_run(sim_cache, tmp_path_factory):
    """One training with held-out pairs, shared by the tests of this module (it is read only)."""
    import contextlib
    import io

    from gimcli.cli import main

    run = tmp_path_factory.mktemp("split") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(
            [
                "train",
                str(sim_cache["smiles"]),
                "--out",
                str(run),
                *TRAIN,
                "--holdout-combinations",
                "all",
                "--json",
            ]
        )
    assert rc == 0
    return run, json.loads(buf.getvalue().strip().splitlines()[-1])


def test_train_holdout_writes_side_by_side_metrics(split_run, smiles_h5ad):
    run, summary = split_run
    assert {"eval_csv", "eval_json"} <= set(summary["files"])
    table = pd.read_csv(run / _keys.EVAL_CSV, keep_default_na=False, na_values=[""])
    src = ad.read_h5ad(smiles_h5ad)
    combos = src.obs["condition"].astype(str).str.contains("+", regex=False).to_numpy()
    # every held-out context (2 pairs x 2 cell lines) is scored by every method, plus one aggregate
    # row each
    methods = ["gim", "gim_nograph", "control", "perturbed_mean", "additive", "ridge", "nearest"]
    per = table[table["scope"] == "context"]
    assert sorted(per["method"].unique()) == sorted(methods)
    assert (
        per.groupby("method").size().eq(4).all() and per["combination"].astype(str).eq("True").all()
    )
    assert (table[table["scope"] == "aggregate"]["n_contexts"] == 4).all()
    report = (run / "report.html").read_text()  # the report shows the held-out comparison, drawn
    section = report[report.index("Held-out evaluation against baselines") :]
    assert "data:image/png;base64," in section and "ridge" in section
    # the model never saw the pairs: annotated.h5ad marks them untrained
    ann = ad.read_h5ad(run / _keys.ANNOTATED)
    assert (ann.obs[_keys.OBS_CONTEXT].astype(str)[combos] == "").all()

    # control baseline by hand: R2 over genes of (held-out mean, training control mean of the line)
    obs = src.obs
    row = per[(per["method"] == "control")].iloc[0]
    X = src.X.toarray()
    sel = (
        (obs["condition"].astype(str) == row["condition"])
        & (obs["cell_line"].astype(str) == row["cell_line"])
    ).to_numpy()
    ctrl = (
        (obs["condition"].astype(str) == "control")
        & (obs["cell_line"].astype(str) == row["cell_line"])
    ).to_numpy()
    y, c = X[sel].mean(0), X[ctrl].mean(0)
    assert row["r2_mean"] == pytest.approx(
        1 - ((y - c) ** 2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-5
    )
    assert row["mse"] == pytest.approx(((y - c) ** 2).mean(), rel=1e-5)
    # additive by hand: control + each drug's own top-dose effect in this cell line
    add = per[(per["method"] == "additive") & (per["context"] == row["context"])].iloc[0]
    p = c.copy()
    for drug in row["condition"].split("+"):
        one = (
            (obs["condition"].astype(str) == drug)
            & (obs["dose"].astype(str) == "1000")
            & (obs["cell_line"].astype(str) == row["cell_line"])
        ).to_numpy()
        p += X[one].mean(0) - c
    assert add["mse"] == pytest.approx(((y - p) ** 2).mean(), rel=1e-5)
    # a model that learned the screen beats "no change" on unseen pairs
    agg = table[table["scope"] == "aggregate"].set_index("method")
    assert agg.loc["gim", "mse"] < agg.loc["control", "mse"]
    js = json.loads((run / _keys.EVAL_JSON).read_text())
    assert js["split"]["combinations"] == ["all"] and set(js["aggregate"]) == set(methods)
    assert js["targets"]["gim"]["train"]["auroc"] > 0.5 and "largest_mean_shift" in js["targets"]
    assert set(js["best_baseline"]) == set(js["metrics"])


def test_evaluate_command_matches_train_holdout(split_run, smiles_h5ad, gim, tmp_path):
    run, _ = split_run
    src = ad.read_h5ad(smiles_h5ad)
    test = tmp_path / "test.h5ad"
    src[
        src.obs["condition"].astype(str).str.contains("+", regex=False).to_numpy()
    ].copy().write_h5ad(test)
    out = tmp_path / "ev"
    rc, stdout, err = gim("evaluate", run, test, "--out", out, "--json", "-q")
    assert rc == 0, err
    a = pd.read_csv(run / _keys.EVAL_CSV).set_index(["context", "method"])
    b = pd.read_csv(out / _keys.EVAL_CSV).set_index(["context", "method"])
    assert np.allclose(
        a["r2_mean"], b.loc[a.index, "r2_mean"], equal_nan=True
    )  # same split, same numbers
    assert np.allclose(a["energy_distance"], b.loc[a.index, "energy_distance"], equal_nan=True)
    assert json.loads(stdout)["n_test_contexts"] == 4
    rc, _, err = gim("evaluate", run, test, "--out", out, "-q")
    assert rc == 3 and "--overwrite" in err
    rc, _, err = gim(
        "evaluate", run, test, "--out", tmp_path / "ev2", "--methods", "gim,magic", "-q"
    )
    assert rc == 3 and "magic" in err


def test_holdout_errors_name_the_value(gim, smiles_h5ad, tmp_path):
    rc, _, err = gim(
        "train", smiles_h5ad, "--out", tmp_path / "r", *TRAIN, "--holdout-conditions", "Unobtainium"
    )
    assert rc == 3 and "Unobtainium" in err
    rc, _, err = gim(
        "train", smiles_h5ad, "--out", tmp_path / "r", *TRAIN, "--holdout-covariate", "cell_line"
    )
    assert rc == 3 and "KEY=VALUE" in err
