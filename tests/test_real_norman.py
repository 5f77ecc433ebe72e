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
HELD_PAIRS = [HELD_OUT, "MAPK1+TGFBR2", "MAP2K3+MAP2K6", "KLF1+TGFBR2", "MAP2K3+SLC38A2"]


@pytest.fixture(scope="module")
def norman():
    """One training on the Norman subset with five K562 pairs held out (read only)."""
    adata = read_h5ad(shared_file("perturbseq/perturbench_devel_norman19_mcfaline23.h5ad"))
    held = adata.obs["condition"].isin(HELD_PAIRS).to_numpy()
    run, _ = fit_run(
        adata,
        keys=DataKeys(perturbation_key="condition", covariate_keys=["cell_type"]),
        config=TrainConfig(steps=300, n_top_genes=200, eval_every=50, seed=0),
        device="cpu",
        train_mask=~held,
    )
    return run, adata


@pytest.mark.slow
def test_predicts_a_held_out_combination_from_its_singles(norman):
    run, adata = norman
    held = (adata.obs["condition"] == HELD_OUT).to_numpy()
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


@pytest.mark.slow
def test_predicted_cells_keep_the_sparsity_of_measured_held_out_cells(norman):
    """Issue 10 item 4: per gene, the fraction of predicted cells expressing it matches the
    measured held-out cells (it did not: 243 of 500 genes were 'expressed' in 100% of predicted
    cells). Numbers at the time of writing (300 steps, 201 genes): measured 2.2-2.5% non-zeros,
    predicted 2.3-2.4%; per-gene correlation of the fractions 0.99, mean |difference| 0.004; the
    plain shift max(x0 + delta, 0) gives 4-9% and 6-16 genes in every cell (it gave 50% over 500
    genes in the issue)."""
    run, adata = norman
    req, new = build_requests(run, conditions=HELD_PAIRS, covariates={"cell_type": "k562"})
    pred = predict(run, req, new, seed=0)  # every reference control cell once
    X = adata[:, run.genes].X.toarray()
    g = run.group_index(req)[0]
    refs = run.ref_cells[run.ref_group == g]
    for cond in HELD_PAIRS:
        real = X[(adata.obs["condition"] == cond).to_numpy()]
        cells = pred[(pred.obs["condition"] == cond).to_numpy()].X.toarray()
        assert (cells >= 0).all()
        fr, fp = (real > 0).mean(0), (cells > 0).mean(0)
        delta = cells.mean(0) - refs.mean(0)
        plain = np.maximum(refs + delta, 0)
        print(
            f"{cond}: non-zeros measured {fr.mean():.3f} predicted {fp.mean():.3f} "
            f"(plain shift {(plain > 0).mean():.3f}); per-gene r {np.corrcoef(fr, fp)[0, 1]:.3f}, "
            f"mean |diff| {np.abs(fr - fp).mean():.4f}; genes in 100% of cells: measured "
            f"{(fr == 1).sum()}, predicted {(fp == 1).sum()}, "
            f"plain {((plain > 0).mean(0) == 1).sum()}"
        )
        assert abs(fp.mean() - fr.mean()) < 0.01
        assert np.corrcoef(fr, fp)[0, 1] > 0.95
        assert np.abs(fr - fp).mean() < 0.01
        assert (fp == 1).sum() <= (fr == 1).sum() + 2
        assert (plain > 0).mean() > fp.mean() + 0.01  # what the rule is for
