"""Predicted cells that look like data: from a predicted change of each gene's mean to cells.

A prediction is a set of real control cells of the training run (the reference cells of a
covariate group, kept in model.pt) moved by the predicted change `delta` of each gene's mean. In
log-normalised space a plain `x0 + delta` gives every zero of a control cell a tiny value (the
issue on trust, item 4: 50% non-zeros where measured cells have 3%), which makes detection-based
read-outs (fraction expressing, dot plots, Wilcoxon DE) meaningless. The rule here, per gene and
covariate group (docs/design.md, "Predictions"), keeps the data's sparsity and matches the
predicted mean exactly over the group's reference cells:

- target mean `mu1 = max(mu0 + delta, 0)`, with `mu0` the reference cells' mean;
- down (`delta < 0`): `x = max(x0 + d, 0)` with the one `d <= 0` that gives mean `mu1`: zeros
  stay zeros and the lowest expressing cells drop to zero, as counts do when a rate falls;
- up (`delta > 0`), as a Poisson rate multiplied by `f` splits a change: the expressing cells rise
  by the level shift `d` (about log f), and of the zero cells, the share `1 - (1 - p0)^(f-1)`
  (p0: the fraction expressing) starts expressing, at the gene's lowest expressing level plus
  `d`, deepest cells first (depth: a cell's summed expression). `f` is solved so that the mean is
  `mu1`, then `d` exactly for the whole number of cells switched on;
- a zero therefore stays zero unless the predicted increase switches on at least one whole cell of
  the group's reference cells: smaller increases only raise the expressing cells (a gene that no
  reference cell expresses stays at 0 until its rise is worth one cell at the one-count level,
  the only case where the mean falls short of `mu1`, by less than that cell's share).

Continuous inputs (negative values allowed) get the plain shift `x0 + delta`: no clipping, no
rule (`log_space=False`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Largest level shift searched for an increase (log units: e^20-fold, beyond any log1p data).
_MAX_LOG_FOLD = 20.0
_BISECTIONS = 60


@dataclass
class Reference:
    """The reference control cells of one covariate group and what the rule needs of them."""

    cells: np.ndarray  # (n, d) log-normalised values
    mean: np.ndarray  # (d,)
    n_nz: np.ndarray  # (d,) expressing cells per gene
    s_nz: np.ndarray  # (d,) sum of the expressing cells' values
    low: np.ndarray  # (d,) lowest expressing value (the group's one-count level where none)
    zero_rank: np.ndarray  # (n, d) rank of a zero cell among the gene's zeros, deepest 0; n if > 0
    desc: np.ndarray  # (n, d) values sorted in decreasing order per gene
    csum: np.ndarray  # (n, d) cumulative sums of `desc`

    @classmethod
    def of(cls, cells: np.ndarray) -> Reference:
        X = np.asarray(cells, np.float64)
        n, d = X.shape
        nz = X > 0
        n_nz = nz.sum(0)
        low_g = np.where(nz, X, np.inf).min(0)
        one_count = float(np.median(low_g[np.isfinite(low_g)])) if np.isfinite(low_g).any() else 1.0
        low = np.where(np.isfinite(low_g), low_g, one_count)
        depth = X.sum(1)
        order = np.argsort(-depth, kind="stable")  # deepest first
        zero_rank = np.full((n, d), n, np.int64)
        zs = ~nz[order]  # zeros in depth order
        ranks = np.cumsum(zs, axis=0) - 1
        zero_rank[order] = np.where(zs, ranks, n)
        desc = -np.sort(-X, axis=0)
        return cls(
            cells=np.asarray(cells, np.float32),
            mean=X.mean(0),
            n_nz=n_nz,
            s_nz=X.sum(0),
            low=low,
            zero_rank=zero_rank,
            desc=desc,
            csum=np.cumsum(desc, axis=0),
        )

    @property
    def n(self) -> int:
        return int(self.cells.shape[0])

    def shifts(self, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per gene, for a predicted change `delta` (d,): the level shift `d` and the number of
        zero cells switched on (0 unless `delta > 0`)."""
        delta = np.asarray(delta, np.float64)
        target = np.maximum(self.mean + delta, 0.0)
        level = np.zeros_like(target)
        n_on = np.zeros(target.shape, np.int64)
        up = target > self.mean
        down = target < self.mean
        if up.any():
            level[up], n_on[up] = self._up(target[up], up)
        if down.any():
            level[down] = self._down(target[down], down)
        return level, n_on

    def _up(self, target: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.n
        n_nz, s_nz, low = self.n_nz[sel], self.s_nz[sel], self.low[sel]
        n_zero = n - n_nz
        p0 = np.maximum(n_nz / n, 0.5 / n)  # a gene never expressed can still switch on

        def on(lf):
            q = 1.0 - (1.0 - p0) ** np.expm1(lf)  # share of the zeros expressing at fold e^lf
            return np.minimum(np.floor(q * n_zero + 1e-9), n_zero).astype(np.int64)

        def mean(lf):
            k = on(lf)
            return (s_nz + n_nz * lf + k * (low + lf)) / n

        lo, hi = np.zeros_like(target), np.full_like(target, _MAX_LOG_FOLD)
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            below = mean(mid) <= target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        k = on(lo)  # the whole number of cells switched on; then the level exactly
        level = (n * target - s_nz - k * low) / np.maximum(n_nz + k, 1)
        return np.maximum(level, 0.0), k

    def _down(self, target: np.ndarray, sel: np.ndarray) -> np.ndarray:
        # mean(d) = sum_i max(x_i + d, 0) / n is piecewise linear: with the top k cells above 0,
        # d = (n target - C_k) / k, valid when x_(k) + d > 0 >= x_(k+1) + d
        n = self.n
        s, C = self.desc[:, sel], self.csum[:, sel]
        k = np.arange(1, n + 1, dtype=np.float64)[:, None]
        d = (n * target[None] - C) / k
        nxt = np.vstack([s[1:], np.zeros((1, s.shape[1]))])
        valid = (s + d > 0) & (nxt + d <= 0)
        first = np.argmax(valid, axis=0)
        level = d[first, np.arange(s.shape[1])]
        return np.where(valid.any(0), level, -s[0])  # no valid k: the target is 0, all cells off

    def cells_for(
        self, rows: np.ndarray, delta: np.ndarray, *, log_space: bool = True
    ) -> np.ndarray:
        """The reference cells `rows` moved by the predicted change `delta` (d,) under the rule;
        `log_space=False` (continuous data): the plain shift, no clipping."""
        x0 = self.cells[rows].astype(np.float64)
        if not log_space:
            return (x0 + np.asarray(delta, np.float64)).astype(np.float32)
        level, n_on = self.shifts(delta)
        out = np.where(x0 > 0, np.maximum(x0 + level, 0.0), 0.0)
        switch = self.zero_rank[rows] < n_on[None, :]
        out = np.where(switch, self.low + level, out)
        return out.astype(np.float32)


def sample_rows(n_ref: int, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """`n_cells` reference rows: every reference cell the same number of times, the remainder
    drawn without replacement (the least sampling noise in the predicted mean)."""
    full, rest = divmod(n_cells, n_ref)
    rows = [np.tile(np.arange(n_ref), full)] if full else []
    if rest:
        rows.append(np.sort(rng.choice(n_ref, rest, replace=False)))
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)
