"""Real data: the Norman 2019 / McFaline-Figueroa Perturb-seq subset from ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest

from gimcli.config import DataKeys, TrainConfig
from gimcli.data.io import read_h5ad
from gimcli.prediction import build_requests, predict
from gimcli.training.fitting import fit_run

from .conftest import shared_file

HELD_OUT = "KLF1+MAP2K6"


@pytest.mark.slow
def test_predicts_a_held_out_combination_from_its_singles():
    adata = read_h5ad(shared_file("perturbseq/perturbench_devel_norman19_mcfaline23.h5ad"))
    held = (adata.obs["condition"] == HELD_OUT).to_numpy()
    run, hist = fit_run(
        adata,
        keys=DataKeys(perturbation_key="condition", covariate_keys=["cell_type"]),
        config=TrainConfig(steps=300, n_top_genes=200, eval_every=50, seed=0),
        device="cpu",
        train_mask=~held,
    )
    assert run.meta.preprocess.is_counts is False  # log-normalised input detected
    assert HELD_OUT not in set(run.contexts["condition"])
    req, new = build_requests(run, conditions=[HELD_OUT], covariates={"cell_type": "k562"})
    pred = predict(run, req, new, n_cells=50, seed=0)
    assert pred.n_obs == 50 and pred.var_names.tolist() == run.genes
    X = adata[:, run.genes].X.toarray()
    k562 = (adata.obs["cell_type"] == "k562").to_numpy()
    ctrl = X[k562 & (adata.obs["condition"] == "control").to_numpy()].mean(0)
    truth = X[held].mean(0) - ctrl
    pred_delta = pred.layers["gim_mean"][0] - ctrl
    r = np.corrcoef(truth, pred_delta)[0, 1]
    print(f"held-out {HELD_OUT}: Pearson of delta vs control {r:.3f}")
    assert r > 0.5
