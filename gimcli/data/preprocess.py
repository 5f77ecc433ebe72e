"""From an AnnData to a log-normalised CSR matrix over the modelled genes (scanpy underneath)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import scipy.sparse as sp

from gimcli.errors import InputError

log = logging.getLogger(__name__)

# Values checked when deciding "counts or log-normalised": enough to be sure, cheap on 1M cells.
_DETECT_SAMPLE = 200_000


@dataclass(frozen=True)
class PreprocessInfo:
    source: str  # "X" or "layers[<name>]"
    is_counts: bool
    target_sum: float | None
    log1p: bool
    hvg_flavor: str | None
    n_top_genes: int
    genes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _data_values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


def check_values(X, *, where: str) -> None:
    """NaN/inf or negative expression values are never usable."""
    vals = _data_values(X)
    if vals.size and not np.isfinite(vals).all():
        raise InputError(f"{where}: contains NaN or infinite values")
    if vals.size and vals.min() < 0:
        raise InputError(
            f"{where}: contains negative values (min {vals.min():.3g}); expected counts or "
            "log-normalised expression (scaled/centred data cannot be used)"
        )


def looks_like_counts(X) -> bool:
    vals = _data_values(X)[:_DETECT_SAMPLE]
    if vals.size == 0:
        return False
    return bool(np.all(vals == np.round(vals)) and vals.max() > 1)


def preprocess(
    adata: ad.AnnData,
    *,
    counts_layer: str | None = None,
    n_top_genes: int = 2000,
    hvg_flavor: str = "seurat",
    target_sum: float = 1e4,
    force_genes: list[str] | None = None,
) -> tuple[sp.csr_matrix, PreprocessInfo]:
    """Log-normalise (when counts) and select genes; the input AnnData is never modified.

    Returns a float32 CSR matrix (cells x selected genes, log1p scale) and what was done.
    `force_genes` (e.g. the genes a CRISPR screen perturbs) are kept even if not highly variable,
    so that their own condition can name them as direct targets.
    """
    import scanpy as sc

    if counts_layer is not None:
        if counts_layer not in adata.layers:
            raise InputError(
                f"--counts-layer {counts_layer!r}: no such layer (have {sorted(adata.layers)})"
            )
        X, source = adata.layers[counts_layer], f"layers[{counts_layer}]"
    else:
        X, source = adata.X, "X"
    if X is None:
        raise InputError("the file has no expression matrix in X")
    if adata.isbacked:  # on disk: never the whole matrix in memory
        from gimcli.data.chunked import preprocess_chunked

        return preprocess_chunked(adata, X, source=source, counts_layer=counts_layer, n_top_genes=n_top_genes,
                                  hvg_flavor=hvg_flavor, target_sum=target_sum, force_genes=force_genes,
                                  detect_sample=_DETECT_SAMPLE)
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    check_values(X, where=source)
    is_counts = looks_like_counts(X)
    if counts_layer is not None and not is_counts:
        raise InputError(f"{source}: --counts-layer given but its values are not integer counts")

    # X is already this function's own copy (astype copies), so scanpy may work on it in place.
    tmp = ad.AnnData(X=X, var=adata.var[[]].copy())
    if is_counts:
        sc.pp.normalize_total(tmp, target_sum=target_sum)
        sc.pp.log1p(tmp)
    n_genes = tmp.n_vars
    flavor = None
    if n_genes > n_top_genes:
        flavor = hvg_flavor
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top_genes, flavor=hvg_flavor)
        keep = tmp.var["highly_variable"].to_numpy().copy()
        forced = [g for g in (force_genes or []) if g in tmp.var_names]
        if forced:
            keep[tmp.var_names.get_indexer(forced)] = True
        tmp = tmp[:, keep]
    Xout = sp.csr_matrix(tmp.X, dtype=np.float32)
    info = PreprocessInfo(
        source=source,
        is_counts=is_counts,
        target_sum=target_sum if is_counts else None,
        log1p=is_counts,
        hvg_flavor=flavor,
        n_top_genes=n_top_genes,
        genes=tmp.var_names.tolist(),
    )
    log.info(
        "preprocessed %s: %s, %d of %d genes kept",
        source,
        "counts -> normalize_total+log1p" if is_counts else "log-normalised as given",
        len(info.genes),
        n_genes,
    )
    return Xout, info


def transform_new(adata: ad.AnnData, info: PreprocessInfo, *, counts_layer: str | None = None):
    """Apply a trained run's preprocessing to new data, aligned to the run's genes by name.

    Returns (CSR matrix over info.genes, list of missing genes filled with zeros).
    """
    import scanpy as sc

    X = adata.layers[counts_layer] if counts_layer else adata.X
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    check_values(X, where=counts_layer or "X")
    tmp = ad.AnnData(X=X.copy(), var=adata.var[[]].copy())
    if info.is_counts and looks_like_counts(X):
        sc.pp.normalize_total(tmp, target_sum=info.target_sum)
        sc.pp.log1p(tmp)
    idx = tmp.var_names.get_indexer(info.genes)
    missing = [g for g, i in zip(info.genes, idx, strict=True) if i < 0]
    cols = np.where(idx >= 0, idx, 0)
    Xg = tmp.X[:, cols].tocsr() if sp.issparse(tmp.X) else sp.csr_matrix(tmp.X[:, cols])
    if missing:
        Xg = Xg.tolil()
        Xg[:, np.flatnonzero(idx < 0)] = 0
        Xg = Xg.tocsr()
    return Xg.astype(np.float32), missing
