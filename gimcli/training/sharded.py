"""Full-data training statistics from cells read in shards: no process holds more than one chunk.

Each process reads only its rows of the file (gimcli.data.sharded), in chunks, in two passes over
the modelled genes, and every sum is combined over processes with one all-reduce
(`all_reduce_sum`, a no-op on one process):

1. per context and split (training / validation cells) the sum of each gene, and per covariate
   group the sum of squares: the standardisation (control mean, pooled within-context sd, as
   gimcli.training.standardisation) and the standardised per-context sums of stats.py;
2. per split the pooled within-context scatter W = sum_k sum_i c_i c_i^T, c_i = z_i - mean_k of
   the standardised cells, densified a few thousand rows at a time.

Every process then holds the same global statistics (K x d sums, two d x d matrices). Training
still shards the contexts over processes (gimcli.training.distributed): a process's step uses
its contexts' sums and the share n_shard / N of W, so the shards' objectives add up to the full
one (stats.py: only the sum over contexts of the within term matters), and the gradients are
all-reduced as before. Posteriors come from the global sums on every process.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from gimcli.model.module import ContextBatch
from gimcli.training.batches import csr_rows_to_dense
from gimcli.training.standardisation import standardisation_from_sums
from gimcli.training.stats import _CHUNK_CPU, _CHUNK_GPU, StatsBatch

log = logging.getLogger(__name__)

SPLITS = ("val", "train")


def context_sums(reader, cols, cell_context, is_val, cell_group, K, G, *, check, reduce):
    """Pass 1: (raw sums per split and context {split: (K, d)}, sums of squares per context
    (K, d)), over every process's shard. Squares are summed per context (float32 within a chunk,
    as in standardisation.py): a sum over a whole covariate group in float32 loses the within-
    context variance to cancellation against the mean."""
    d = len(cols)
    s1 = np.zeros((2 * K, d))
    s2 = np.zeros((K, d))
    for lo, block in reader.chunks(cols, check=check):
        m = block.shape[0]
        ctx = cell_context[lo : lo + m]
        rows = np.flatnonzero(ctx >= 0)
        if len(rows) == 0:
            continue
        key = ctx[rows] + K * (~is_val[lo : lo + m][rows])  # validation: 0..K-1, training: K..2K-1
        one = np.ones(len(rows), np.float32)
        ind = sp.csr_matrix((one, (key, rows)), shape=(2 * K, m))
        s1 += (ind @ block).toarray()
        cind = sp.csr_matrix((one, (ctx[rows], rows)), shape=(K, m))
        s2 += (cind @ block.multiply(block)).toarray()
    s1, s2 = reduce(s1, s2)
    return {"val": s1[:K], "train": s1[K:]}, s2


def pooled_scatter(
    reader, cols, cell_context, is_val, cell_group, xbar, mean, sd, *, device, chunk, reduce
):
    """Pass 2: {split: W (d, d) float64}, the within-context scatter of the standardised cells
    around their context-and-split mean `xbar` ({split: (K, d) float32 tensor})."""
    d = len(cols)
    K = xbar["val"].shape[0]
    both = torch.cat([xbar["val"], xbar["train"]])  # (2K, d), indexed like context_sums' keys
    W = torch.zeros(2, d, d, dtype=torch.float64, device=device)
    step = chunk or (_CHUNK_GPU if device.type == "cuda" else _CHUNK_CPU)
    for lo, block in reader.chunks(cols):
        m = block.shape[0]
        ctx = cell_context[lo : lo + m]
        rows = np.flatnonzero(ctx >= 0)
        train = (~is_val[lo : lo + m][rows]).astype(np.int64)
        key = torch.from_numpy(ctx[rows] + K * train).to(device)
        grp = torch.from_numpy(cell_group[lo : lo + m][rows]).to(device)
        for a in range(0, len(rows), step):
            sl = slice(a, a + step)
            x = csr_rows_to_dense(block, rows[sl], device)
            c = (x - mean[grp[sl]]) / sd[grp[sl]] - both[key[sl]]
            for s, sel in enumerate((key[sl] < K, key[sl] >= K)):
                cs = c[sel]
                if len(cs):
                    W[s] += (cs.T @ cs).double()  # fp32 per chunk, summed in fp64 across chunks
    (Wr,) = reduce(W.cpu().numpy())
    return {"val": Wr[0], "train": Wr[1]}


class ShardedStats:
    """Stands in for FullStats (stats.py) when the cells were read in shards: the global
    statistics, and this process's contexts (`shard`, all when None) for the steps."""

    def __init__(
        self,
        sum_x: dict[str, np.ndarray],
        n: dict[str, np.ndarray],
        W: dict[str, np.ndarray],
        contexts: ContextBatch,
        *,
        device: torch.device,
        precision: str = "fp32",
        shard: np.ndarray | None = None,
    ):
        self.K = len(n["train"])
        self.device = device
        self.precision = precision
        self.contexts = contexts.to(device)
        self.sum_x, self.n = sum_x, n
        self.d = W["train"].shape[0]
        self._W = W  # the global scatter per split (float64)
        # training_posterior reads the counts per context of each split here, as of TrainData
        self.split = {s: (None, None, n[s]) for s in SPLITS}
        ids = np.arange(self.K) if shard is None else np.asarray(shard, np.int64)
        self._stats = {s: self._batch(s, ids, W[s]) for s in SPLITS}

    def _batch(self, split: str, ids: np.ndarray, W: np.ndarray) -> StatsBatch | None:
        cnt = self.n[split]
        ids = ids[cnt[ids] > 0]
        if len(ids) == 0:
            return None
        share = float(cnt[ids].sum()) / float(cnt.sum())  # this shard's part of the within term
        return self._make(self.sum_x[split][ids], cnt[ids], ids, torch.from_numpy(W * share))

    def _make(self, sum_x, cnt, ids, W) -> StatsBatch:
        dev = self.device
        return StatsBatch(
            torch.from_numpy(np.asarray(sum_x)).to(dev, torch.float32),
            torch.from_numpy(np.asarray(cnt, np.float32)).to(dev),
            W.to(dev, torch.float32),
            self.contexts.select(torch.from_numpy(np.asarray(ids)).to(dev)),
            self.precision,
        )

    def n_cells(self, split: str) -> int:
        st = self._stats[split]
        return 0 if st is None else int(st.n.sum())

    def sample(self, rng, *, split: str = "train", batch_contexts: int = 0, max_cells: int = 0):
        return self._stats[split]

    def all_cells(self, ctx_ids: np.ndarray | None = None) -> StatsBatch:
        """All cells (train + val) of the given contexts as sums (W = 0: posteriors need none)."""
        ids = np.arange(self.K) if ctx_ids is None else np.asarray(ctx_ids, np.int64)
        sum_x = self.sum_x["train"][ids] + self.sum_x["val"][ids]
        cnt = self.n["train"][ids] + self.n["val"][ids]
        return self._make(sum_x, cnt, ids, torch.zeros(self.d, self.d))


def sharded_statistics(
    reader,
    cols: np.ndarray,
    *,
    cell_context: np.ndarray,
    is_val: np.ndarray,
    cell_group: np.ndarray,
    ctx_group: np.ndarray,
    is_control_ctx: np.ndarray,
    n_groups: int,
    check: bool,
    reduce,
    device: torch.device,
    chunk: int | None = None,
    timings: dict | None = None,
):
    """Standardisation and training statistics of the cells read by `reader` (file-length
    per-cell arrays; cell_context -1 = not trained on), combined over processes with `reduce`.

    Returns (std_mean, std_sd, {split: standardised sums (K, d)}, {split: cells (K,)},
    {split: W (d, d)}); `timings` gets the seconds of each pass ("sums", "scatter")."""
    import time

    t0 = time.perf_counter()
    K = len(ctx_group)
    used = cell_context >= 0
    n = {
        "val": np.bincount(cell_context[used & is_val], minlength=K).astype(np.float64),
        "train": np.bincount(cell_context[used & ~is_val], minlength=K).astype(np.float64),
    }
    raw, s2 = context_sums(
        reader, cols, cell_context, is_val, cell_group, K, n_groups, check=check, reduce=reduce
    )
    n_all = n["val"] + n["train"]
    mean, sd = standardisation_from_sums(
        raw["val"] + raw["train"], s2, n_all, ctx_group, is_control_ctx, n_groups
    )
    m64, sd64 = mean.astype(np.float64)[ctx_group], sd.astype(np.float64)[ctx_group]
    sum_x = {s: (raw[s] - n[s][:, None] * m64) / sd64 for s in SPLITS}
    xbar = {
        s: torch.from_numpy(sum_x[s] / np.maximum(n[s], 1)[:, None]).to(device, torch.float32)
        for s in SPLITS
    }
    t1 = time.perf_counter()
    W = pooled_scatter(
        reader,
        cols,
        cell_context,
        is_val,
        cell_group,
        xbar,
        torch.from_numpy(mean).to(device),
        torch.from_numpy(sd).to(device),
        device=device,
        chunk=chunk,
        reduce=reduce,
    )
    if timings is not None:
        timings.update(sums=t1 - t0, scatter=time.perf_counter() - t1)
    return mean, sd, sum_x, n, W
