"""Standardisation: control mean, pooled within-context sd; the noise sd floor."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

import gimcli.training.standardisation as standardisation
from gimcli.model.causal import LOG_SIGMA_MIN, LinearSEM
from gimcli.training.standardisation import control_standardisation


def test_sd_is_pooled_within_contexts_and_mean_is_the_controls():
    rng = np.random.default_rng(0)
    n, d = 300, 5
    ctx = rng.integers(0, 6, n)
    ctx[:40] = 0  # context 0 = controls
    group = (ctx >= 3).astype(np.int64)
    group[ctx == 0] = np.arange(np.sum(ctx == 0)) % 2  # controls in both groups
    ctx[(ctx == 0) & (group == 1)] = 6  # ... as two control contexts
    is_ctrl = (ctx == 0) | (ctx == 6)
    X = np.where(rng.random((n, d)) < 0.4, 0.0, rng.gamma(2.0, 1.0, (n, d)) + ctx[:, None])
    Xs = sp.csr_matrix(X)
    old = standardisation._VAR_CHUNK_ROWS
    standardisation._VAR_CHUNK_ROWS = 37  # chunks that cut through contexts
    try:
        mean, sd = control_standardisation(Xs, group, is_ctrl, 2, ctx)
    finally:
        standardisation._VAR_CHUNK_ROWS = old
    for g in range(2):
        rows = group == g
        np.testing.assert_allclose(mean[g], X[rows & is_ctrl].mean(0), rtol=1e-5)
        ks = np.unique(ctx[rows])
        ss = sum(((X[rows & (ctx == k)] - X[rows & (ctx == k)].mean(0)) ** 2).sum(0) for k in ks)
        np.testing.assert_allclose(sd[g], np.sqrt(ss / (rows.sum() - len(ks))), rtol=1e-5)
    # without contexts: the control cells' own sd (what format-1 models used)
    _, sd_ctrl = control_standardisation(Xs, group, is_ctrl, 2)
    np.testing.assert_allclose(sd_ctrl[0], X[(group == 0) & is_ctrl].std(0), rtol=1e-5)


def test_noise_sd_has_a_floor():
    """A gene constant in every context would otherwise drive sigma -> 0 and the likelihood to
    +inf."""
    sem = LinearSEM(3)
    with torch.no_grad():
        sem.log_sigma.copy_(torch.tensor([-30.0, 0.0, 1.0]))
    assert torch.allclose(sem.log_sd(), torch.tensor([LOG_SIGMA_MIN, 0.0, 1.0]))
