"""The sparsity rule (gimcli/sparsity.py): predicted cells are non-negative, keep the data's zeros
unless the predicted rise is material, and have exactly the predicted mean."""

from __future__ import annotations

import numpy as np
import pytest

from gimcli.sparsity import Reference, sample_rows


def _sparse_cells(n=200, d=6, seed=0):
    """Log-normalised-like cells: gene j detected in a share p_j of cells, at log1p(counts)."""
    rng = np.random.default_rng(seed)
    p = np.array([0.02, 0.1, 0.3, 0.6, 0.95, 0.0])[:d]
    on = rng.random((n, d)) < p
    return np.where(on, np.log1p(rng.poisson(3, (n, d)) + 1.0), 0.0).astype(np.float32)


@pytest.mark.parametrize("scale", [-0.8, -0.2, -0.01, 0.0, 0.001, 0.05, 0.5, 2.0])
def test_mean_is_exact_and_cells_non_negative(scale):
    X = _sparse_cells()
    ref = Reference.of(X)
    delta = scale * np.maximum(X.mean(0), 0.2)
    cells = ref.cells_for(np.arange(ref.n), delta)
    assert (cells >= 0).all()
    got, want = cells.mean(0, dtype=np.float64), np.maximum(X.mean(0) + delta, 0)
    np.testing.assert_allclose(got[:5], want[:5], atol=2e-6)
    # a gene no reference cell expresses rises only by whole cells at its one-count level
    assert -1e-6 <= want[5] - got[5] < ref.low[5] / ref.n


def test_zeros_stay_zeros_unless_the_rise_is_material():
    X = _sparse_cells()
    ref = Reference.of(X)
    zeros = X == 0
    down = ref.cells_for(np.arange(ref.n), -0.1 * np.ones(X.shape[1]))
    assert (down[zeros] == 0).all()  # a fall never switches a cell on
    assert (down == 0).sum() > zeros.sum()  # ... and the lowest expressing cells drop out
    tiny = ref.cells_for(np.arange(ref.n), 1e-4 * np.ones(X.shape[1]))
    assert (tiny[zeros] == 0).all()  # less than one cell's worth: only levels move
    big = ref.cells_for(np.arange(ref.n), np.full(X.shape[1], 1.0))
    on = (big > 0).mean(0)
    assert (on[:5] > (X > 0).mean(0)[:5]).all()  # a material rise raises detection
    assert on[5] > 0  # even of a gene never detected in the reference cells
    # switched-on cells take a data-like level (>= the gene's lowest expressing value), not ~0
    new = (big > 0) & zeros
    assert (big[new] >= np.broadcast_to(ref.low, big.shape)[new] - 1e-6).all()


def test_deepest_cells_switch_on_first():
    X = _sparse_cells(seed=3)
    ref = Reference.of(X)
    cells = ref.cells_for(np.arange(ref.n), np.array([0.05, 0, 0, 0, 0, 0]))
    new = (cells[:, 0] > 0) & (X[:, 0] == 0)
    depth = X.sum(1)
    assert new.any() and depth[new].min() >= np.median(depth[(X[:, 0] == 0) & ~new])


def test_continuous_data_get_the_plain_shift():
    X = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    ref = Reference.of(X)
    delta = np.array([-1.0, 0.5, 0.0, 2.0])
    np.testing.assert_allclose(
        ref.cells_for(np.arange(50), delta, log_space=False), X + delta, atol=1e-6
    )


def test_sample_rows_uses_every_reference_cell_evenly():
    rng = np.random.default_rng(0)
    rows = sample_rows(10, 25, rng)
    counts = np.bincount(rows, minlength=10)
    assert len(rows) == 25 and counts.min() >= 2 and counts.max() <= 3
    assert sorted(sample_rows(10, 10, rng)) == list(range(10))
