"""Baselines against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli.data.contexts import build_contexts
from gimcli.data.features import cosine
from gimcli.evaluation import baselines as bl


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
    # additive pair at (100, 100): 1 + 3 and 1 + 4; a held-out dose 30 lies a share
    # (log 31 - log 2) / (log 101 - log 2) = 0.699 of the way from dose 1 to 100 (on log(1 + dose)),
    # so a's effect there is 1 + 0.699 * 2; past the doses, the nearest one's
    assert np.allclose(bl.predict_additive(ref, ["a", "b"], [100.0, 100.0], g), [4, 5, 1])
    u = (np.log(31) - np.log(2)) / (np.log(101) - np.log(2))
    assert np.allclose(bl.predict_additive(ref, ["a"], [30.0], g), [2 + 2 * u, 1, 1])
    assert np.allclose(bl.predict_additive(ref, ["a"], [1000.0], g), [4, 1, 1])
    assert np.allclose(bl.predict_additive(ref, ["b"], [0.5], g), [1, 3, 1])
    assert np.isnan(bl.predict_additive(ref, ["z"], [1.0], g)).all()
    feats = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "a2": np.array([0.9, 0.1])}
    assert np.allclose(bl.predict_nearest(ref, ["a2"], [1.0], g, feats, cosine), [2, 1, 1])
