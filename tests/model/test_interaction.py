"""The departure of combinations from additivity (gimcli.model.interaction): its weights must
recover a systematic departure and refuse noise."""

from __future__ import annotations

import numpy as np

from gimcli.model.interaction import fit_interaction


def _pairs(n_comp: int, n_pairs: int, rng) -> list[list[str]]:
    seen, out = set(), []
    while len(out) < n_pairs:
        a, b = sorted(rng.choice(n_comp, 2, replace=False))
        if (a, b) not in seen:
            seen.add((a, b))
            out.append([f"k{a}", f"k{b}"])
    return out


def test_a_shared_departure_is_recovered_and_noise_gets_no_weight():
    rng = np.random.default_rng(0)
    d, comps = 30, _pairs(12, 30, rng)
    shared = np.where(np.arange(d) < 5, -1.0, 0.0)  # saturation on 5 downstream genes
    fit = fit_interaction(shared + 0.2 * rng.normal(size=(30, d)), comps, np.zeros(30, int))
    assert fit.weight_mean[0] > 0.9 and fit.weight_own[0] < 0.3, fit.summary()
    got = fit.predict(["k0", "k99"], 0)  # k99: no training combination, only the mean
    assert np.abs(got - shared).max() < 0.3
    noise = fit_interaction(0.2 * rng.normal(size=(30, d)), comps, np.zeros(30, int))
    assert noise.weight_mean[0] < 0.3 and noise.weight_own[0] < 0.3, noise.summary()
    assert fit.predict(["k0", "k1"], 1) is None  # a group without combinations


def test_a_components_own_departure_is_recovered():
    """Guides that lose half their effect in a pair: the departure is the component's own."""
    rng = np.random.default_rng(1)
    d, n = 20, 40
    comps = _pairs(10, n, rng)
    h = {f"k{i}": (rng.normal(size=d) if i < 5 else np.zeros(d)) for i in range(10)}
    R = np.stack([h[a] + h[b] for a, b in comps]) + 0.1 * rng.normal(size=(n, d))
    fit = fit_interaction(R, comps, np.zeros(n, int))
    assert fit.weight_own[0] > 0.5, fit.summary()
    truth = h["k0"] + h["k1"]
    err = np.linalg.norm(fit.predict(["k0", "k1"], 0) - truth) / np.linalg.norm(truth)
    assert err < 0.4, err
    assert fit_interaction(R[:2], comps[:2], np.zeros(2, int)).mean == {}  # too few to fit
