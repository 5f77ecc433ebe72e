"""Full-data training steps from per-context sums and one pooled within-context scatter matrix.

The objective needs, per context k and gene j, S1 = sum_i r_ij and S2 = sum_i r_ij^2 of the
residuals r = A x - b. S1 is linear in the cells: S1_k = A (sum_i x_i) - n_k b. S2 enters every
target subset of the exact marginal (and the relaxed bound) with the same coefficient, so only its
sum over contexts matters, and with c_i = x_i - mean_k (W = sum_k sum_i c_i c_i^T, d x d):

    sum_k S2_kj = (A W A^T)_jj + sum_k S1_kj^2 / n_k.

So one pass over the cells (N d^2, chunked, on the device) gives statistics from which every step
costs O(K d^2 + d^3) whatever the number of cells: the exact full-data objective, the zero-variance
version of the sampled estimator in batches.py. Giving each context the share n_k / N of the
within term leaves the sum, and hence the objective, its gradient and the posteriors, exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from gimcli.model.causal import LinearSEM
from gimcli.model.module import ContextBatch
from gimcli.model.precision import matmul
from gimcli.training.batches import TrainData, context_positions, csr_rows_to_dense

# Cells densified at once while accumulating W: 64 MB at d = 2000 on CPU; GPUs take 8x more.
_CHUNK_CPU = 8192
_CHUNK_GPU = 65536


@dataclass
class StatsBatch:
    """Per-context sums of standardised cells and the pooled within-context scatter."""

    sum_x: torch.Tensor  # (K, d)
    n: torch.Tensor  # (K,) cells per context (all > 0)
    W: torch.Tensor  # (d, d)
    contexts: ContextBatch
    precision: str = "fp32"

    def residual_stats(self, sem: LinearSEM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        A = sem.A()
        sum_x, n, W = (t.to(A.dtype) for t in (self.sum_x, self.n, self.W))
        S1 = matmul(sum_x, A.T, self.precision) - n[:, None] * sem.b
        within = _DiagQuadratic.apply(A, W, self.precision)
        S2 = S1 * S1 / n[:, None] + (n / n.sum())[:, None] * within
        return S1, S2, n


class _DiagQuadratic(torch.autograd.Function):
    """diag(A W A^T) for a symmetric W without a gradient: its gradient in A is 2 diag(g) A W, so
    the backward pass reuses the forward's A W instead of a second d^3 product."""

    @staticmethod
    def forward(ctx, A, W, precision):
        AW = matmul(A, W, precision)
        ctx.save_for_backward(AW)
        return (AW * A).sum(1)

    @staticmethod
    def backward(ctx, g):
        (AW,) = ctx.saved_tensors
        return 2 * g[:, None] * AW, None, None


def split_stats(
    data: TrainData,
    split: str,
    *,
    chunk: int | None = None,
    precision: str = "fp32",
    contexts: np.ndarray | None = None,
    scatter: bool = True,
) -> StatsBatch | None:
    """StatsBatch of one split's cells ("train", "val" or "all"; only `contexts`, when given);
    None if it has no cells. Without `scatter`, W is left at zero: enough for posteriors, which
    do not depend on S2, and no dense chunk of cells is ever made."""
    cells, starts, counts = data.cells_of(split)
    ctx = np.arange(data.K) if contexts is None else np.asarray(contexts)
    ctx = ctx[counts[ctx] > 0]
    if len(ctx) == 0:
        return None
    cnt = counts[ctx]
    rep, first, pos = context_positions(cnt)
    rows = cells[starts[ctx][rep] + pos]
    dev = data.device
    # Raw per-context sums through a sparse indicator product: no densifying, no copy of X.
    ind = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rep, rows)), shape=(len(ctx), data.X.shape[0])
    )
    raw_sum = np.asarray((ind @ data.X).todense(), dtype=np.float64)
    grp = data.cell_group[rows[first]]  # a context lies in one covariate group
    mean = data.mean.double().cpu().numpy()[grp]
    sd = data.sd.double().cpu().numpy()[grp]
    sum_x = (raw_sum - cnt[:, None] * mean) / sd
    xbar = torch.from_numpy(sum_x / cnt[:, None]).to(dev, torch.float32)
    d = data.X.shape[1]
    W = torch.zeros(d, d, dtype=torch.float64, device=dev)
    step = chunk or (_CHUNK_GPU if dev.type == "cuda" else _CHUNK_CPU)
    rep_t = torch.from_numpy(rep).to(dev)
    g_t = torch.from_numpy(data.cell_group[rows]).to(dev)
    for lo in range(0, len(rows) if scatter else 0, step):
        sl = slice(lo, lo + step)
        x = csr_rows_to_dense(data.X, rows[sl], dev)
        c = (x - data.mean[g_t[sl]]) / data.sd[g_t[sl]] - xbar[rep_t[sl]]
        W += (c.T @ c).double()  # fp32 per chunk, summed in fp64 across chunks
    n = torch.from_numpy(cnt.astype(np.float32)).to(dev)
    sub = data.contexts.select(torch.from_numpy(ctx).to(dev))
    return StatsBatch(torch.from_numpy(sum_x).to(dev, torch.float32), n, W.float(), sub, precision)


class FullStats:
    """Stands in for TrainData in the training loop: every 'sample' is the whole split's
    statistics.

    Posteriors after training come from the same sums over all cells (`all_cells`).
    """

    def __init__(
        self, data: TrainData, *, precision: str = "fp32", contexts: np.ndarray | None = None
    ):
        self.cells = data
        self.K = data.K
        self.device = data.device
        self.split = data.split
        self.precision = precision
        self._stats = {
            s: split_stats(data, s, precision=precision, contexts=contexts)
            for s in ("train", "val")
        }

    def n_cells(self, split: str) -> int:
        st = self._stats[split]
        return 0 if st is None else int(st.n.sum())

    def sample(
        self,
        rng: np.random.Generator,
        *,
        split: str = "train",
        batch_contexts: int = 0,
        max_cells: int = 0,
    ) -> StatsBatch:
        return self._stats[split]

    def all_cells(self, ctx_ids: np.ndarray | None = None) -> StatsBatch:
        """All cells (train + val) of the given contexts, as sums: posteriors need no dense cells
        (a 50k-cell dense chunk at d = 2000 would be 400 MB per intermediate on the host)."""
        return split_stats(self.cells, "all", contexts=ctx_ids, scatter=False)


def step_data(data: TrainData, cfg, *, contexts: np.ndarray | None = None) -> TrainData | FullStats:
    """What the loop draws its steps from, per `cfg.batching` and `cfg.precision`;
    `contexts`: this process's shard under torchrun (all contexts otherwise)."""
    data.precision = cfg.precision
    if contexts is not None:
        data.set_shard(contexts)
    if cfg.batching == "full":
        return FullStats(data, precision=cfg.precision, contexts=contexts)
    if cfg.batching == "sampled":
        return data
    raise ValueError(f"unknown batching {cfg.batching!r}")  # TrainConfig refuses it first


def peak_gpu_bytes(device: torch.device) -> int | None:
    """Peak device memory of this process so far (None on CPU)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
