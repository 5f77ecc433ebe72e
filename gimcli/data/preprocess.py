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


def check_values(X, *, where: str, obs_names=None, var_names=None) -> None:
    """NaN/inf or negative expression values are never usable; the message names the first."""
    vals = _data_values(X)
    if vals.size and not np.isfinite(vals).all():
        i = int(np.flatnonzero(~np.isfinite(vals))[0])
        raise InputError(
            f"{where}: contains NaN or infinite values, e.g. {vals[i]} at "
            f"{_locate(X, i, obs_names, var_names)}"
        )
    if vals.size and vals.min() < 0:
        i = int(np.argmin(vals))
        raise InputError(
            f"{where}: contains negative values (min {vals[i]:.3g} at {_locate(X, i, obs_names, var_names)}); "
            "expected counts or log-normalised expression (scaled/centred data cannot be used)"
        )


def _locate(X, i: int, obs_names=None, var_names=None) -> str:
    """'cell <name>, gene <name>' of the i-th stored value of X (CSR data or dense ravel)."""
    if sp.issparse(X):
        r, c = int(np.searchsorted(X.indptr, i, side="right") - 1), int(X.indices[i])
    else:
        r, c = (int(v) for v in np.unravel_index(i, X.shape))
    cell = repr(str(obs_names[r])) if obs_names is not None else f"row {r}"
    gene = repr(str(var_names[c])) if var_names is not None else f"column {c}"
    return f"cell {cell}, gene {gene}"


def _first_non_integer(vals: np.ndarray, *, chunk: int = 1 << 22) -> int:
    """Index of the first non-integer value, or -1; chunked to bound memory on large matrices."""
    for start in range(0, vals.size, chunk):
        v = vals[start : start + chunk]
        bad = np.flatnonzero(v != np.round(v))
        if bad.size:
            return start + int(bad[0])
    return -1


# log1p of any normalised expression stays far below this (log1p(1e6 CPM) = 13.8): larger
# non-integer values mean normalised-but-not-logged or corrected counts, neither of which we can use.
_MAX_LOG_VALUE = 30.0


def looks_like_counts(X) -> bool:
    vals = _data_values(X)[:_DETECT_SAMPLE]
    if vals.size == 0:
        return False
    return bool(np.all(vals == np.round(vals)) and vals.max() > 1)


def check_scale(X, is_counts: bool, *, where: str, obs_names=None, var_names=None) -> None:
    """Counts must be integers throughout; log-normalised data cannot reach count-like values."""
    vals = _data_values(X)
    if not vals.size:
        return
    if is_counts:
        i = _first_non_integer(vals)
        if i >= 0:
            raise InputError(
                f"{where}: integer counts mixed with non-integer values (e.g. {vals[i]:.4g} at "
                f"{_locate(X, i, obs_names, var_names)}); were raw and normalised data concatenated?"
            )
    elif vals.max() > _MAX_LOG_VALUE:
        i = _first_non_integer(vals)
        raise InputError(
            f"{where}: non-integer values up to {vals.max():.4g} (e.g. {vals[i]:.4g} at "
            f"{_locate(X, i, obs_names, var_names)}): neither integer counts nor log-normalised data; "
            "round corrected counts or give log1p-normalised data"
        )


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

        return preprocess_chunked(
            adata,
            X,
            source=source,
            counts_layer=counts_layer,
            n_top_genes=n_top_genes,
            hvg_flavor=hvg_flavor,
            target_sum=target_sum,
            force_genes=force_genes,
            detect_sample=_DETECT_SAMPLE,
        )
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    names = {"obs_names": adata.obs_names, "var_names": adata.var_names}
    check_values(X, where=source, **names)
    is_counts = looks_like_counts(X)
    if counts_layer is not None and not is_counts:
        vals = _data_values(X)
        i = _first_non_integer(vals)
        at = (
            f" (e.g. {vals[i]:.4g} at {_locate(X, i, **names)})"
            if i >= 0
            else " (all values are 0 or 1)"
        )
        raise InputError(
            f"{source}: --counts-layer given but its values are not integer counts{at}"
        )
    check_scale(X, is_counts, where=source, **names)

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


# Share of the model's genes that new data may lack (filled with 0, warned about) before the
# comparison stops meaning anything and we refuse.
MAX_MISSING_GENES = 0.1


def transform_new(
    adata: ad.AnnData,
    info: PreprocessInfo,
    *,
    counts_layer: str | None = None,
    where: str = "data",
    max_missing: float = MAX_MISSING_GENES,
):
    """Apply a trained run's preprocessing to new data, aligned to the run's genes by name.

    Returns (CSR matrix over info.genes, list of missing genes filled with zeros). Raises
    ModelError listing the missing genes when more than `max_missing` of them are absent.
    """
    import scanpy as sc

    from gimcli.errors import ModelError

    if counts_layer and counts_layer not in adata.layers:
        raise InputError(f"{where}: no layer {counts_layer!r} (have {sorted(adata.layers)})")
    X = adata.layers[counts_layer] if counts_layer else adata.X
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    src = f"{where}: " + (f"layers[{counts_layer}]" if counts_layer else "X")
    names = {"obs_names": adata.obs_names, "var_names": adata.var_names}
    check_values(X, where=src, **names)
    is_counts = looks_like_counts(X)
    check_scale(X, is_counts, where=src, **names)
    if info.is_counts and not is_counts:
        raise InputError(
            f"{src}: the model was trained on raw counts, but these values are not integer counts"
        )
    if is_counts and not info.is_counts:
        raise InputError(
            f"{src}: looks like raw integer counts, but the model was trained on log-normalised "
            "data; normalise it the way the training data were (e.g. normalize_total + log1p)"
        )
    idx = adata.var_names.get_indexer(info.genes)
    missing = [g for g, i in zip(info.genes, idx, strict=True) if i < 0]
    if len(missing) > max_missing * len(info.genes):
        raise ModelError(
            f"{where}: {len(missing)} of the model's {len(info.genes)} genes are missing from var_names "
            f"(more than {max_missing:.0%}): {missing[:20]}"
            + (" ..." if len(missing) > 20 else "")
            + "; use the same gene identifiers as in training"
        )
    if missing:
        log.warning(
            "%s: %d of %d model genes missing, set to 0: %s",
            where,
            len(missing),
            len(info.genes),
            missing[:10],
        )
    tmp = ad.AnnData(X=X.copy(), var=adata.var[[]].copy())
    if info.is_counts and is_counts:
        sc.pp.normalize_total(tmp, target_sum=info.target_sum)
        sc.pp.log1p(tmp)
    cols = np.where(idx >= 0, idx, 0)
    Xg = tmp.X[:, cols].tocsr() if sp.issparse(tmp.X) else sp.csr_matrix(tmp.X[:, cols])
    if missing:
        Xg = Xg.tolil()
        Xg[:, np.flatnonzero(idx < 0)] = 0
        Xg = Xg.tocsr()
    return Xg.astype(np.float32), missing
