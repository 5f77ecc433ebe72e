"""Everything `gim train` writes into a run directory, each file atomically.

model.pt and model.json (GimRun.save), metrics.csv (the training history) and annotated.h5ad:
the input with the training contexts and their posterior target probabilities. For an input read
in backed mode the cell matrix is never loaded: the file is copied byte for byte (streamed) and
only the small elements that `annotate` changes (obs, var, varm, uns) are rewritten in the copy.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from gimcli import _keys
from gimcli.data.contexts import cell_context_labels, context_labels
from gimcli.data.io import atomic_path, write_h5ad
from gimcli.gimrun import GimRun
from gimcli.provenance import versions
from gimcli.training.batches import validation_cells
from gimcli.training.loop import History

log = logging.getLogger(__name__)


def annotate(adata: ad.AnnData, run: GimRun, train_mask: np.ndarray | None = None) -> ad.AnnData:
    """The input with the training contexts and their posterior target probabilities, as a new
    AnnData that shares the input's cell matrices (X, layers, obsm: written, never changed; a
    copy of X would add the whole matrix to the peak memory of `gim train`) and copies the rest.

    obs['gim_context']: context label of each training cell ('' for cells not trained on);
    varm['gim_target_prob']: genes x contexts posterior (NaN for genes that were not modelled);
    varm['gim_target_logodds']: the same as posterior log-odds, the score to rank targets by (it
    does not saturate where the probability is 1.0);
    uns['gim']: parameters, versions, seed, the context table and diagnostics.
    """
    import copy

    out = ad.AnnData(
        X=adata.X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=copy.deepcopy(dict(adata.uns)),
        obsm=dict(adata.obsm),
        varm={k: adata.varm[k] for k in adata.varm},
        layers=dict(adata.layers),
        obsp=dict(adata.obsp),
        varp=dict(adata.varp),
    )
    meta = run.meta
    tc = run.contexts.astype({"dose": str})
    labels = context_labels(tc, run.cov_keys)
    cell_labels = cell_context_labels(out.obs, meta.keys, run.contexts)
    if train_mask is not None:
        cell_labels[~np.asarray(train_mask, bool)] = ""
    out.obs[_keys.OBS_CONTEXT] = pd.Categorical(cell_labels)
    out.obs[OBS_SPLIT] = pd.Categorical(
        cell_split(cell_labels, labels, train_mask, meta.config), categories=SPLIT_VALUES
    )
    post = np.full((out.n_vars, len(labels)), np.nan, np.float32)
    gi = out.var_names.get_indexer(run.genes)
    if run.posterior is not None:
        post[gi] = run.posterior.T
    out.varm[_keys.VARM_POSTERIOR] = pd.DataFrame(post, index=out.var_names, columns=labels)
    if run.posterior_logodds is not None:
        lo = np.full((out.n_vars, len(labels)), np.nan, np.float32)
        lo[gi] = run.posterior_logodds.T
        out.varm[_keys.VARM_LOG_ODDS] = pd.DataFrame(lo, index=out.var_names, columns=labels)
    out.var[_keys.VAR_MODELED] = np.isin(np.arange(out.n_vars), gi)
    ctab = tc.copy()
    ctab.index = labels
    out.uns[_keys.UNS] = {
        "params": meta.config.to_dict(),
        "keys": {k: ("" if v is None else v) for k, v in meta.keys.to_dict().items()},
        "contexts": ctab.astype({"dose": str}),
        "seed": meta.seed,
        "versions": versions(),
        "input": meta.input_dict(),
        "diagnostics": meta.diagnostics.to_dict(),
        "holdout": {k: _uns_value(v) for k, v in meta.holdout.items()},
    }
    return out


# obs column of annotated.h5ad: what training did with each cell
OBS_SPLIT = "gim_split"
SPLIT_VALUES = ["train", "validation", "heldout", "unused"]


def cell_split(cell_labels, context_labels_, train_mask, config) -> np.ndarray:
    """Per cell: train, validation (held out of the gradient for early stopping), heldout (the
    --holdout-*/--split-key cells that are scored) or unused (in no kept context)."""
    index = {lab: i for i, lab in enumerate(context_labels_)}
    rows = np.flatnonzero(np.ones(len(cell_labels), bool) if train_mask is None else train_mask)
    ctx = np.array([index.get(lab, -1) for lab in np.asarray(cell_labels)[rows]], np.int64)
    val = validation_cells(ctx, len(context_labels_), config.val_fraction, config.seed)
    out = np.full(len(cell_labels), "unused", dtype=object)
    out[rows[ctx >= 0]] = "train"
    out[rows[val]] = "validation"
    if train_mask is not None:
        out[~np.asarray(train_mask, bool)] = "heldout"
    return out


def _uns_value(v):
    """A holdout setting as h5ad uns can store it (lists as comma strings, None as '')."""
    if v is None:
        return ""
    return ",".join(str(x) for x in v) if isinstance(v, list | tuple) else v


def write_annotated_backed(
    adata: ad.AnnData, run: GimRun, path: Path, train_mask: np.ndarray | None = None
) -> None:
    """annotated.h5ad of a backed input: a copy of its file with obs/var/varm/uns rewritten."""
    from anndata.io import write_elem

    # everything but X is in memory in backed mode; the user's varm entries must survive the rewrite
    light = ad.AnnData(
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        uns=dict(adata.uns),
        varm={k: adata.varm[k] for k in adata.varm},
    )
    out = annotate(light, run, train_mask)
    with atomic_path(path) as tmp:
        shutil.copyfile(adata.filename, tmp)
        with h5py.File(tmp, "r+") as f:
            for key, value in (
                ("obs", out.obs),
                ("var", out.var),
                ("varm", dict(out.varm)),
                ("uns", dict(out.uns)),
            ):
                if key in f:
                    del f[key]
                write_elem(f, key, value)


def write_metrics(hist: History, path: Path) -> None:
    """metrics.csv: one row per evaluation of the training loop."""
    with atomic_path(path) as tmp:
        pd.DataFrame(hist.rows).to_csv(tmp, index=False)


def write_run(
    run: GimRun,
    hist: History,
    out: Path,
    *,
    adata: ad.AnnData | None = None,
    train_mask: np.ndarray | None = None,
) -> dict[str, str]:
    """Model, metrics and (when given the input) the annotated input; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    run.save(out)
    paths = {"model": str(out / _keys.MODEL_WEIGHTS), "meta": str(out / _keys.MODEL_META)}
    write_metrics(hist, out / _keys.METRICS)
    paths["metrics"] = str(out / _keys.METRICS)
    if adata is not None and adata.isbacked:  # never load a file that may not fit in memory
        write_annotated_backed(adata, run, out / _keys.ANNOTATED, train_mask)
        paths["annotated"] = str(out / _keys.ANNOTATED)
    elif adata is not None:
        write_h5ad(annotate(adata, run, train_mask), out / _keys.ANNOTATED)
        paths["annotated"] = str(out / _keys.ANNOTATED)
    return paths
