"""Metrics against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gimcli.evaluation import metrics as M


def test_mean_metrics_by_hand():
    y, p, c = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 1.0])
    assert M.r2_mean(y, p) == pytest.approx(1 - 1 / 2)  # ss_res 1, ss_tot 2
    assert M.mse(y, p) == pytest.approx(1 / 3)
    # delta y = (0,1,2), delta p = (0,1,3); centred: (-1,0,1), (-4/3,-1/3,5/3):
    # r = 3 / sqrt(2 * 14/3)
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
