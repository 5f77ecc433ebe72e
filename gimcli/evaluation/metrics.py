"""Held-out metrics, each defined once here with its formula.

Notation for one held-out context (one condition at one dose in one covariate group):
`y` = true mean expression over genes (log-normalised, modelled genes), `p` = predicted mean,
`c` = mean of the training control cells of the same covariate group, `c_p` = mean of the control
cells the prediction was made from (the reference controls a prediction file writes beside its
cells; cell-eval takes each file's change against its own controls), `X` = true cells,
`Y` = predicted cells, both projected on a PCA fitted on training cells.
Target recovery (AUROC/AUPRC) lives in gimcli.evaluation.truth and is reused, not redefined.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import r2_score

# Genes per context for the "top DE" R² (the usual choice in perturbation benchmarks).
TOP_DE = 20
# Cells per distribution in energy distance / MMD: pairwise costs are quadratic in this.
MAX_CELLS = 300
# RBF bandwidths as multiples of the median pairwise distance of training cells (scale-free).
MMD_BANDWIDTH_FACTORS = (0.5, 1.0, 2.0, 4.0)

METRICS = ("r2_mean", "r2_top20_de", "pearson_delta", "mse", "energy_distance", "mmd")
# Direction of each metric: True when larger is better (used to pick the best baseline).
HIGHER_IS_BETTER = {
    "r2_mean": True,
    "r2_top20_de": True,
    "pearson_delta": True,
    "mse": False,
    "energy_distance": False,
    "mmd": False,
}
DEFINITIONS = {
    "r2_mean": "sklearn r2_score(y, p) over genes: "
    "1 - sum_j (y_j - p_j)^2 / sum_j (y_j - mean(y))^2",
    "r2_top20_de": "r2_score(y[D], p[D]), D = the 20 genes with largest |y_j - c_j|",
    "pearson_delta": "Pearson correlation over genes of y - c and p - c_p, c_p the mean of the "
    "control cells the prediction was made from (as cell-eval computes it; NaN when p - c_p is "
    "constant)",
    "mse": "mean over genes of (y_j - p_j)^2",
    "energy_distance": "2 E|X-Y| - E|X-X'| - E|Y-Y'| (Euclidean, V-statistic) "
    "in training-cell PCA space, "
    f"at most {MAX_CELLS} cells per side subsampled with a fixed seed",
    "mmd": "mean over bandwidths h of MMD^2 = E k(X,X') + E k(Y,Y') - 2 E k(X,Y), "
    "k = exp(-|x-y|^2 / (2 h^2)), "
    f"h = {MMD_BANDWIDTH_FACTORS} x median pairwise distance of training cells (V-statistic)",
}


def r2_mean(y: np.ndarray, p: np.ndarray) -> float:
    """R² of the predicted mean over genes: `r2_score(y, p)`."""
    return float(r2_score(np.asarray(y, float), np.asarray(p, float)))


def top_de_genes(y: np.ndarray, c: np.ndarray, *, n: int = TOP_DE) -> np.ndarray:
    """Indices of the `n` genes with largest |y - c| (true change against control)."""
    delta = np.abs(np.asarray(y, float) - np.asarray(c, float))
    return np.argsort(-delta, kind="stable")[: min(n, delta.size)]


def r2_top_de(y: np.ndarray, p: np.ndarray, c: np.ndarray, *, n: int = TOP_DE) -> float:
    """R² on the condition's top-`n` DE genes: `r2_score(y[D], p[D])`."""
    idx = top_de_genes(y, c, n=n)
    return r2_mean(np.asarray(y)[idx], np.asarray(p)[idx])


def pearson_delta(
    y: np.ndarray, p: np.ndarray, c: np.ndarray, c_pred: np.ndarray | None = None
) -> float:
    """Pearson correlation of the true change (against `c`) and the predicted change (against
    `c_pred`, default `c`), over genes."""
    a = np.asarray(y, float) - np.asarray(c, float)
    b = np.asarray(p, float) - np.asarray(c if c_pred is None else c_pred, float)
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else float("nan")


def mse(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the mean over genes."""
    return float(np.mean((np.asarray(y, float) - np.asarray(p, float)) ** 2))


def subsample(X: np.ndarray, *, max_cells: int = MAX_CELLS, seed: int = 0) -> np.ndarray:
    """At most `max_cells` rows, chosen without replacement with a fixed seed."""
    X = np.asarray(X, float)
    if len(X) <= max_cells:
        return X
    idx = np.random.default_rng(seed).choice(len(X), max_cells, replace=False)
    return X[np.sort(idx)]


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _pairs(X, Y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    return _sqdist(X, X), _sqdist(Y, Y), _sqdist(X, Y)


def energy_distance(X: np.ndarray, Y: np.ndarray, *, _d=None) -> float:
    """Energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| with Euclidean norms (V-statistic: the
    means run over all pairs, i = j included, so the value is >= 0 and 0 iff X, Y coincide)."""
    dxx, dyy, dxy = _d if _d is not None else _pairs(X, Y)
    return float(2 * np.sqrt(dxy).mean() - np.sqrt(dxx).mean() - np.sqrt(dyy).mean())


def mmd_rbf(
    X: np.ndarray, Y: np.ndarray, bandwidths: tuple[float, ...] | list[float], *, _d=None
) -> float:
    """Squared MMD with the RBF kernel exp(-|x-y|^2 / (2 h^2)), averaged over bandwidths h
    (V-statistic)."""
    dxx, dyy, dxy = _d if _d is not None else _pairs(X, Y)
    vals = []
    for h in bandwidths:
        g = 1.0 / (2.0 * h * h)
        vals.append(np.exp(-g * dxx).mean() + np.exp(-g * dyy).mean() - 2 * np.exp(-g * dxy).mean())
    return float(np.mean(vals))


def median_distance(X: np.ndarray, *, max_cells: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance (i != j) of a fixed-seed subsample of X."""
    S = subsample(X, max_cells=max_cells, seed=seed)
    d = np.sqrt(_sqdist(S, S))[np.triu_indices(len(S), 1)]
    return float(np.median(d)) if d.size else 1.0


class PCASpace:
    """A PCA fitted on training cells (centred, no scaling): where the distribution metrics are
    computed."""

    def __init__(self, X_train: np.ndarray, *, n_comps: int = 50, seed: int = 0):
        X = subsample(X_train, max_cells=20_000, seed=seed)
        self.center = X.mean(0)
        k = max(1, min(n_comps, X.shape[1], len(X) - 1))
        _, _, Vt = np.linalg.svd(X - self.center, full_matrices=False)
        self.components = Vt[:k]
        self.bandwidths = tuple(
            f * median_distance(self.transform(X), seed=seed) for f in MMD_BANDWIDTH_FACTORS
        )

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, float) - self.center) @ self.components.T


def context_metrics(
    y: np.ndarray,
    p: np.ndarray,
    c: np.ndarray,
    X_true: np.ndarray | None = None,
    X_pred: np.ndarray | None = None,
    *,
    space: PCASpace | None = None,
    seed: int = 0,
    c_pred: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of METRICS for one context. Cells are optional (distribution metrics are NaN
    without them); they are subsampled with `seed` and projected with `space`. `c_pred`: the mean
    of the control cells the prediction was made from (default `c`)."""
    out = {
        "r2_mean": r2_mean(y, p),
        "r2_top20_de": r2_top_de(y, p, c),
        "pearson_delta": pearson_delta(y, p, c, c_pred),
        "mse": mse(y, p),
        "energy_distance": float("nan"),
        "mmd": float("nan"),
    }
    if X_true is not None and X_pred is not None and space is not None:
        A = space.transform(subsample(X_true, seed=seed))
        B = space.transform(subsample(X_pred, seed=seed + 1))
        d = _pairs(A, B)  # shared by both metrics: the pairwise distances dominate their cost
        out["energy_distance"] = energy_distance(A, B, _d=d)
        out["mmd"] = mmd_rbf(A, B, space.bandwidths, _d=d)
    return out
