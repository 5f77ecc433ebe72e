"""Cells stay in a host CSR matrix; each step densifies only its batch, on the device."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from gimcli.model.module import CellBatch, ContextBatch


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


def csr_rows_to_dense(X: sp.csr_matrix, rows: np.ndarray, device) -> torch.Tensor:
    sub = X[rows]
    if device.type == "cpu":
        return torch.from_numpy(sub.toarray())
    # Ship the sparse rows and densify on the accelerator: host memory never holds dense data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        t = torch.sparse_csr_tensor(
            torch.from_numpy(sub.indptr.astype(np.int64)),
            torch.from_numpy(sub.indices.astype(np.int64)),
            torch.from_numpy(sub.data.astype(np.float32)),
            size=sub.shape,
            check_invariants=False,
        )
        return t.to(device).to_dense()


def context_batch(comp_feats, components, dose_t, cov, comp_gene_of) -> ContextBatch:
    """Gather per-context network inputs from per-component features (numpy in, tensors out)."""
    mask = components >= 0
    idx = np.where(mask, components, 0)
    feats = comp_feats[idx] * mask[..., None]
    cg = np.where(mask, comp_gene_of[idx], -1)
    return ContextBatch(
        feats=torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
        dose_t=torch.from_numpy(np.where(mask, dose_t, 0).astype(np.float32)),
        cov=torch.from_numpy(np.ascontiguousarray(cov, dtype=np.float32)),
        comp_gene=torch.from_numpy(cg.astype(np.int64)),
        comp_mask=torch.from_numpy(mask),
    )


class TrainData:
    """Contexts with their cells, split into training and validation cells per context."""

    def __init__(
        self,
        X: sp.csr_matrix,
        cell_context: np.ndarray,
        contexts: ContextBatch,
        cell_group: np.ndarray,
        mean: np.ndarray,
        sd: np.ndarray,
        *,
        val_fraction: float,
        seed: int,
        device: torch.device,
    ):
        self.X = X
        self.device = device
        self.contexts = contexts.to(device)
        self.K = contexts.feats.shape[0]
        self.mean = torch.from_numpy(mean).to(device)
        self.sd = torch.from_numpy(sd).to(device)
        self.cell_group = cell_group
        rng = np.random.default_rng(seed)
        keep = np.flatnonzero(cell_context >= 0)
        # Shuffle, then stable-sort by context: cells of a context are contiguous, in random order.
        keep = keep[rng.permutation(len(keep))]
        keep = keep[np.argsort(cell_context[keep], kind="stable")]
        counts = np.bincount(cell_context[keep], minlength=self.K)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n_val = np.where(counts >= 10, np.floor(counts * val_fraction).astype(np.int64), 0)
        self.split = {
            "val": (keep, starts, n_val),
            "train": (keep, starts + n_val, counts - n_val),
        }
        self._fixed: dict[str, CellBatch] = {}
        self.precision = "fp32"  # of the residual matmul (gimcli.model.precision)
        self.ctx_ids = np.arange(self.K)  # the contexts this process samples (a shard under DDP)

    def set_shard(self, ctx_ids: np.ndarray) -> None:
        self.ctx_ids = np.asarray(ctx_ids, np.int64)
        self._fixed.clear()

    def n_cells(self, split: str) -> int:
        return int(self.split[split][2][self.ctx_ids].sum())

    def sample(
        self, rng: np.random.Generator, *, split: str = "train", batch_contexts: int, max_cells: int
    ) -> CellBatch:
        cells, starts, counts = self.split[split]
        ids = self.ctx_ids
        full = len(ids) <= batch_contexts and counts[ids].max() <= max_cells
        if full and split in self._fixed:
            return self._fixed[split]
        ctx = (
            ids
            if len(ids) <= batch_contexts
            else np.sort(rng.choice(ids, batch_contexts, replace=False))
        )
        ctx = ctx[counts[ctx] > 0]
        cnt = counts[ctx]
        rep = np.repeat(np.arange(len(ctx)), cnt)
        first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        pos = np.arange(len(rep)) - first[rep]  # position within its context
        if cnt.max() > max_cells:  # random subset of each large context, without replacement
            order = np.lexsort((rng.random(len(rep)), rep))
            pos = pos[order]  # permuted positions per context (rep stays sorted)
            take = (np.arange(len(rep)) - first[rep]) < max_cells
            rep, pos = rep[take], pos[take]
        rows = cells[starts[ctx][rep] + pos]
        taken = np.minimum(cnt, max_cells)
        batch = self._make(rows, rep, ctx, cnt / taken)
        if full:
            self._fixed[split] = batch
        return batch

    def _make(self, rows, rep, ctx, scale) -> CellBatch:
        x = csr_rows_to_dense(self.X, rows, self.device)
        g = torch.from_numpy(self.cell_group[rows]).to(self.device)
        x = (x - self.mean[g]) / self.sd[g]
        ci = torch.from_numpy(ctx).to(self.device)
        c = self.contexts
        sub = ContextBatch(c.feats[ci], c.dose_t[ci], c.cov[ci], c.comp_gene[ci], c.comp_mask[ci])
        return CellBatch(
            x=x,
            ctx=torch.from_numpy(rep).to(self.device),
            scale=torch.from_numpy(np.asarray(scale, dtype=np.float32)).to(self.device),
            contexts=sub,
            precision=self.precision,
        )

    def all_cells(self, ctx_ids: np.ndarray | None = None) -> CellBatch:
        """All cells (train + val) of the given contexts, unscaled: for posteriors."""
        cells, starts, counts = self.split["val"]
        total = counts + self.split["train"][2]
        ctx = np.arange(self.K) if ctx_ids is None else ctx_ids
        cnt = total[ctx]
        rep = np.repeat(np.arange(len(ctx)), cnt)
        first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        pos = np.arange(len(rep)) - first[rep]
        rows = cells[starts[ctx][rep] + pos]
        return self._make(rows, rep, ctx, np.ones(len(ctx)))
