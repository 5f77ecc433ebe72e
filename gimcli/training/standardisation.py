"""Standardisation of genes per covariate group: control mean, pooled within-context sd.

Cells enter the SEM as (x - mean_g) / sd_g for their covariate group g (docs/design.md,
"Standardisation"); the tables are stored in model.pt (std_mean, std_sd) and undone in every
prediction.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def group_stats(X: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of selected rows, without densifying the matrix."""
    sub = X[rows]
    mean = np.asarray(sub.mean(0)).ravel()
    sq = np.asarray(sub.multiply(sub).mean(0)).ravel()
    return mean, np.maximum(sq - mean * mean, 0.0)


def control_standardisation(
    X: sp.csr_matrix,
    cell_group: np.ndarray,
    is_control_cell: np.ndarray,
    n_groups: int,
    cell_context: np.ndarray | None = None,
):
    """Per covariate group: the control cells' mean, and the sd of cells around their own context's
    mean, pooled over every context of the group (controls only without `cell_context`).

    The pooled sd is the SEM's noise scale and is estimated from all cells: the control cells alone
    (60 in a Datlinger state) give near-zero sds for sparse genes, which inflated the residuals of
    every perturbed cell ~6-fold. Genes (nearly) constant get a floor on sd."""
    means, sds = [], []
    for g in range(n_groups):
        m, v = group_stats(X, np.flatnonzero(is_control_cell & (cell_group == g)))
        if cell_context is not None:
            v = pooled_within_variance(
                X, cell_context, np.flatnonzero((cell_group == g) & (cell_context >= 0))
            )
        sd = np.sqrt(v)
        floor = max(0.1 * float(np.median(sd)), 1e-2)
        means.append(m)
        sds.append(np.maximum(sd, floor))
    return np.stack(means).astype(np.float32), np.stack(sds).astype(np.float32)


# Rows per chunk in pooled_within_variance: bounds the temporary copies of X's rows.
_VAR_CHUNK_ROWS = 20_000


def pooled_within_variance(
    X: sp.csr_matrix, cell_context: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """sum_k sum_i (x_i - mean_k)^2 / (N - K) over the contexts k of `rows`, without densifying."""
    ctx, inv = np.unique(cell_context[rows], return_inverse=True)
    n = np.bincount(inv, minlength=len(ctx)).astype(np.float64)
    s1 = np.zeros((len(ctx), X.shape[1]))
    s2 = np.zeros((len(ctx), X.shape[1]))
    for lo in range(0, len(rows), _VAR_CHUNK_ROWS):
        sub = X[rows[lo : lo + _VAR_CHUNK_ROWS]]
        # same dtype as X (no float64 copy); chunk sums are accumulated in float64
        ind = sp.csr_matrix(
            (
                np.ones(sub.shape[0], sub.dtype),
                (inv[lo : lo + _VAR_CHUNK_ROWS], np.arange(sub.shape[0])),
            ),
            shape=(len(ctx), sub.shape[0]),
        )
        s1 += (ind @ sub).toarray()
        s2 += (ind @ sub.multiply(sub)).toarray()
    within = np.maximum(s2 - s1 * s1 / n[:, None], 0.0).sum(0)
    return within / max(len(rows) - len(ctx), 1)


def standardisation_from_sums(
    s1: np.ndarray,
    s2: np.ndarray,
    n: np.ndarray,
    ctx_group: np.ndarray,
    is_control_ctx: np.ndarray,
    n_groups: int,
):
    """`control_standardisation` from sums over cells read in chunks (or by several processes):
    per context the sum of each gene (s1, K x d), of its square (s2) and the cell count (n).
    The same formulas: control mean, pooled within-context sd with the same floor."""
    means, sds = [], []
    for g in range(n_groups):
        ctrl = np.flatnonzero(is_control_ctx & (ctx_group == g) & (n > 0))
        m = s1[ctrl].sum(0) / max(n[ctrl].sum(), 1)
        ks = np.flatnonzero((ctx_group == g) & (n > 0))
        within = np.maximum(s2[ks] - s1[ks] ** 2 / n[ks, None], 0.0).sum(0)
        sd = np.sqrt(within / max(n[ks].sum() - len(ks), 1))
        floor = max(0.1 * float(np.median(sd)), 1e-2)
        means.append(m)
        sds.append(np.maximum(sd, floor))
    return np.stack(means).astype(np.float32), np.stack(sds).astype(np.float32)
