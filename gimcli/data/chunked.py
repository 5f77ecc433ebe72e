"""Preprocessing in chunks of cells: for backed (on-disk) files and to bound peak memory.

Two passes over the cells. Normalisation and log1p act on each cell alone, so scanpy's own
`normalize_total`/`log1p` are applied per chunk and give the same values as on the whole matrix.
Gene selection (scanpy's `seurat` flavor) needs only each gene's mean and variance of expm1 of
the log data, which are accumulated over chunks; the per-gene rule is reproduced below and checked
against scanpy by tests/data/test_preprocess.py. Peak memory: the output CSR plus one chunk.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli.data.checks import (
    DETECT_SAMPLE,
    check_counts_layer,
    check_scale,
    check_values,
    looks_like_counts,
)
from gimcli.errors import InputError

# Stored values per chunk: ~20M (about 160 MB as float32 CSR with indices), whatever the width.
_CHUNK_NNZ = 20_000_000


def row_chunks(X, *, chunk_nnz: int | None = None, rows: tuple[int, int] | None = None):
    """Yield (start, CSR float32 rows) of a matrix in memory or an anndata backed dataset, about
    `chunk_nnz` stored values at a time (default _CHUNK_NNZ, read at call time); only the rows
    `rows` = (first, stop) when given (a process's shard)."""
    chunk_nnz = chunk_nnz or _CHUNK_NNZ
    first, n = rows if rows is not None else (0, X.shape[0])
    density = 1.0
    if hasattr(X, "nnz") or hasattr(X, "group"):  # sparse in memory / backed sparse dataset
        nnz = X.nnz if hasattr(X, "nnz") else X.group["data"].shape[0]
        density = max(nnz / max(X.shape[0] * X.shape[1], 1), 1e-6)
    step = max(1, int(chunk_nnz / max(density * X.shape[1], 1)))
    for lo in range(first, n, step):
        block = X[lo : min(lo + step, n)]
        block = block.tocsr() if sp.issparse(block) else sp.csr_matrix(np.asarray(block))
        yield lo, block.astype(np.float32, copy=False)


def _normalise(block: sp.csr_matrix, *, is_counts: bool, target_sum: float) -> sp.csr_matrix:
    import scanpy as sc

    if not is_counts:
        return block
    tmp = ad.AnnData(X=block.copy())
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    return tmp.X


def seurat_hvg(
    mean: np.ndarray, var: np.ndarray, n_top_genes: int, *, n_bins: int = 20
) -> np.ndarray:
    """scanpy's `highly_variable_genes(flavor='seurat', n_top_genes=...)` from per-gene mean and
    (unbiased) variance of expm1 of the log data."""
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.log(disp)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    one = stats["dev"].isnull()  # a bin with one gene: its normalised dispersion is set to 1
    stats.loc[one, "dev"] = stats.loc[one, "avg"]
    stats.loc[one, "avg"] = 0
    per_gene = stats.loc[df["mean_bin"]].set_index(df.index)
    norm = ((df["dispersions"] - per_gene["avg"]) / per_gene["dev"]).to_numpy()
    ok = norm[~np.isnan(norm)]
    n = min(n_top_genes, ok.size)
    cut = np.sort(ok)[::-1][n - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cut


def preprocess_chunked(
    adata: ad.AnnData,
    X,
    *,
    source: str,
    counts_layer: str | None,
    n_top_genes: int,
    hvg_flavor: str,
    target_sum: float,
    force_genes: list[str] | None,
) -> tuple[sp.csr_matrix, bool, np.ndarray | None]:
    """Chunked twin of `preprocess.preprocess` (same values); X is the source matrix.

    Returns the float32 CSR over the kept genes, whether X held counts, and the kept-gene mask
    (None when every gene is kept: no selection was made).
    """

    def check(lo, block):  # the in-memory path's value checks, chunk by chunk, naming cell and gene
        where = f"{source} (cells {lo}-{lo + block.shape[0] - 1})"
        names = {
            "obs_names": adata.obs_names[lo : lo + block.shape[0]],
            "var_names": adata.var_names,
        }
        check_values(block, where=where, **names)
        check_scale(block, is_counts, where=where, **names)

    if hvg_flavor != "seurat":
        raise InputError(
            f"hvg flavor {hvg_flavor!r} is not available when reading in chunks (--backed); use "
            "seurat"
        )
    n_obs, n_genes = X.shape
    first = next(row_chunks(X, chunk_nnz=DETECT_SAMPLE))[1]
    is_counts = looks_like_counts(first)
    if counts_layer is not None:
        check_counts_layer(
            first, is_counts, where=source, obs_names=adata.obs_names, var_names=adata.var_names
        )
    keep = None
    if n_genes > n_top_genes:
        s1 = np.zeros(n_genes)
        s2 = np.zeros(n_genes)
        for lo, block in row_chunks(X):
            check(lo, block)
            e = _normalise(block, is_counts=is_counts, target_sum=target_sum)
            e = e.copy()
            e.data = np.expm1(e.data)  # seurat dispersions are on the expm1 scale
            s1 += np.asarray(e.sum(0, dtype=np.float64)).ravel()
            s2 += np.asarray(e.multiply(e).sum(0, dtype=np.float64)).ravel()
        mean = s1 / n_obs
        var = np.maximum(s2 / n_obs - mean**2, 0) * (n_obs / max(n_obs - 1, 1))
        keep = with_forced_genes(seurat_hvg(mean, var, n_top_genes), adata.var_names, force_genes)
    cols = np.arange(n_genes) if keep is None else np.flatnonzero(keep)
    parts = []
    for lo, block in row_chunks(X):
        if keep is None:
            check(lo, block)
        parts.append(_normalise(block, is_counts=is_counts, target_sum=target_sum)[:, cols].tocsr())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xout = sp.vstack(parts, format="csr").astype(np.float32, copy=False)
    return Xout, is_counts, keep


def with_forced_genes(keep: np.ndarray, var_names, force_genes: list[str] | None) -> np.ndarray:
    """The gene mask `keep` plus every gene of `force_genes` that the data have."""
    keep = keep.copy()
    forced = [g for g in (force_genes or []) if g in var_names]
    if forced:
        keep[var_names.get_indexer(forced)] = True
    return keep
