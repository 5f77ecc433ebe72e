"""Everything `gim train` writes into a run directory, each file atomically."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from gimcli import _keys
from gimcli.data.io import atomic_path, write_h5ad
from gimcli.gimrun import GimRun, context_label, versions
from gimcli.training.trainer import History

log = logging.getLogger(__name__)


def annotate(adata: ad.AnnData, run: GimRun, train_mask: np.ndarray | None = None) -> ad.AnnData:
    """A copy of the input with the training contexts and their posterior target probabilities.

    obs['gim_context']: context label of each training cell ('' for cells not trained on);
    varm['gim_target_prob']: genes x contexts posterior (NaN for genes that were not modelled);
    uns['gim']: parameters, versions, seed, the context table and diagnostics.
    """
    out = adata.copy()
    keys, cov_keys = run.meta["keys"], run.cov_keys
    tc = run.contexts.astype({"dose": str})
    labels = [context_label(r, cov_keys) for _, r in tc.iterrows()]
    cell_labels = cell_context_labels(out.obs, run, labels)
    if train_mask is not None:
        cell_labels[~np.asarray(train_mask, bool)] = ""
    out.obs[_keys.OBS_CONTEXT] = pd.Categorical(cell_labels)
    post = np.full((out.n_vars, len(labels)), np.nan, np.float32)
    gi = out.var_names.get_indexer(run.genes)
    if run.posterior is not None:
        post[gi] = run.posterior.T
    out.varm[_keys.VARM_POSTERIOR] = pd.DataFrame(post, index=out.var_names, columns=labels)
    out.var[_keys.VAR_MODELED] = np.isin(np.arange(out.n_vars), gi)
    ctab = tc.copy()
    ctab.index = labels
    out.uns[_keys.UNS] = {
        "params": run.meta["config"],
        "keys": {k: ("" if v is None else v) for k, v in keys.items()},
        "contexts": ctab.astype({"dose": str}),
        "seed": run.meta["seed"],
        "versions": versions(),
        "input": run.meta.get("input", {}),
        "diagnostics": run.meta["diagnostics"],
    }
    return out


def cell_context_labels(obs: pd.DataFrame, run: GimRun, labels: list[str]) -> np.ndarray:
    """The training-context label of every cell ('' if none), by a table join, not a cell loop."""
    from gimcli.data.contexts import canonical_doses

    keys, cov_keys = run.meta["keys"], run.cov_keys
    pert = obs[keys["perturbation_key"]].astype(str).str.strip().to_numpy()
    raw = obs[keys["dose_key"]].astype(str).to_numpy() if keys["dose_key"] else None
    # a dose the model never saw (unparseable) simply gets no label
    cells = pd.DataFrame(
        {
            "condition": pert,
            "dose": canonical_doses(
                pert, raw, control=keys["control"], dose_key=keys["dose_key"], strict=False
            ),
        }
    )
    for k in cov_keys:
        cells[k] = obs[k].astype(str).to_numpy()
    table = (
        run.contexts.astype({"dose": str})[["condition", "dose", *cov_keys]]
        .astype(str)
        .assign(_label=labels)
    )
    merged = cells.merge(table, on=["condition", "dose", *cov_keys], how="left")
    return merged["_label"].fillna("").to_numpy(dtype=object)


def write_metrics(hist: History, path: Path) -> None:
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
        from gimcli.training.annotate_backed import write_annotated_backed

        write_annotated_backed(adata, run, out / _keys.ANNOTATED, train_mask)
        paths["annotated"] = str(out / _keys.ANNOTATED)
    elif adata is not None:
        write_h5ad(annotate(adata, run, train_mask), out / _keys.ANNOTATED)
        paths["annotated"] = str(out / _keys.ANNOTATED)
    return paths
