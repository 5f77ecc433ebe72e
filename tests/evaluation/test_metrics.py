"""Metrics, baselines and splits against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from gimcli.data.contexts import build_contexts
from gimcli.errors import InputError
from gimcli.evaluation import baselines as bl
from gimcli.evaluation import metrics as M
from gimcli.evaluation.splits import Holdout, train_mask


def test_mean_metrics_by_hand():
    y, p, c = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0])
    assert M.r2_mean(y, p) == pytest.approx(1 - 1 / 2)  # ss_res 1, ss_tot 2
    assert M.mse(y, p) == pytest.approx(1 / 3)
    # delta y = (0,1,2), delta p = (0,1,3); centred: (-1,0,1), (-4/3,-1/3,5/3): r = 3 / sqrt(2 * 14/3)
    assert M.pearson_delta(y, p, c) == pytest.approx(3 / math.sqrt(2 * 14 / 3))
    assert math.isnan(M.pearson_delta(y, c, c))  # no predicted change: undefined, not 0
    # top-2 DE genes are genes 2 and 1: r2 on (2,3) vs (2,4) = 1 - 1/0.5
    assert list(M.top_de_genes(y, c, n=2)) == [2, 1]
    assert M.r2_top_de(y, p, c, n=2) == pytest.approx(1 - 1 / 0.5)


def test_distribution_metrics_by_hand():
    assert M.energy_distance([[0.0]], [[3.0]]) == pytest.approx(6.0)
    # X = {0, 2}, Y = {1}: 2 * 1 - (0 + 2 + 2 + 0) / 4 - 0 = 1
    assert M.energy_distance([[0.0], [2.0]], [[1.0]]) == pytest.approx(1.0)
    X = np.random.default_rng(0).normal(size=(50, 3))
    assert M.energy_distance(X, X) == pytest.approx(0.0, abs=1e-9)
    k = math.exp(-0.5)  # |0 - 1|^2 / (2 h^2) with h = 1
    assert M.mmd_rbf([[0.0]], [[1.0]], [1.0]) == pytest.approx(2 - 2 * k)
    k2 = math.exp(-1 / 8)  # h = 2
    assert M.mmd_rbf([[0.0]], [[1.0]], [1.0, 2.0]) == pytest.approx(
        ((2 - 2 * k) + (2 - 2 * k2)) / 2
    )
    assert len(M.subsample(np.zeros((1000, 2)), max_cells=10, seed=1)) == 10


def test_pca_space_projects_onto_training_variance():
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=500) * 5, rng.normal(size=500) * 0.1, np.zeros(500)]
    space = M.PCASpace(X, n_comps=1)
    z = space.transform(np.array([[1.0, 0.0, 0.0]]) + space.center)
    assert abs(z[0, 0]) == pytest.approx(1.0, abs=1e-2)  # first axis is the high-variance gene


def _screen():
    """Two drugs at doses 1 and 100 plus their pair; gene values chosen so effects are exact."""
    rows, X = [], []
    c = np.array([1.0, 1.0, 1.0])
    eff = {
        ("a", 1.0): [1, 0, 0],
        ("a", 100.0): [3, 0, 0],
        ("b", 1.0): [0, 2, 0],
        ("b", 100.0): [0, 4, 0],
    }
    for _ in range(4):
        rows.append(("control", "0"))
        X.append(c)
    for (drug, dose), e in eff.items():
        for _ in range(4):
            rows.append((drug, f"{dose:g}"))
            X.append(c + np.array(e, float))
    obs = pd.DataFrame(rows, columns=["condition", "dose"])
    return obs, sp.csr_matrix(np.array(X))


def test_baselines_by_hand():
    obs, X = _screen()
    ctx = build_contexts(obs, dose_key="dose", min_cells=1)
    ref = bl.TrainReference.build(X, ctx.table, ctx.cell_context, [])
    g = ()
    assert np.allclose(bl.predict_control(ref, g), [1, 1, 1])
    assert np.allclose(
        bl.predict_perturbed_mean(ref, g), [1 + 1, 1 + 1.5, 1]
    )  # mean of the 4 drug-dose means
    # additive pair at (100, 100): 1 + 3 and 1 + 4; a held-out dose 30 is nearer 100 than 1 on log scale
    assert np.allclose(bl.predict_additive(ref, ["a", "b"], [100.0, 100.0], g), [4, 5, 1])
    assert np.allclose(bl.predict_additive(ref, ["a"], [30.0], g), [4, 1, 1])
    assert np.isnan(bl.predict_additive(ref, ["z"], [1.0], g)).all()
    feats = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "a2": np.array([0.9, 0.1])}
    from gimcli.data.features import cosine

    assert np.allclose(bl.predict_nearest(ref, ["a2"], [1.0], g, feats, cosine), [2, 1, 1])


def test_splits():
    obs = pd.DataFrame(
        {
            "condition": ["control"] * 2 + ["a", "a", "b", "a+b"],
            "dose": ["0", "0", "1", "10", "10", "10+10"],
            "line": ["x", "y", "x", "y", "x", "y"],
            "split": ["train"] * 3 + ["test"] * 3,
        }
    )
    kw = {"dose_key": "dose"}
    assert train_mask(obs, Holdout(conditions=["b"]), **kw).tolist() == [1, 1, 1, 1, 0, 1]
    assert train_mask(obs, Holdout(doses=[10.0]), **kw).tolist() == [1, 1, 1, 0, 0, 0]
    assert train_mask(obs, Holdout(combinations=["all"]), **kw).tolist() == [1, 1, 1, 1, 1, 0]
    assert train_mask(obs, Holdout(covariate=("line", "y")), **kw).tolist() == [
        1,
        1,
        1,
        0,
        1,
        0,
    ]  # controls stay
    assert train_mask(obs, Holdout(doses=[10.0], covariate=("line", "x")), **kw).tolist() == [
        1,
        1,
        1,
        1,
        0,
        1,
    ]
    assert train_mask(obs, Holdout(split_key="split"), **kw).tolist() == [1, 1, 1, 0, 0, 0]
    with pytest.raises(InputError, match="'nope'"):
        train_mask(obs, Holdout(conditions=["nope"]), **kw)
    with pytest.raises(InputError, match="every perturbed cell"):
        train_mask(obs, Holdout(doses=[1.0, 10.0]), **kw)
