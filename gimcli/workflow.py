"""`gim train` as one library call: read, split, fit (with checkpoints), write the run directory,
score the held-out cells and write the report.

The CLI parses and checks its options, then calls `train_to_directory`; a notebook or pipeline
can call it the same way. Under torchrun every process trains and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import anndata as ad
import numpy as np

from gimcli import _keys
from gimcli.config import DataKeys, TrainConfig
from gimcli.data.features import check_heldout_features, read_feature_csv
from gimcli.data.io import read_h5ad, staged_dir
from gimcli.evaluation.heldout import describe, evaluate_split, write_eval
from gimcli.evaluation.splits import Holdout, train_mask
from gimcli.gimrun import GimRun
from gimcli.provenance import file_sha256, provenance, set_deterministic
from gimcli.report import write_report
from gimcli.schema import InputInfo
from gimcli.training.checkpoint import run_checkpointer
from gimcli.training.distributed import env_rank, env_world_size, set_threads
from gimcli.training.fitting import fit_run, resolve_device
from gimcli.training.health import health_warnings
from gimcli.training.loop import History
from gimcli.training.outputs import write_run

log = logging.getLogger(__name__)


@dataclass
class TrainOutputs:
    """What `train_to_directory` made: the run, its history, the files written (rank 0 only) and
    the seconds each part took."""

    run: GimRun
    history: History
    paths: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def train_to_directory(
    data: Path | ad.AnnData,
    out: Path | None,
    *,
    keys: DataKeys,
    config: TrainConfig,
    drug_features: Path | None = None,
    holdout: Holdout | None = None,
    device: str = "auto",
    backed: bool = False,
    threads: int = 0,
    deterministic: bool = False,
    checkpoint_every: float = 0.0,
    resume: bool = False,
    progress: Callable[[int, dict], None] | None = None,
    options: dict | None = None,
    baseline_refit: bool = True,
) -> TrainOutputs:
    """Train on `data` and write the run directory `out`.

    Parameters
    ----------
    data
        The screen: an .h5ad path (with `backed`, read in chunks from disk) or an AnnData.
    out
        The run directory: model.pt/.json, metrics.csv, annotated.h5ad, report.html, and with a
        `holdout` eval_metrics.csv/.json and nograph/ (the B = 0 refit). None: nothing is written
        (no checkpoints either); the held-out scores are still computed.
    keys, config
        How to read the screen, and how to train.
    drug_features
        CSV (name, smiles) describing the drugs.
    holdout
        Cells to hold out of training and score afterwards.
    device, deterministic
        Where to train, and whether with deterministic kernels only.
    backed, threads
        Read the .h5ad in chunks (each torchrun process its own rows; always under torchrun),
        and torch CPU threads per process (0: from the allocation, `set_threads`).
    checkpoint_every, resume
        Minutes between checkpoints (0: only on SIGTERM/SIGUSR1), and whether to continue from
        `out`/checkpoint.pt.
    progress
        Called as progress(step, row) at every evaluation.
    options
        The resolved options to record in model.json ("options").
    baseline_refit
        With a holdout, also refit the GIM with B = 0 (the gim_nograph baseline, nograph/).
    """
    distributed = env_world_size() > 1
    main_rank = env_rank() == 0  # under torchrun only rank 0 touches the run directory
    n_threads, threads_source = set_threads(threads)
    feats_df = read_feature_csv(str(drug_features), smiles=True) if drug_features else None
    t0 = time.perf_counter()
    if isinstance(data, ad.AnnData):
        adata, info = data, None
    else:
        # under torchrun every process reads only its rows (gimcli.training.sharded): backed
        adata = read_h5ad(data, backed=backed or distributed)
        info = InputInfo(
            path=str(data),
            sha256=file_sha256(data) if main_rank else "",  # only rank 0 records the run
            n_obs=adata.n_obs,
            n_vars=adata.n_vars,
        )
    t_read = time.perf_counter() - t0
    mask = _train_mask(adata, holdout, keys)
    if mask is not None:  # what would fail only when the held-out cells are scored, after training
        check_heldout_features(adata.obs, mask, keys=keys, drug_features=feats_df)
    set_deterministic(deterministic)
    ckpt = (
        contextlib.nullcontext()
        if distributed or out is None
        else run_checkpointer(
            out,
            every_min=checkpoint_every,
            resume=resume,
            config=config,
            keys=keys,
            input_sha256=info.sha256 if info else "",
            device=str(resolve_device(device)),
            drug_features_sha256=file_sha256(drug_features) if drug_features else None,
            holdout=(holdout or Holdout()).to_dict(),
        )
    )
    paths: dict[str, str] = {}
    t_write = 0.0
    with ckpt:
        run, hist = fit_run(
            adata,
            keys=keys,
            drug_features=feats_df,
            config=config,
            device=device,
            input_info=info,
            progress=progress,
            checkpoint=None if distributed or out is None else ckpt,
            train_mask=mask,
        )
        if main_rank:  # still under the signal handlers: a late signal no longer interrupts writes
            prov = provenance(seed=config.seed, inputs={"drug_features": drug_features})
            split = holdout.to_dict() if mask is not None else {}
            training = replace(run.meta.training, threads=n_threads, threads_source=threads_source)
            run.meta = replace(
                run.meta, provenance=prov, options=options or {}, holdout=split, training=training
            )
            t_write = time.perf_counter()
            nograph = None
            if mask is not None:
                run.evaluation, nograph = evaluate_split(
                    run,
                    adata,
                    mask,
                    split=holdout.to_dict(),
                    device=device,
                    seed=config.seed,
                    drug_features=feats_df,
                    baseline_refit=baseline_refit,
                )
                log.info("held-out mean R2: %s", describe(run.evaluation))
            run.meta = replace(run.meta, warnings=_health(run, nograph))
            for w in run.meta.warnings:
                log.warning("%s", w["message"])
            if out is not None:  # written beside out, moved in when complete (never partial)
                with staged_dir(out, last=(_keys.MODEL_META,)) as stage:
                    staged = write_outputs(
                        run, hist, stage, adata=adata, mask=mask, nograph=nograph, title=str(out)
                    )
                paths = {k: str(out / Path(v).relative_to(stage)) for k, v in staged.items()}
            t_write = time.perf_counter() - t_write
    if not distributed and out is not None:
        ckpt.finished()
    timings = {
        "read": t_read,
        "prepare": run.meta.training.prepare_seconds,
        "train": hist.seconds,
        "write": t_write,
        "total": time.perf_counter() - t0,
    }
    run.outputs = {"files": paths, "timings": timings}
    return TrainOutputs(run=run, history=hist, paths=paths, timings=timings)


def _health(run: GimRun, nograph: GimRun | None) -> list[dict]:
    tr = run.meta.training
    return health_warnings(
        run.meta.history,
        best_step=tr.best_step,
        best_val=tr.best_val_nll,
        spectral_radius=run.meta.diagnostics.to_dict().get("B_spectral_radius"),
        nograph_best_val=nograph.meta.training.best_val_nll if nograph is not None else None,
    )


def _train_mask(adata: ad.AnnData, holdout: Holdout | None, keys: DataKeys) -> np.ndarray | None:
    if holdout is None or not holdout.any():
        return None
    mask = train_mask(
        adata.obs,
        holdout,
        perturbation_key=keys.perturbation_key,
        control=keys.control,
        dose_key=keys.dose_key,
        combinations=keys.combinations,
    )
    log.info("split: training on %d cells, holding out %d", int(mask.sum()), int((~mask).sum()))
    return mask


def write_outputs(
    run: GimRun,
    hist: History,
    out: Path,
    *,
    adata: ad.AnnData,
    mask: np.ndarray | None,
    nograph: GimRun | None = None,
    title: str | None = None,
) -> dict[str, str]:
    """The run directory: model, metrics, annotated input; with a split the held-out scores
    (run.evaluation) and the B = 0 refit; the report last (a failed report only warns). Returns
    the paths written."""
    paths = write_run(run, hist, out, adata=adata, train_mask=mask)
    if run.evaluation is not None:
        if nograph is not None:
            nograph.save(out / _keys.NOGRAPH)
        paths.update(write_eval(run.evaluation, out))
    if (report := write_report(out, title=title)) is not None:
        paths["report"] = str(report)
    return paths
