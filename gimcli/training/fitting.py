"""End-to-end fit: AnnData in, a GimRun out (the function the CLI and notebooks both call)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import torch

from gimcli import MODEL_FORMAT_VERSION
from gimcli.config import TrainConfig
from gimcli.data.contexts import Contexts, build_contexts, dose_transform
from gimcli.data.features import FeatureSpec, morgan_fingerprints, numeric_spec
from gimcli.data.preprocess import preprocess
from gimcli.errors import InputError
from gimcli.gimrun import GimRun, versions
from gimcli.model.module import GIMModule
from gimcli.training.batches import TrainData, context_batch, control_standardisation
from gimcli.training.distributed import DataParallel, local_device
from gimcli.training.stats import peak_gpu_bytes, step_data
from gimcli.training.trainer import History, fit

log = logging.getLogger(__name__)

# Cells per chunk when computing posteriors over all training cells (bounds device memory).
_POSTERIOR_CHUNK_CELLS = 50_000


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return torch.device(device)


def component_features(
    obs: pd.DataFrame,
    comp_names: list[str],
    *,
    perturbation_key: str,
    smiles_key: str | None,
    drug_features: pd.DataFrame | None,
    feature_keys: list[str] | None,
    cfg: TrainConfig,
) -> tuple[FeatureSpec, np.ndarray]:
    """One feature row per training component, and the spec to featurise new ones the same way."""
    if sum(x is not None for x in (smiles_key, drug_features, feature_keys)) > 1:
        raise InputError("give only one of --smiles-key, --drug-features, --feature-keys")
    single = obs[perturbation_key].astype(str).str.strip()
    if smiles_key is not None or drug_features is not None:
        if smiles_key is not None:
            if smiles_key not in obs.columns:
                raise InputError(
                    f"SMILES column {smiles_key!r} not in obs (have {list(obs.columns)[:20]})"
                )
            # SMILES may contain '+', so only single-perturbation rows give a component's SMILES.
            rows = obs.loc[single.isin(comp_names), [smiles_key]].assign(_c=single)
            rows = rows[rows[smiles_key].notna() & (rows[smiles_key].astype(str).str.strip() != "")]
            smiles = rows.drop_duplicates("_c").set_index("_c")[smiles_key].astype(str).to_dict()
        else:
            smiles = dict(zip(drug_features["name"], drug_features["smiles"], strict=True))
        missing = [c for c in comp_names if c not in smiles or pd.isna(smiles[c])]
        if missing:
            src = f"obs[{smiles_key!r}]" if smiles_key else "--drug-features"
            raise InputError(
                f"no SMILES in {src} for perturbation(s) {missing[:10]}"
                + (" ..." if len(missing) > 10 else "")
            )
        fps = morgan_fingerprints(
            {c: smiles[c] for c in comp_names},
            radius=cfg.fp_radius,
            n_bits=cfg.fp_bits,
            chirality=cfg.fp_chirality,
        )
        spec = FeatureSpec(
            kind="smiles",
            components=comp_names,
            radius=cfg.fp_radius,
            n_bits=cfg.fp_bits,
            chirality=cfg.fp_chirality,
            smiles={c: str(smiles[c]) for c in comp_names},
        )
        return spec, np.stack([fps[c] for c in comp_names])
    if feature_keys:
        for k in feature_keys:
            if k not in obs.columns:
                raise InputError(f"feature column {k!r} not in obs (have {list(obs.columns)[:20]})")
            if not pd.api.types.is_numeric_dtype(obs[k]):
                raise InputError(f"feature column {k!r} is not numeric")
        sub = obs.loc[single.isin(comp_names), feature_keys].assign(_c=single)
        vals = sub.groupby("_c", observed=True)[feature_keys].mean()
        vals = vals[vals.notna().all(1)]
        missing = [c for c in comp_names if c not in vals.index]
        if missing:
            raise InputError(
                f"no values in feature columns {feature_keys} for perturbation(s) {missing[:10]}"
            )
        values = {c: vals.loc[c].to_numpy(np.float32) for c in comp_names}
        if not np.isfinite(np.stack(list(values.values()))).all():
            raise InputError(f"feature columns {feature_keys} contain infinite values")
        spec = numeric_spec(feature_keys, values)
        feats = spec.featurize_numeric(values)
        return spec, np.stack([feats[c] for c in comp_names])
    spec = FeatureSpec(kind="identity", components=comp_names)
    return spec, np.eye(len(comp_names), dtype=np.float32)


def train(
    adata: ad.AnnData,
    *,
    perturbation_key: str = "condition",
    control: str = "control",
    dose_key: str | None = None,
    covariate_keys: list[str] | None = None,
    smiles_key: str | None = None,
    drug_features: pd.DataFrame | None = None,
    feature_keys: list[str] | None = None,
    counts_layer: str | None = None,
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    train_mask: np.ndarray | None = None,
    input_info: dict | None = None,
    progress: Callable[[int, dict], None] | None = None,
    checkpoint=None,
) -> tuple[GimRun, History]:
    """Preprocess, build contexts and features, fit the GIM, and compute training posteriors.

    The input AnnData is not modified. `train_mask` (bool per cell) restricts training to a
    subset, e.g. all but held-out conditions. `checkpoint` (gimcli.training.checkpoint.Checkpointer)
    saves and restores the training state.
    """
    t_start = time.perf_counter()
    dev = local_device(resolve_device(device))
    ddp = DataParallel.from_env(dev)  # under torchrun: contexts sharded over processes
    cfg = config
    data = adata if train_mask is None else adata[np.asarray(train_mask, bool)]
    ctx = build_contexts(
        data.obs,
        perturbation_key=perturbation_key,
        control=control,
        dose_key=dose_key,
        covariate_keys=covariate_keys,
        min_cells=cfg.min_cells_per_context,
    )
    if (~ctx.table["is_control"]).sum() == 0:
        raise InputError(
            f"no perturbed cells: every cell in obs[{perturbation_key!r}] is {control!r}"
        )
    spec, comp_feats = component_features(
        data.obs,
        ctx.comp_names,
        perturbation_key=perturbation_key,
        smiles_key=smiles_key,
        drug_features=drug_features,
        feature_keys=feature_keys,
        cfg=cfg,
    )
    force = ctx.comp_names if spec.kind == "identity" else None
    X, pinfo = preprocess(
        data,
        counts_layer=counts_layer,
        n_top_genes=cfg.n_top_genes,
        hvg_flavor=cfg.hvg_flavor,
        target_sum=cfg.target_sum,
        force_genes=force,
    )
    gene_of = {g: i for i, g in enumerate(pinfo.genes)}
    comp_gene = np.array(
        [gene_of.get(c, -1) if spec.kind == "identity" else -1 for c in ctx.comp_names], np.int64
    )

    cell_ctx = ctx.cell_context
    cell_group = np.where(cell_ctx >= 0, ctx.cov_group[np.maximum(cell_ctx, 0)], 0)
    is_ctrl_cell = (cell_ctx >= 0) & ctx.table["is_control"].to_numpy()[np.maximum(cell_ctx, 0)]
    mean, sd = control_standardisation(X, cell_group, is_ctrl_cell, len(ctx.groups), cell_ctx)
    ref_rows = reference_controls(cell_group, is_ctrl_cell, len(ctx.groups), seed=cfg.seed)
    ref_cells = X[ref_rows].toarray().astype(np.float32)

    max_dose = float(ctx.comp_dose.max()) if ctx.comp_dose.size else 1.0
    dose_scale = float(np.log10(1.0 + max_dose)) if max_dose > 0 else 1.0
    cb = context_batch(
        comp_feats,
        ctx.components,
        dose_transform(ctx.comp_dose, dose_scale),
        ctx.cov_onehot()[ctx.cov_group],
        comp_gene,
    )
    tdata = TrainData(
        X,
        cell_ctx,
        cb,
        cell_group,
        mean,
        sd,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        device=dev,
    )
    shard = ddp.shard(tdata.split["train"][2] + tdata.split["val"][2]) if ddp else None
    tdata, t_prep = step_data(tdata, cfg, contexts=shard), time.perf_counter() - t_start
    n_cov = cb.cov.shape[1]
    log.info(
        "training on %d cells, %d contexts (%d components), %d genes, device %s",
        int((cell_ctx >= 0).sum()),
        ctx.n_contexts,
        len(ctx.comp_names),
        len(pinfo.genes),
        dev,
    )

    def new_module() -> GIMModule:
        return GIMModule(
            len(pinfo.genes),
            comp_feats.shape[1],
            n_cov,
            hidden=cfg.hidden,
            n_layers=cfg.n_layers,
            fix_graph=cfg.fix_graph,
            dose_response=cfg.dose_response,
            shift_sd=cfg.shift_sd,
            spike_sd=cfg.spike_sd,
        ).to(dev, torch.float32)  # whatever the default dtype

    best: tuple[float, GIMModule, History] | None = None
    if checkpoint is not None and (prior := checkpoint.prior_best()) is not None:
        best = (prior[1]["best_val"], new_module(), History(**prior[1]))
        best[1].load_state_dict(prior[0])
    for r in range(checkpoint.first_restart if checkpoint else 0, cfg.restarts):
        torch.manual_seed(cfg.seed + r)
        module = new_module()
        if ddp:
            ddp.broadcast(module)
        if checkpoint is not None:
            checkpoint.begin_restart(r, best and (best[1].state_dict(), vars(best[2])))
        hist = fit(
            module,
            tdata,
            cfg,
            seed=cfg.seed + r,
            progress=progress,
            checkpoint=checkpoint,
            sync=ddp,
        )
        log.info(
            "restart %d: best validation objective %.4f at step %d",
            r,
            hist.best_val,
            hist.best_step,
        )
        if best is None or hist.best_val < best[0]:
            best = (hist.best_val, module, hist)
    _, module, hist = best
    if ddp:
        ddp.close()
    module.eval()
    posterior, posterior_shift, posterior_spike = training_posterior(module, tdata, cfg)

    meta = {
        "format_version": MODEL_FORMAT_VERSION,
        "versions": versions(),
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "input": input_info or {},
        "keys": {
            "perturbation_key": perturbation_key,
            "control": control,
            "dose_key": dose_key,
            "covariate_keys": list(covariate_keys or []),
            "smiles_key": smiles_key,
            "feature_keys": list(feature_keys or []),
            "counts_layer": counts_layer,
        },
        "preprocess": pinfo.to_dict(),
        "covariates": {
            "keys": ctx.cov_keys,
            "categories": ctx.cov_categories,
            "groups": ctx.groups.to_dict("records") if ctx.cov_keys else [],
        },
        "features": spec.to_dict(),
        "n_features": int(comp_feats.shape[1]),
        "n_cov": int(n_cov),
        "dose_scale": dose_scale,
        "components": ctx.comp_names,
        "comp_gene": comp_gene.tolist(),
        "contexts": _jsonable_table(ctx.table),
        "training": {
            "best_step": hist.best_step,
            "best_val_nll": hist.best_val,
            "stopped_early": hist.stopped_early,
            "steps_run": hist.rows[-1]["step"] + 1 if hist.rows else 0,
            "train_seconds": hist.seconds,
            "total_seconds": time.perf_counter() - t_start,
            "device": str(dev),
            "prepare_seconds": t_prep,
            "peak_gpu_bytes": peak_gpu_bytes(dev),
            "n_cells": int((cell_ctx >= 0).sum()),
        },
        "diagnostics": module.sem.diagnostics(),
        "history": hist.rows,
    }
    run = GimRun(
        module=module.cpu(),
        meta=meta,
        comp_feats=comp_feats,
        std_mean=mean,
        std_sd=sd,
        posterior=posterior,
        posterior_shift=posterior_shift,
        posterior_spike=posterior_spike,
        ref_cells=ref_cells,
        ref_group=cell_group[ref_rows].astype(np.int64),
    )
    return run, hist


# Control cells kept per covariate group in model.pt: predicted cells are these cells moved by the
# propagated intervention (the SEM's counterfactual), so they keep the real noise distribution.
N_REFERENCE_CONTROLS = 500


def reference_controls(
    cell_group: np.ndarray, is_ctrl_cell: np.ndarray, n_groups: int, *, seed: int
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        idx = np.flatnonzero(is_ctrl_cell & (cell_group == g))
        rows.append(np.sort(rng.choice(idx, min(len(idx), N_REFERENCE_CONTROLS), replace=False)))
    return np.concatenate(rows)


def _jsonable_table(t: pd.DataFrame) -> list[dict]:
    t = t.copy()
    t["n_cells"] = t["n_cells"].astype(int)
    t["is_control"] = t["is_control"].astype(bool)
    return t.to_dict("records")


@torch.no_grad()
def training_posterior(
    module: GIMModule, data: TrainData, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per training context and gene: the exact posterior probability that it is a direct target,
    and the posterior mean of its direct shift u if targeted and if not (standardised units)."""
    total = data.split["val"][2] + data.split["train"][2]
    out = np.zeros((data.K, module.sem.d), np.float32)
    shift = np.zeros((data.K, module.sem.d), np.float32)
    spike = np.zeros((data.K, module.sem.d), np.float32)
    start = 0
    while start < data.K:
        cum = np.cumsum(total[start:])
        stop = start + max(1, int(np.searchsorted(cum, _POSTERIOR_CHUNK_CELLS, side="right")))
        ids = np.arange(start, stop)
        m = module.posterior(data.all_cells(ids), target_cost=cfg.target_cost)
        out[ids] = m.post_any.cpu().numpy()
        shift[ids] = (m.u_target / m.post_any.clamp_min(1e-6)).cpu().numpy()
        spike[ids] = m.u_null.cpu().numpy()
        start = stop
    return out, shift, spike


__all__ = ["train", "resolve_device", "Contexts"]
