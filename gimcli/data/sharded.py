"""Reading one process's share of a screen's cells, in chunks, from a backed .h5ad.

Under torchrun (and with `--backed` on one process) each process owns a contiguous range of rows
(`shard_rows`) and reads only those, one chunk at a time (gimcli.data.chunked.row_chunks). Gene
selection needs each gene's mean and variance over every cell: the per-gene sums of the shards are
added with one all-reduce (gimcli.training.distributed.all_reduce_sum, a no-op on one process), so
every process selects the same genes as a single process reading the whole file would. The value
checks are those of the chunked reader, on each process's own rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from gimcli.data.checks import (
    DETECT_SAMPLE,
    check_counts_layer,
    check_scale,
    check_values,
    looks_like_counts,
)
from gimcli.data.chunked import _normalise, row_chunks, seurat_hvg, with_forced_genes
from gimcli.data.preprocess import PreprocessInfo, expression_matrix
from gimcli.errors import InputError

log = logging.getLogger(__name__)

Reduce = Callable[..., list[np.ndarray]]


def shard_rows(n_obs: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [first, stop) of process `rank` of `world`: contiguous, sizes differing by <= 1."""
    base, extra = divmod(n_obs, world)
    first = rank * base + min(rank, extra)
    return first, first + base + (rank < extra)


@dataclass
class ShardReader:
    """The rows of one shard of a backed AnnData's matrix, normalised, in chunks."""

    adata: ad.AnnData
    X: object  # backed sparse dataset (or any matrix row_chunks can slice)
    source: str
    rows: tuple[int, int]
    is_counts: bool
    target_sum: float
    chunk_nnz: int | None = None

    def chunks(self, cols: np.ndarray | None = None, *, check: bool = False) -> Iterator:
        """(first row, float32 CSR of the normalised rows over `cols`) per chunk of the shard."""
        for lo, block in row_chunks(self.X, chunk_nnz=self.chunk_nnz, rows=self.rows):
            if check:
                self.check(lo, block)
            out = _normalise(block, is_counts=self.is_counts, target_sum=self.target_sum)
            yield lo, (out if cols is None else out[:, cols].tocsr())

    def check(self, lo: int, block: sp.csr_matrix) -> None:
        where = f"{self.source} (cells {lo}-{lo + block.shape[0] - 1})"
        names = {
            "obs_names": self.adata.obs_names[lo : lo + block.shape[0]],
            "var_names": self.adata.var_names,
        }
        check_values(block, where=where, **names)
        check_scale(block, self.is_counts, where=where, **names)

    def rows_of(self, rows: np.ndarray, cols: np.ndarray) -> sp.csr_matrix:
        """Given rows (any shard's; sorted) normalised over `cols`: e.g. the reference controls."""
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            return sp.csr_matrix((0, len(cols)), dtype=np.float32)
        block = self.X[rows]
        block = block.tocsr() if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
        block = block.astype(np.float32, copy=False)
        out = _normalise(block, is_counts=self.is_counts, target_sum=self.target_sum)
        return out[:, cols].tocsr()


def open_shard(
    adata: ad.AnnData,
    *,
    counts_layer: str | None,
    target_sum: float,
    rank: int,
    world: int,
    chunk_nnz: int | None = None,
) -> ShardReader:
    """The reader of this process's rows; whether X holds counts is decided on the file's first
    rows, which every process reads alike."""
    X, source = expression_matrix(adata, counts_layer)
    first = next(row_chunks(X, chunk_nnz=DETECT_SAMPLE))[1]
    is_counts = looks_like_counts(first)
    if counts_layer is not None:
        check_counts_layer(
            first, is_counts, where=source, obs_names=adata.obs_names, var_names=adata.var_names
        )
    rows = shard_rows(adata.n_obs, rank, world)
    return ShardReader(adata, X, source, rows, is_counts, target_sum, chunk_nnz)


def select_genes(
    reader: ShardReader,
    *,
    n_top_genes: int,
    hvg_flavor: str,
    force_genes: list[str] | None,
    row_mask: np.ndarray | None,
    reduce: Reduce,
) -> tuple[np.ndarray, PreprocessInfo]:
    """The modelled genes' columns and the PreprocessInfo, from per-gene sums over the cells of
    `row_mask` (all when None; a file-length mask) summed over shards with `reduce`. With no
    selection to make, the shard's values are checked on the pass that reads them next."""
    adata = reader.adata
    n_genes = adata.n_vars
    keep = None
    if n_genes > n_top_genes:
        if hvg_flavor != "seurat":
            raise InputError(
                f"hvg flavor {hvg_flavor!r} is not available when reading in chunks (--backed, "
                "torchrun); use seurat"
            )
        s1, s2, n = np.zeros(n_genes), np.zeros(n_genes), np.zeros(1)
        for lo, e in reader.chunks(check=True):
            if row_mask is not None:
                e = e[np.flatnonzero(row_mask[lo : lo + e.shape[0]])]
            e = e.copy()
            e.data = np.expm1(e.data)  # seurat dispersions are on the expm1 scale
            s1 += np.asarray(e.sum(0, dtype=np.float64)).ravel()
            s2 += np.asarray(e.multiply(e).sum(0, dtype=np.float64)).ravel()
            n += e.shape[0]
        s1, s2, n = reduce(s1, s2, n)
        n_obs = float(n[0])
        mean = s1 / n_obs
        var = np.maximum(s2 / n_obs - mean**2, 0) * (n_obs / max(n_obs - 1, 1))
        keep = with_forced_genes(seurat_hvg(mean, var, n_top_genes), adata.var_names, force_genes)
    cols = np.arange(n_genes) if keep is None else np.flatnonzero(keep)
    genes = adata.var_names if keep is None else adata.var_names[keep]
    info = PreprocessInfo(
        source=reader.source,
        is_counts=reader.is_counts,
        target_sum=reader.target_sum if reader.is_counts else None,
        log1p=reader.is_counts,
        hvg_flavor=None if keep is None else hvg_flavor,
        n_top_genes=n_top_genes,
        genes=genes.tolist(),
        gene_index=cols.tolist(),
    )
    log.info(
        "preprocessed %s in chunks of rows %d-%d: %s, %d of %d genes kept",
        reader.source,
        reader.rows[0],
        reader.rows[1] - 1,
        "counts -> normalize_total+log1p" if reader.is_counts else "log-normalised as given",
        len(cols),
        n_genes,
    )
    return cols, info
