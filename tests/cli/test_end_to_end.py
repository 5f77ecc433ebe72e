"""train -> predict -> explain through the real entry point, on SMILES drugs with pairs and cell
lines."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from gimcli import _keys


@pytest.fixture
def trained(gim, smiles_h5ad, tmp_path):
    run = tmp_path / "run"
    rc, out, err = gim(
        "train",
        smiles_h5ad,
        "--out",
        run,
        "--dose-key",
        "dose",
        "--covariate-keys",
        "cell_line",
        "--smiles-key",
        "smiles",
        "--steps",
        "150",
        "--json",
        "-q",
    )
    assert rc == 0, err
    return run, json.loads(out)


def test_train_writes_documented_outputs(trained, smiles_h5ad):
    run, summary = trained
    assert summary["status"] == "ok" and summary["n_genes"] == 12
    for f in ("model.pt", "model.json", "metrics.csv", "annotated.h5ad", "gim.log", "report.html"):
        assert (run / f).exists(), f
    report = (run / "report.html").read_text()
    assert (
        report.count("data:image/png;base64,") >= 2
    )  # learning curve + target heatmap, self-contained
    assert "Strongest learned causal edges" in report
    meta = json.loads((run / "model.json").read_text())
    assert meta["features"]["kind"] == "smiles" and meta["features"]["chirality"] is True
    assert meta["seed"] == 0 and "torch" in meta["versions"] and len(meta["input"]["sha256"]) == 64
    weights = torch.load(run / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"step", "loss", "val_nll", "phase"} <= set(metrics.columns)
    ann = ad.read_h5ad(run / "annotated.h5ad")
    src = ad.read_h5ad(smiles_h5ad)
    assert ann.n_obs == src.n_obs and np.allclose(
        ann.X.toarray(), src.X.toarray()
    )  # input untouched
    post = ann.varm[_keys.VARM_POSTERIOR]
    n_ctx = len(meta["contexts"])
    assert (
        post.shape == (12, n_ctx)
        and np.nanmin(post.to_numpy()) >= 0
        and np.nanmax(post.to_numpy()) <= 1
    )
    assert (ann.obs[_keys.OBS_CONTEXT] != "").all()
    assert set(ann.uns["gim"]) >= {"params", "versions", "seed", "contexts"}


def test_predict_new_drugs_and_combination(trained, gim, tmp_path):
    run, _ = trained
    csv = tmp_path / "new.csv"
    pd.DataFrame(
        {
            "name": ["Olaparib", "Aspirin-like"],
            "smiles": [
                "C1CC1C(=O)N2CCN(CC2)C(=O)C3=C(C=CC(=C3)CC4=NNC(=O)C5=CC=CC=C54)F",
                "CC(=O)OC1=CC=CC=C1C(=O)OC",
            ],
        }
    ).to_csv(csv, index=False)
    out = tmp_path / "pred.h5ad"
    rc, stdout, err = gim(
        "predict",
        run,
        "--drug-features",
        csv,
        "--doses",
        "10,1000",
        "--n-cells",
        "7",
        "--out",
        out,
        "--json",
        "-q",
    )
    assert rc == 0, err
    pred = ad.read_h5ad(out)
    src = pred.obs[_keys.OBS_SOURCE]
    # drugs x doses x cell lines x cells, and (--with-controls by default) the 120 training
    # control cells of each cell line, labelled 'control'
    assert (src == "predicted").sum() == 2 * 2 * 2 * 7
    ctrl = pred.obs[src == "training_control"]
    assert len(ctrl) == 2 * 120 and set(ctrl["condition"]) == {"control"}
    assert ctrl["cell_line"].value_counts().to_dict() == {"line0": 120, "line1": 120}
    assert {_keys.LAYER_MEAN, _keys.LAYER_TARGET_PROB} <= set(pred.layers)
    assert {"condition", "dose", "cell_line", _keys.OBS_SIMILARITY} <= set(pred.obs.columns)
    assert pred.obsm["X_pca"].shape[0] == pred.n_obs and "PCs" in pred.varm
    conds = pred.uns["gim"]["conditions"]
    assert len(conds) == 8 and conds["similarity"].between(0, 1).all()
    # an aspirin analogue is closer to the training aspirin than olaparib is to anything
    asp = conds[conds["condition"] == "Aspirin-like"]
    assert (asp["nearest_training"] == "Aspirin").all()
    assert json.loads(stdout)["n_cells"] == 56 + 240
    # the new drugs' feature prior records its fit, its cross-validated weight and skill
    fp = pred.uns["gim"]["feature_prior"]
    assert fp["n_drugs"] == len(json.loads((run / "model.json").read_text())["components"])
    assert 0 <= fp["cv_weight"] <= 1 and fp["cv_skill"] <= 1 and fp["cv_folds"] == 5
    # 6 training drugs do not teach what SMILES do (measured: weight 0.33, skill 0.03): warned
    assert fp["cv_weight"] < 0.5 and "predicted their effects poorly" in err

    combo_out = tmp_path / "combo.h5ad"
    src_drugs = json.loads((run / "model.json").read_text())["components"]
    combo = f"{src_drugs[0]}+{src_drugs[-1]}"
    rc, _, err = gim(
        "predict",
        run,
        "--conditions",
        combo,
        "--doses",
        "1000",
        "--covariate",
        "cell_line=line1",
        "--no-controls",
        "--out",
        combo_out,
        "-q",
    )
    assert rc == 0, err
    c = ad.read_h5ad(combo_out)
    assert (
        c.n_obs == 120  # every training control cell of line1 once (--n-cells 0, the default)
        and set(c.obs["condition"]) == {combo}
        and set(c.obs["cell_line"]) == {"line1"}
    )
    # one definition of a prediction: the mean layer is the mean of the written cells
    np.testing.assert_allclose(c.X.toarray().mean(0), c.layers[_keys.LAYER_MEAN][0], atol=1e-6)
    # refuses to overwrite
    rc, _, err = gim(
        "predict", run, "--conditions", combo, "--doses", "1000", "--out", combo_out, "-q"
    )
    assert rc == 3 and "--overwrite" in err


def test_explain_targets_and_graph(trained, gim, tmp_path):
    run, _ = trained
    rc, out, err = gim(
        "explain", run, "--top-targets", "3", "--n-downstream", "2", "--format", "csv",
        "--min-prob", "0",
    )  # fmt: skip
    assert rc == 0, err
    df = pd.read_csv(pd.io.common.StringIO(out))
    assert list(df.columns[:3]) == ["condition", "dose", "cell_line"]
    assert {"gene", "prob", "shift", "rank", "kind"} <= set(df.columns)
    per = df[df["kind"] == "target"].groupby(["condition", "dose", "cell_line"]).size()
    assert (per == 3).all()
    assert df["prob"].between(0, 1).all()

    rc, out, _ = gim("explain", run, "--graph", "--top-edges", "7", "--format", "json")
    edges = json.loads(out)
    assert rc == 0 and len(edges) == 7 and set(edges[0]) == {"source", "target", "weight"}
    w = [abs(e["weight"]) for e in edges]
    assert w == sorted(w, reverse=True)

    target_file = tmp_path / "t.json"
    rc, _, _ = gim(
        "explain",
        run,
        "--conditions",
        "Aspirin",
        "--covariate",
        "cell_line=line0",
        "--json",
        "--out",
        target_file,
    )
    rows = json.loads(target_file.read_text())
    assert (
        rc == 0
        and {r["condition"] for r in rows} == {"Aspirin"}
        and {r["cell_line"] for r in rows} == {"line0"}
    )

    rc, out, _ = gim("explain", run, "--top-targets", "2")
    assert rc == 0 and "target" in out  # human table

    png = tmp_path / "targets.png"
    rc, _, err = gim(
        "explain",
        run,
        "--conditions",
        "Aspirin,Caffeine",
        "--covariate",
        "cell_line=line0",
        "--plot",
        png,
        "--format",
        "csv",
    )
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_counts_input_with_numeric_features(gim, counts_h5ad, tmp_path):
    run = tmp_path / "run"
    rc, out, err = gim(
        "train",
        counts_h5ad,
        "--out",
        run,
        "--dose-key",
        "dose",
        "--feature-keys",
        "f0,f1,f2,f3",
        "--steps",
        "60",
        "--json",
        "-q",
    )
    assert rc == 0, err
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocess"]["is_counts"] and meta["preprocess"]["log1p"]
    csv = tmp_path / "f.csv"
    pd.DataFrame(
        {"name": ["x1"], "f0": [0.1], "f1": [1.0], "f2": [-0.5], "f3": [0.0], "dose": [100]}
    ).to_csv(csv, index=False)
    rc, _, err = gim("predict", run, "--features", csv, "--out", tmp_path / "p.h5ad", "-q")
    assert rc == 0, err


def test_simulate_writes_truth(gim, tmp_path):
    out = tmp_path / "s.h5ad"
    rc, stdout, err = gim(
        "simulate", "--out", out, "--n-genes", "6", "--n-drugs", "3", "--graph", "dag", "--json"
    )
    assert rc == 0, err
    a = ad.read_h5ad(out)
    B = np.asarray(a.uns["gim_truth"]["B"])
    assert B.shape == (6, 6) and np.all(np.diag(B) == 0)
    # a DAG: nilpotent adjacency
    assert np.allclose(np.linalg.matrix_power(np.abs(B) > 0, 6).astype(float), 0)
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert len(truth["drug_targets"]) == 3 * 2


def test_predicted_cells_are_control_cells_moved_by_the_propagated_effect(trained):
    """noise='controls': the cells are the stored control cells moved by the SEM's change
    sd * A^{-1} u under the sparsity rule, so their mean is exactly max(control mean + change, 0)
    and a zero stays zero unless the gene is predicted to rise."""
    from gimcli.gimrun import GimRun
    from gimcli.prediction import build_requests, predict

    run_dir, _ = trained
    run = GimRun.load(run_dir)
    assert run.ref_cells is not None and run.ref_cells.shape[1] == len(run.genes)
    req, new = build_requests(
        run,
        conditions=[run.meta.components[0]],
        doses=[1000.0],
        covariates={"cell_line": "line0"},
    )
    pred = predict(run, req, new, seed=1)  # every reference cell once
    u = torch.from_numpy(run.interventions(req, new).direct())
    g = run.group_index(req)[0]
    shift = run.module.sem.propagate(u).detach().numpy()[0] * run.std_sd[g]
    cells = pred.X.toarray()
    refs = run.ref_cells[run.ref_group == g]
    assert cells.shape == refs.shape and (cells >= 0).all()
    np.testing.assert_allclose(
        cells.mean(0), np.maximum(refs.mean(0) + shift, 0), rtol=1e-4, atol=1e-5
    )
    falling = shift < 0
    assert ((refs[:, falling] == 0) <= (cells[:, falling] == 0)).all()  # zeros stay zeros
    gauss = predict(run, req, new, n_cells=20, seed=1, noise="gaussian")
    assert gauss.n_obs == 20 and not np.allclose(gauss.X.toarray(), cells[:20])
    assert pred.uns["gim"]["params"]["noise"] == "controls"
