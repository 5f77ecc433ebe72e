"""How a combination's direct shift departs from the sum of its components' (docs/design.md,
"Read-outs"): a read-out fitted after training, like the feature prior.

In the SEM, shift interventions add, so a combination of measured components is predicted as the
sum of its components' posterior direct shifts. Real and simulated combinations are not exactly
additive: a Hill-type network saturates (a double knock-out moves a shared downstream gene less
than the two singles together), guides compete in a cell. The departure

    r_i = (observed direct shift of training combination i) - sum_c (posterior direct shift of c)

is modelled per covariate group as

    r(combination) = w_mean * mean_r + w_own * sum_c h_c,

mean_r the group's mean departure and h_c the mean departure of the combinations containing
component c beyond mean_r, shrunk by one pseudo-combination. The weights in [0, 1] are the
bounded least-squares fit of each training combination's departure from its leave-one-out
estimates, so that a screen whose departures are noise gets w = 0 (the additive SEM) and one with
a systematic interaction gets it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SHRINK = 1.0  # pseudo-combinations that pull a component's own departure towards the mean
_MIN_COMBINATIONS = 3  # per group, for a leave-one-out fit of the weights


@dataclass
class Interaction:
    """Fitted departures from additivity (see the module docstring), per covariate group."""

    mean: dict[int, np.ndarray] = field(default_factory=dict)  # group -> (d,) mean departure
    own: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)  # (component, group)
    weight_mean: dict[int, float] = field(default_factory=dict)
    weight_own: dict[int, float] = field(default_factory=dict)
    n_combinations: dict[int, int] = field(default_factory=dict)

    def predict(self, components: list[str], group: int) -> np.ndarray | None:
        """(d,) the departure of a combination in `group` from the sum of its components (None
        where the group has none fitted)."""
        if group not in self.mean:
            return None
        out = self.weight_mean[group] * self.mean[group]
        for c in components:
            h = self.own.get((c, group))
            if h is not None:
                out = out + self.weight_own[group] * h
        return out

    def summary(self) -> dict:
        """Per group: the number of training combinations and the two weights (a record for the
        outputs)."""
        return {
            int(g): {
                "n_combinations": self.n_combinations[g],
                "weight_mean": round(self.weight_mean[g], 4),
                "weight_own": round(self.weight_own[g], 4),
            }
            for g in self.mean
        }


def fit_interaction(R: np.ndarray, components: list[list[str]], groups: np.ndarray) -> Interaction:
    """Fit from the departures R (n, d) of n training combinations, their component names and
    covariate groups. Groups with fewer than 3 combinations get no departure."""
    R = np.asarray(R, np.float64)
    groups = np.asarray(groups)
    fit = Interaction()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < _MIN_COMBINATIONS:
            continue
        Rg, comps = R[idx], [components[i] for i in idx]
        n = len(idx)
        S = Rg.sum(0)
        Sc: dict[str, np.ndarray] = {}
        nc: dict[str, int] = {}
        for r, cl in zip(Rg, comps, strict=True):
            for c in set(cl):
                Sc[c] = Sc.get(c, 0.0) + r
                nc[c] = nc.get(c, 0) + 1
        # leave-one-out estimates of each combination's departure: the mean of the others, and
        # its components' own departures from the others
        M = np.empty_like(Rg)
        H = np.zeros_like(Rg)
        for i, (r, cl) in enumerate(zip(Rg, comps, strict=True)):
            M[i] = (S - r) / (n - 1)
            for c in set(cl):
                H[i] += _own(Sc[c] - r, nc[c] - 1, M[i])
        w_mean, w_own = _bounded_lsq(M, H, Rg)
        mean = S / n
        g = int(g)
        fit.mean[g] = mean.astype(np.float32)
        fit.weight_mean[g], fit.weight_own[g], fit.n_combinations[g] = w_mean, w_own, n
        for c in Sc:
            fit.own[(c, g)] = _own(Sc[c], nc[c], mean).astype(np.float32)
    return fit


def _own(S: np.ndarray, n: int, mean: np.ndarray) -> np.ndarray:
    """A component's departure beyond the group mean, from the sum S of its n combinations'."""
    return (S - n * mean) / (n + _SHRINK)


def _bounded_lsq(M: np.ndarray, H: np.ndarray, Y: np.ndarray) -> tuple[float, float]:
    """argmin over a, b in [0, 1] of ||Y - a M - b H||^2."""
    from scipy.optimize import lsq_linear

    x = lsq_linear(np.c_[M.ravel(), H.ravel()], Y.ravel(), bounds=(0, 1), method="bvls").x
    return float(x[0]), float(x[1])
