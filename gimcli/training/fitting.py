"""End-to-end fit: AnnData in, a GimRun out (the function the CLI and notebooks both call).

Preprocess, build contexts and features, standardise, optimise (with restarts), then compute
the training posteriors and record the run (gimcli.schema.RunMeta).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gimcli.config import DataKeys, TrainConfig
from gimcli.data.contexts import Contexts, build_contexts, dose_transform
from gimcli.data.features import FeatureSpec, perturbed_genes, training_features
from gimcli.data.preprocess import PreprocessInfo, preprocess
from gimcli.data.sharded import open_shard, select_genes
from gimcli.errors import InputError
from gimcli.gimrun import GimRun
from gimcli.model.module import ContextBatch, GIMModule
from gimcli.provenance import versions
from gimcli.schema import MODEL_FORMAT_VERSION, Covariates, InputInfo, RunMeta, TrainingSummary
from gimcli.training.batches import TrainData, validation_cells
from gimcli.training.distributed import (
    DataParallel,
    all_reduce_sum,
    local_device,
    peak_rss_per_rank,
    rank_and_world,
)
from gimcli.training.loop import History, optimise
from gimcli.training.sharded import ShardedStats, sharded_statistics
from gimcli.training.standardisation import control_standardisation
from gimcli.training.stats import peak_gpu_bytes, step_data

log = logging.getLogger(__name__)

# Cells per chunk when computing posteriors over all training cells (bounds device memory).
_POSTERIOR_CHUNK_CELLS = 50_000
# Control cells kept per covariate group in model.pt: predicted cells are these cells moved by the
# propagated intervention (the SEM's counterfactual), so they keep the real noise distribution.
N_REFERENCE_CONTROLS = 500


def resolve_device(device: str) -> torch.device:
    """'auto' (CUDA when there is one), 'cpu' or 'cuda[:N]'; refuses CUDA where there is none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"--device {device!r}: expected auto, cpu or cuda[:N]")
    return torch.device(device)


def fit_run(
    adata: ad.AnnData,
    *,
    keys: DataKeys | None = None,
    drug_features: pd.DataFrame | None = None,
    config: TrainConfig | None = None,
    device: str = "auto",
    train_mask: np.ndarray | None = None,
    input_info: InputInfo | None = None,
    progress: Callable[[int, dict], None] | None = None,
    checkpoint=None,
) -> tuple[GimRun, History]:
    """Fit a GIM to a screen: preprocess, build contexts and features, optimise, and compute the
    training posteriors.

    Parameters
    ----------
    adata
        Cells x genes (counts or log-normalised); not modified.
    keys
        Where the screen keeps perturbations, doses, covariates, features and counts.
    drug_features
        A table (name, smiles) describing the drugs, instead of a SMILES column.
    config
        Training options (TrainConfig() by default).
    device
        'auto', 'cpu' or 'cuda[:N]'.
    train_mask
        Bool per cell: train on these cells only (e.g. all but held-out conditions).
    input_info
        The input file's path, hash and shape, recorded in the run.
    progress
        Called as progress(step, row) at every evaluation.
    checkpoint
        A gimcli.training.checkpoint.Checkpointer: saves and restores the training state.

    Returns
    -------
    The run and the training history of the best restart.
    """
    t_start = time.perf_counter()
    keys, cfg = keys or DataKeys(), config or TrainConfig()
    dev = local_device(resolve_device(device))
    ddp = DataParallel.from_env(dev)  # under torchrun: contexts sharded over processes
    # held-out knock-outs' genes stay modelled, so that they can be predicted (GimRun, unseen rule)
    held = None if train_mask is None else adata.obs[keys.perturbation_key][~np.asarray(train_mask)]
    also = _components_of(held, keys)
    if sharded_reading(adata, cfg):
        prep, tdata = prepare_sharded(
            adata,
            keys,
            drug_features=drug_features,
            config=cfg,
            train_mask=train_mask,
            also_perturbed=also,
            ddp=ddp,
            device=dev,
        )
    else:
        data = adata if train_mask is None else adata[np.asarray(train_mask, bool)]
        prep = prepare(data, keys, drug_features=drug_features, config=cfg, also_perturbed=also)
        tdata = TrainData(
            prep.X,
            prep.contexts.cell_context,
            prep.context_batch,
            prep.cell_group,
            prep.std_mean,
            prep.std_sd,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            device=dev,
        )
        shard = ddp.shard(tdata.split["train"][2] + tdata.split["val"][2]) if ddp else None
        tdata = step_data(tdata, cfg, contexts=shard)
    t_prep = time.perf_counter() - t_start
    log.info(
        "training on %d cells, %d contexts (%d components), %d genes, device %s",
        prep.n_cells,
        prep.contexts.n_contexts,
        len(prep.contexts.comp_names),
        len(prep.preprocess.genes),
        dev,
    )

    def new_module() -> GIMModule:
        d, n_feat, n_cov = len(prep.preprocess.genes), prep.comp_feats.shape[1], prep.n_cov
        module = GIMModule.from_config(cfg, d=d, n_features=n_feat, n_cov=n_cov)
        return module.to(dev, torch.float32)  # whatever the default dtype

    module, hist = _best_restart(new_module, tdata, cfg, ddp, progress, checkpoint)
    rss = peak_rss_per_rank()
    if ddp:
        ddp.close()
    module.eval()
    posterior, posterior_shift, posterior_spike, posterior_logodds, context_direct = (
        training_posterior(module, tdata, cfg)
    )
    summary = TrainingSummary(
        best_step=hist.best_step,
        best_val_nll=hist.best_val,
        stopped_early=hist.stopped_early,
        steps_run=hist.rows[-1]["step"] + 1 if hist.rows else 0,
        train_seconds=hist.seconds,
        total_seconds=time.perf_counter() - t_start,
        device=str(dev),
        prepare_seconds=t_prep,
        peak_gpu_bytes=peak_gpu_bytes(dev),
        n_cells=prep.n_cells,
        threads=torch.get_num_threads(),
        peak_rss_bytes=rss,
        stage_seconds=prep.stage_seconds,
    )
    run = GimRun(
        module=module.cpu(),
        meta=prep.run_meta(keys, cfg, input_info, summary, module, hist),
        comp_feats=prep.comp_feats,
        std_mean=prep.std_mean,
        std_sd=prep.std_sd,
        posterior=posterior,
        posterior_shift=posterior_shift,
        posterior_spike=posterior_spike,
        posterior_logodds=posterior_logodds,
        context_direct=context_direct,
        ref_cells=prep.ref_cells(),
        ref_group=prep.cell_group[prep.ref_rows].astype(np.int64),
    )
    return run, hist


@dataclass
class Prepared:
    """A screen made ready for training: cells, contexts, features and standardisation."""

    X: sp.csr_matrix | None  # log-normalised cells x modelled genes (None: read in shards)
    preprocess: PreprocessInfo
    contexts: Contexts
    spec: FeatureSpec
    comp_feats: np.ndarray  # (components, F)
    comp_gene: np.ndarray  # gene index of each component (identity features), else -1
    cell_group: np.ndarray  # covariate group of each cell
    std_mean: np.ndarray  # (G, d)
    std_sd: np.ndarray  # (G, d)
    ref_rows: np.ndarray  # the reference control cells kept in model.pt
    dose_scale: float
    context_batch: ContextBatch
    ref_X: np.ndarray | None = None  # the reference cells, dense, when X is not kept
    stage_seconds: dict[str, float] | None = None  # of sharded reading: genes, statistics

    def ref_cells(self) -> np.ndarray:
        if self.ref_X is not None:
            return self.ref_X
        return self.X[self.ref_rows].toarray().astype(np.float32)

    @property
    def n_cells(self) -> int:
        return int((self.contexts.cell_context >= 0).sum())

    @property
    def n_cov(self) -> int:
        return int(self.context_batch.cov.shape[1])

    def run_meta(self, keys, cfg, input_info, summary, module, hist) -> RunMeta:
        ctx = self.contexts
        return RunMeta(
            format_version=MODEL_FORMAT_VERSION,
            versions=versions(),
            seed=cfg.seed,
            config=cfg,
            input=input_info,
            keys=keys,
            preprocess=self.preprocess,
            covariates=Covariates(
                keys=ctx.cov_keys,
                categories=ctx.cov_categories,
                groups=ctx.groups.to_dict("records") if ctx.cov_keys else [],
            ),
            features=self.spec,
            n_features=int(self.comp_feats.shape[1]),
            n_cov=self.n_cov,
            dose_scale=self.dose_scale,
            components=ctx.comp_names,
            comp_gene=self.comp_gene.tolist(),
            contexts=_jsonable_table(ctx.table),
            training=summary,
            diagnostics=module.sem.diagnostics(),
            history=hist.rows,
        )


def _components_of(perturbations: pd.Series | None, keys: DataKeys) -> list[str]:
    if perturbations is None:
        return []
    rule = keys.combinations
    names = {c for p in perturbations.astype(str).unique() for c in rule.split(p)}
    return sorted(names)


def prepare(
    data: ad.AnnData,
    keys: DataKeys,
    *,
    drug_features: pd.DataFrame | None,
    config: TrainConfig,
    also_perturbed: list[str] | None = None,
) -> Prepared:
    """Contexts, features, preprocessing and the standardisation of the cells of `data`;
    `also_perturbed`: names of perturbations outside `data` whose genes (identity features) are
    kept among the modelled genes."""
    cfg = config
    ctx, spec, comp_feats = _contexts_and_features(data.obs, keys, drug_features, cfg)
    target_gene, forced = _perturbed_genes(
        ctx, spec, data.var_names, data.obs, keys, also_perturbed
    )
    X, pinfo = preprocess(
        data,
        counts_layer=keys.counts_layer,
        n_top_genes=cfg.n_top_genes,
        hvg_flavor=cfg.hvg_flavor,
        target_sum=cfg.target_sum,
        force_genes=forced,
        input_kind=keys.input_kind,
        min_cells=keys.min_cells,
    )
    cell_group, is_ctrl_cell = _cell_groups(ctx)
    mean, sd = control_standardisation(
        X, cell_group, is_ctrl_cell, len(ctx.groups), ctx.cell_context
    )
    return _prepared(
        X, pinfo, ctx, spec, comp_feats, cell_group, is_ctrl_cell, mean, sd, cfg, target_gene
    )


def _perturbed_genes(ctx, spec, var_names, obs, keys, also_perturbed):
    """Identity features: the measured gene of each training component (its likely target) and
    the genes kept among the modelled ones whatever their variance: those, and the genes of the
    held-out knock-outs `also_perturbed` (name or guide stem), so that these can be predicted."""
    if spec.kind != "identity":
        return {}, None
    target_gene = perturbed_genes(ctx.comp_names, var_names, obs=obs, keys=keys)
    held = perturbed_genes(also_perturbed or [], var_names)
    return target_gene, sorted({*target_gene.values(), *held.values()})


def _cell_groups(ctx: Contexts) -> tuple[np.ndarray, np.ndarray]:
    """Covariate group of each cell, and whether it is a control cell of a kept context."""
    cell_ctx = ctx.cell_context
    cell_group = np.where(cell_ctx >= 0, ctx.cov_group[np.maximum(cell_ctx, 0)], 0)
    is_ctrl_cell = (cell_ctx >= 0) & ctx.table["is_control"].to_numpy()[np.maximum(cell_ctx, 0)]
    return cell_group, is_ctrl_cell


def _contexts_and_features(obs: pd.DataFrame, keys, drug_features, cfg):
    """The contexts and the features of their components: from obs alone."""
    ctx = build_contexts(
        obs,
        perturbation_key=keys.perturbation_key,
        control=keys.control,
        dose_key=keys.dose_key,
        covariate_keys=list(keys.covariate_keys) or None,
        min_cells=cfg.min_cells_per_context,
        combinations=keys.combinations,
    )
    if (~ctx.table["is_control"]).sum() == 0:
        raise InputError(
            f"no perturbed cells: every cell in obs[{keys.perturbation_key!r}] is {keys.control!r}"
        )
    spec, comp_feats = training_features(
        obs, ctx.comp_names, keys=keys, drug_features=drug_features, config=cfg
    )
    return ctx, spec, comp_feats


def _prepared(
    X, pinfo, ctx, spec, comp_feats, cell_group, is_ctrl_cell, mean, sd, cfg, target_gene
):
    gene_of = {g: i for i, g in enumerate(pinfo.genes)}
    comp_gene = np.array(
        [gene_of.get(target_gene.get(c, ""), -1) for c in ctx.comp_names], np.int64
    )
    max_dose = float(ctx.comp_dose.max()) if ctx.comp_dose.size else 1.0
    dose_scale = float(np.log10(1.0 + max_dose)) if max_dose > 0 else 1.0
    cb = ContextBatch.gather(
        comp_feats,
        ctx.components,
        dose_transform(ctx.comp_dose, dose_scale),
        ctx.cov_onehot()[ctx.cov_group],
        comp_gene,
    )
    return Prepared(
        X=X,
        preprocess=pinfo,
        contexts=ctx,
        spec=spec,
        comp_feats=comp_feats,
        comp_gene=comp_gene,
        cell_group=cell_group,
        std_mean=mean,
        std_sd=sd,
        ref_rows=reference_controls(cell_group, is_ctrl_cell, len(ctx.groups), seed=cfg.seed),
        dose_scale=dose_scale,
        context_batch=cb,
    )


def sharded_reading(adata: ad.AnnData, cfg: TrainConfig) -> bool:
    """Whether each process reads only its rows of the file (gimcli.training.sharded): a backed
    input (`--backed`; under torchrun always) trained with full-data statistics. Sampled batches
    need random access to every cell, so they keep the whole modelled matrix in memory."""
    if not adata.isbacked:
        return False
    if cfg.batching != "full":
        log.info("--batching %s reads the modelled genes of every cell into memory", cfg.batching)
        return False
    return True


def prepare_sharded(
    adata: ad.AnnData,
    keys: DataKeys,
    *,
    drug_features: pd.DataFrame | None,
    config: TrainConfig,
    train_mask: np.ndarray | None,
    ddp: DataParallel | None,
    device: torch.device,
    also_perturbed: list[str] | None = None,
) -> tuple[Prepared, ShardedStats]:
    """`prepare` and the training statistics of a backed file, each process reading only its
    rows (all rows on one process), one chunk at a time; sums are all-reduced, so every process
    ends with the statistics one process reading the whole file would have."""
    cfg = config
    rank, world = rank_and_world()
    n_file = adata.n_obs
    rows = np.arange(n_file) if train_mask is None else np.flatnonzero(train_mask)
    obs = adata.obs if train_mask is None else adata.obs.iloc[rows]
    ctx, spec, comp_feats = _contexts_and_features(obs, keys, drug_features, cfg)
    target_gene, forced = _perturbed_genes(ctx, spec, adata.var_names, obs, keys, also_perturbed)
    reader = open_shard(
        adata, counts_layer=keys.counts_layer, target_sum=cfg.target_sum, rank=rank, world=world
    )
    row_mask = None
    if train_mask is not None:
        row_mask = np.asarray(train_mask, bool)
    t = time.perf_counter()
    cols, pinfo = select_genes(
        reader,
        n_top_genes=cfg.n_top_genes,
        hvg_flavor=cfg.hvg_flavor,
        force_genes=forced,
        row_mask=row_mask,
        reduce=all_reduce_sum,
    )
    t_hvg = time.perf_counter() - t
    cell_group, is_ctrl_cell = _cell_groups(ctx)
    K = ctx.n_contexts
    is_val = validation_cells(ctx.cell_context, K, cfg.val_fraction, cfg.seed)

    def on_file(a: np.ndarray, fill) -> np.ndarray:  # per training cell -> per row of the file
        out = np.full(n_file, fill, a.dtype)
        out[rows] = a
        return out

    t, passes = time.perf_counter(), {}
    mean, sd, sum_x, n, W = sharded_statistics(
        reader,
        cols,
        cell_context=on_file(ctx.cell_context, -1),
        is_val=on_file(is_val, False),
        cell_group=on_file(cell_group, 0),
        ctx_group=ctx.cov_group,
        is_control_ctx=ctx.table["is_control"].to_numpy(),
        n_groups=len(ctx.groups),
        check=pinfo.hvg_flavor is None,  # no gene-selection pass checked the values
        reduce=all_reduce_sum,
        device=device,
        timings=passes,
    )
    t_stats = time.perf_counter() - t
    log.info(
        "statistics of rows %d-%d (process %d of %d): genes %.1f s, sums and scatter %.1f s",
        *reader.rows,
        rank,
        world,
        t_hvg,
        t_stats,
    )
    prep = _prepared(
        None, pinfo, ctx, spec, comp_feats, cell_group, is_ctrl_cell, mean, sd, cfg, target_gene
    )
    prep.ref_X = reader.rows_of(rows[prep.ref_rows], cols).toarray().astype(np.float32)
    prep.stage_seconds = {"genes": t_hvg, **passes}
    shard = ddp.shard(n["train"] + n["val"]) if ddp else None
    stats = ShardedStats(
        sum_x, n, W, prep.context_batch, device=device, precision=cfg.precision, shard=shard
    )
    return prep, stats


def _best_restart(new_module, tdata, cfg, ddp, progress, checkpoint) -> tuple[GIMModule, History]:
    """`cfg.restarts` independent optimisations; the best validation objective wins. A
    checkpoint resumes inside the restart it was saved in, knowing the best finished one."""
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
        hist = optimise(
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
    return module, hist


def reference_controls(
    cell_group: np.ndarray, is_ctrl_cell: np.ndarray, n_groups: int, *, seed: int
) -> np.ndarray:
    """Up to N_REFERENCE_CONTROLS control cells per covariate group, drawn with `seed`."""
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per training context and gene: the exact posterior probability that it is a direct target,
    the posterior mean of its direct shift u if targeted and if not (standardised units), the
    posterior log-odds of being a target (the ranking score: it does not saturate at p = 1), and
    the observed direct shift A (mean x) of its cells from their controls (mean 0), unshrunk by
    any prior (what gimcli.model.feature_prior regresses on features)."""
    total = data.split["val"][2] + data.split["train"][2]
    out = np.zeros((data.K, module.sem.d), np.float32)
    shift = np.zeros((data.K, module.sem.d), np.float32)
    spike = np.zeros((data.K, module.sem.d), np.float32)
    log_odds = np.zeros((data.K, module.sem.d), np.float32)
    observed = np.zeros((data.K, module.sem.d), np.float32)
    start = 0
    while start < data.K:
        cum = np.cumsum(total[start:])
        stop = start + max(1, int(np.searchsorted(cum, _POSTERIOR_CHUNK_CELLS, side="right")))
        ids = np.arange(start, stop)
        batch = data.all_cells(ids)
        stats = batch.residual_stats(module.sem)
        m = module.posterior(batch, target_cost=cfg.target_cost, stats=stats)
        S1, _, n = stats
        # + b: the shift from the group's controls (mean 0 once standardised), as predictions
        # add the propagated shift to control cells
        observed[ids] = (S1 / n.clamp_min(1).unsqueeze(-1) + module.sem.b).cpu().numpy()
        out[ids] = m.post_any.cpu().numpy()
        shift[ids] = (m.u_target / m.post_any.clamp_min(1e-6)).cpu().numpy()
        spike[ids] = m.u_null.cpu().numpy()
        log_odds[ids] = m.log_odds.cpu().numpy()
        start = stop
    return out, shift, spike, log_odds, observed
