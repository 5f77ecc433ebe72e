"""From an AnnData to a log-normalised CSR matrix over the modelled genes (scanpy underneath)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from gimcli.data.checks import check_expression
from gimcli.data.checks import input_kind as input_kind_of
from gimcli.data.chunked import preprocess_chunked, with_forced_genes
from gimcli.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessInfo:
    """What preprocessing did (model.json "preprocess"): new data are transformed the same way."""

    source: str  # "X" or "layers[<name>]"
    is_counts: bool
    target_sum: float | None
    log1p: bool
    hvg_flavor: str | None
    n_top_genes: int
    genes: list[str] = field(default_factory=list)
    # column of each modelled gene in the input's var_names (predictions line up with the input's
    # full gene set through it); [] in runs made before it was recorded
    gene_index: list[int] = field(default_factory=list)
    # counts | log | continuous (--input, resolved); "" in runs made before it was recorded
    kind: str = ""
    # genes kept only if detected (> 0) in at least this many cells (--min-cells; 0: no filter)
    min_cells: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess(
    adata: ad.AnnData,
    *,
    counts_layer: str | None = None,
    n_top_genes: int = 2000,
    hvg_flavor: str = "seurat",
    target_sum: float = 1e4,
    force_genes: list[str] | None = None,
    input_kind: str = "auto",
    min_cells: int = 0,
) -> tuple[sp.csr_matrix, PreprocessInfo]:
    """Log-normalise (when counts) and select genes; the input AnnData is never modified.

    Returns a float32 CSR matrix (cells x selected genes, log1p scale) and what was done.
    `force_genes` (e.g. the genes a CRISPR screen perturbs) are kept even if not highly variable,
    so that their own condition can name them as direct targets. A backed AnnData is read in
    chunks (gimcli.data.chunked), with the same values.
    """
    X, source = expression_matrix(adata, counts_layer)
    options = {"n_top_genes": n_top_genes, "target_sum": target_sum, "force_genes": force_genes}
    if adata.isbacked and (input_kind == "continuous" or min_cells):
        raise InputError("--input continuous and --min-cells are not available with --backed yet")
    if adata.isbacked:  # on disk: never the whole matrix in memory
        Xout, is_counts, keep = preprocess_chunked(
            adata, X, source=source, counts_layer=counts_layer, hvg_flavor=hvg_flavor, **options
        )
        how = " in chunks"
        kind = "counts" if is_counts else "log"
    else:
        X = _csr32_view(X)
        names = {"obs_names": adata.obs_names, "var_names": adata.var_names}
        kind = input_kind_of(
            X, input_kind, where=source, counts_layer=counts_layer is not None, **names
        )
        is_counts = kind == "counts"
        options["min_cells"] = min_cells
        if is_counts:  # normalised chunk by chunk into a new data array: X itself is not touched
            X = _normalised_copy(X, options["target_sum"])
        Xout, keep = _normalise_and_select(
            X, adata.var_names, "log" if is_counts else kind, hvg_flavor, options
        )
        how = ""
    genes = adata.var_names if keep is None else adata.var_names[keep]
    info = PreprocessInfo(
        source=source,
        is_counts=is_counts,
        target_sum=target_sum if is_counts else None,
        log1p=is_counts,
        hvg_flavor=None if keep is None else ("variance" if kind == "continuous" else hvg_flavor),
        n_top_genes=n_top_genes,
        genes=genes.tolist(),
        gene_index=(np.arange(adata.n_vars) if keep is None else np.flatnonzero(keep)).tolist(),
        kind=kind,
        min_cells=min_cells,
    )
    log.info(
        "preprocessed %s%s: %s, %d of %d genes kept",
        source,
        how,
        {
            "counts": "counts -> normalize_total+log1p",
            "log": "log-normalised as given",
            "continuous": "continuous as given (no normalisation; genes by variance)",
        }[kind],
        len(info.genes),
        adata.n_vars,
    )
    return Xout, info


def _normalise_and_select(X, var_names, kind: str, flavor: str, options: dict):
    """scanpy on the whole matrix (X is this module's own copy, so scanpy may work in place):
    the CSR over the kept genes and the kept-gene mask (None when every gene is kept).

    Counts are normalised (normalize_total + log1p); log and continuous data are used as given.
    Genes detected in fewer than `min_cells` cells go first; then the `n_top_genes` highly
    variable ones: scanpy's `flavor` on log data, plain variance on continuous data (seurat's
    dispersions are computed on expm1 of log data, which means nothing for other scales)."""
    import scanpy as sc

    tmp = ad.AnnData(X=X, var=pd.DataFrame(index=var_names))
    if kind == "counts":
        sc.pp.normalize_total(tmp, target_sum=options["target_sum"])
        sc.pp.log1p(tmp)
    forced = options["force_genes"]
    keep = np.ones(tmp.n_vars, bool)
    if options.get("min_cells", 0) > 0:
        detected = np.asarray((sp.csr_matrix(tmp.X) != 0).sum(0)).ravel()
        keep = with_forced_genes(detected >= options["min_cells"], tmp.var_names, forced)
        log.info(
            "--min-cells %d: %d of %d genes are detected in fewer cells and dropped",
            options["min_cells"],
            int((~keep).sum()),
            tmp.n_vars,
        )
        if not keep.any():
            raise InputError(f"--min-cells {options['min_cells']}: no gene is detected that often")
    if keep.sum() > options["n_top_genes"]:
        sub = tmp[:, keep].copy()
        if kind == "continuous":
            var = np.asarray(sub.X.toarray().var(0) if sp.issparse(sub.X) else sub.X.var(0))
            hvg = np.zeros(sub.n_vars, bool)
            hvg[np.argsort(-var, kind="stable")[: options["n_top_genes"]]] = True
        else:
            sc.pp.highly_variable_genes(sub, n_top_genes=options["n_top_genes"], flavor=flavor)
            hvg = sub.var["highly_variable"].to_numpy()
        full = np.zeros(tmp.n_vars, bool)
        full[np.flatnonzero(keep)[hvg]] = True
        keep = with_forced_genes(full, tmp.var_names, forced)
    if keep.all():
        return sp.csr_matrix(tmp.X, dtype=np.float32), None
    return sp.csr_matrix(tmp[:, keep].X, dtype=np.float32), keep


def _csr32_view(X) -> sp.csr_matrix:
    """X as float32 CSR, without a copy when it already is one (read only from here on)."""
    if sp.issparse(X) and X.format == "csr" and X.dtype == np.float32:
        return X
    return as_csr32(X)


# Rows per chunk of the in-memory normalisation (bounds scanpy's temporaries to a chunk).
_NORM_CHUNK_ROWS = 8_192


def _normalised_copy(X: sp.csr_matrix, target_sum: float) -> sp.csr_matrix:
    """normalize_total + log1p of X (scanpy's, per chunk of cells: both act on each cell alone,
    so the values are those of the whole matrix) as a CSR that shares X's indices and indptr
    (the sparsity pattern does not change) with a new data array: half of X's bytes instead of
    a full copy plus scanpy's whole-matrix temporaries."""
    from gimcli.data.chunked import _normalise

    if not X.has_sorted_indices:  # the pattern is shared: it must be canonical as it stands
        X = X.copy()
        X.sort_indices()
    data = np.empty_like(X.data)
    for lo in range(0, X.shape[0], _NORM_CHUNK_ROWS):
        hi = min(lo + _NORM_CHUNK_ROWS, X.shape[0])
        block = _normalise(X[lo:hi], is_counts=True, target_sum=target_sum)
        a, b = X.indptr[lo], X.indptr[hi]
        if block.nnz != b - a:  # e.g. a stored zero dropped: no shared pattern; copy whole
            return _normalise(X, is_counts=True, target_sum=target_sum).tocsr()
        data[a:b] = block.data
    return sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape, copy=False)


def expression_matrix(adata: ad.AnnData, counts_layer: str | None):
    """(matrix, its name for messages): `layers[counts_layer]` when given, else X."""
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
    return X, source


def as_csr32(X) -> sp.csr_matrix:
    """A float32 CSR copy of a dense or sparse matrix."""
    return (
        sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else X.tocsr().astype(np.float32)
    )


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
    InputError listing the missing genes when more than `max_missing` of them are absent.
    """
    import scanpy as sc

    if counts_layer and counts_layer not in adata.layers:
        raise InputError(f"{where}: no layer {counts_layer!r} (have {sorted(adata.layers)})")
    X = as_csr32(adata.layers[counts_layer] if counts_layer else adata.X)
    src = f"{where}: " + (f"layers[{counts_layer}]" if counts_layer else "X")
    names = {"obs_names": adata.obs_names, "var_names": adata.var_names}
    if info.kind == "continuous":  # used as given, like the training data
        input_kind_of(X, "continuous", where=src, **names)
        is_counts = False
    else:
        is_counts = check_expression(X, where=src, **names)
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
        raise InputError(
            f"{where}: {len(missing)} of the model's {len(info.genes)} genes are missing from "
            "var_names "
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
