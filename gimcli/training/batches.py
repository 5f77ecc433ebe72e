"""Training cells by context, and the sampled batches of `--batching sampled`.

Cells stay in a host CSR matrix; each step densifies only its batch, on the device.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from gimcli.model.module import CellBatch, ContextBatch


def csr_rows_to_dense(X: sp.csr_matrix, rows: np.ndarray, device) -> torch.Tensor:
    """Rows of X as a dense float32 tensor on `device` (densified there)."""
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


def context_positions(cnt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For contexts holding `cnt` cells each, laid out one after another: each cell's context,
    each context's first position, and each cell's position within its context."""
    rep = np.repeat(np.arange(len(cnt)), cnt)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    return rep, first, np.arange(len(rep)) - first[rep]


def split_cells(cell_context: np.ndarray, K: int, val_fraction: float, seed: int):
    """The training/validation split of the cells of each context, drawn from `seed`: (cells
    grouped by context in random order, first position of each context, cells per context,
    validation cells per context: the first `n_val` of each context's cells)."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(cell_context >= 0)
    # Shuffle, then stable-sort by context: cells of a context are contiguous, in random order.
    keep = keep[rng.permutation(len(keep))]
    keep = keep[np.argsort(cell_context[keep], kind="stable")]
    counts = np.bincount(cell_context[keep], minlength=K)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    n_val = np.where(counts >= 10, np.floor(counts * val_fraction).astype(np.int64), 0)
    return keep, starts, counts, n_val


def validation_cells(
    cell_context: np.ndarray, K: int, val_fraction: float, seed: int
) -> np.ndarray:
    """Bool per cell: held out for validation (the split of `split_cells`, as a mask)."""
    keep, starts, _, n_val = split_cells(cell_context, K, val_fraction, seed)
    ctx = cell_context[keep]
    pos = np.arange(len(keep)) - starts[ctx]
    is_val = np.zeros(len(cell_context), bool)
    is_val[keep[pos < n_val[ctx]]] = True
    return is_val


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
        keep, starts, counts, n_val = split_cells(cell_context, self.K, val_fraction, seed)
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

    def cells_of(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cells, first index per context, count per context) of "train", "val" or "all"."""
        if split == "all":
            cells, starts, n_val = self.split["val"]
            return cells, starts, n_val + self.split["train"][2]
        return self.split[split]

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
        rep, first, pos = context_positions(cnt)
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
        return CellBatch(
            x=x,
            ctx=torch.from_numpy(rep).to(self.device),
            scale=torch.from_numpy(np.asarray(scale, dtype=np.float32)).to(self.device),
            contexts=self.contexts.select(torch.from_numpy(ctx).to(self.device)),
            precision=self.precision,
        )

    def all_cells(self, ctx_ids: np.ndarray | None = None) -> CellBatch:
        """All cells (train + val) of the given contexts, unscaled: for posteriors."""
        cells, starts, total = self.cells_of("all")
        ctx = np.arange(self.K) if ctx_ids is None else ctx_ids
        rep, _, pos = context_positions(total[ctx])
        rows = cells[starts[ctx][rep] + pos]
        return self._make(rows, rep, ctx, np.ones(len(ctx)))
