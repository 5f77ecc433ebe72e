"""The optimisation loop: schedule, validation, early stopping, restarts, progress."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from gimcli.config import TrainConfig
from gimcli.errors import TrainingError
from gimcli.model.module import GIMModule
from gimcli.training.batches import TrainData
from gimcli.training.distributed import DataParallel, batch_cells

log = logging.getLogger(__name__)

# Cells per validation pass; validation uses the exact marginal on held-out cells of each context.
_VAL_MAX_CELLS = 512


@dataclass
class History:
    rows: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    best_step: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def phase_of(step: int, cfg: TrainConfig) -> str:
    """The objective of a step: the schedule runs the relaxed bound first, then the exact one."""
    if cfg.objective == "schedule":
        return "relaxed" if step < int(cfg.structure_first * cfg.steps) else "exact"
    return cfg.objective


@torch.no_grad()
def validation_nll(
    module: GIMModule, data: TrainData, cfg: TrainConfig, rng: np.random.Generator
) -> float:
    if data.n_cells("val") == 0:
        return float("nan")
    batch = data.sample(rng, split="val", batch_contexts=data.K, max_cells=_VAL_MAX_CELLS)
    out = module.loss(batch, mode="exact", target_cost=cfg.target_cost, l1_graph=0.0)
    return float(out.nll)


def optimizer(module: GIMModule, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: decoupled weight decay on the network's weight matrices only (not its biases, nor
    the SEM)."""
    decay = [p for n, p in module.net.named_parameters() if p.requires_grad and p.ndim == 2]
    ids = {id(p) for p in decay}
    rest = [p for p in module.parameters() if p.requires_grad and id(p) not in ids]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
    )


def optimise(
    module: GIMModule,
    data: TrainData,
    cfg: TrainConfig,
    *,
    seed: int,
    progress: Callable[[int, dict], None] | None = None,
    checkpoint=None,
    sync: DataParallel | None = None,
) -> History:
    """Optimise `module` in place; it ends holding the state with the best validation objective
    of the exact phase (or the last state when there are no validation cells).

    `checkpoint` (a gimcli.training.checkpoint.Checkpointer) restores the loop state before the
    first step and may save it (and stop, on a signal) after each step. With `sync` (torchrun),
    gradients and validation objectives are combined over processes."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    val_rng_seed = seed + 7919
    gen = torch.Generator(device=data.device).manual_seed(seed)
    opt = optimizer(module, cfg)
    hist = History()
    best_state = None
    bad_evals = 0
    start = 0
    if checkpoint is not None:
        start, best_state, bad_evals = checkpoint.restore(module, opt, rng, gen, hist)
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        phase = phase_of(step, cfg)
        batch = data.sample(
            rng, batch_contexts=cfg.batch_contexts, max_cells=cfg.max_cells_per_context
        )
        out = _step(module, opt, batch, cfg, phase=phase, generator=gen, sync=sync, step=step)
        if step % cfg.eval_every == 0 or step == cfg.steps - 1:
            val = validation_nll(module, data, cfg, np.random.default_rng(val_rng_seed))
            if sync is not None:
                val = sync.weighted_mean(val, data.n_cells("val"))
            row = {
                "step": step,
                "phase": phase,
                "loss": float(out.loss.detach()),
                "train_nll": float(out.nll),
                "val_nll": val,
                "l1_B": float(out.l1),
                "seconds": time.perf_counter() - t0,
            }
            hist.rows.append(row)
            if progress:
                progress(step, row)
            if phase != "relaxed":  # early stopping watches the exact objective only
                score = val if np.isfinite(val) else float(out.nll)
                if score < hist.best_val - 1e-4:
                    hist.best_val, hist.best_step, bad_evals = score, step, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad_evals += 1
                    if bad_evals >= cfg.patience:
                        hist.stopped_early = True
                        log.info("early stop at step %d (best %d)", step, hist.best_step)
                        break
        if checkpoint is not None:
            checkpoint.after_step(step, module, opt, rng, gen, hist, best_state, bad_evals)
    if best_state is not None:
        module.load_state_dict(best_state)
    elif hist.rows:  # no exact phase: the last evaluation (train objective without val cells)
        last = hist.rows[-1]
        hist.best_val = last["val_nll"] if np.isfinite(last["val_nll"]) else last["train_nll"]
    hist.seconds = time.perf_counter() - t0
    return hist


def _step(module, opt, batch, cfg, *, phase: str, generator, sync, step: int):
    """One optimisation step on `batch`; returns the LossOutput before the update."""
    l1 = 0.0 if module.sem.fix_graph else cfg.l1_graph
    out = module.loss(
        batch,
        mode=phase,
        target_cost=cfg.target_cost,
        l1_graph=l1,
        temperature=cfg.temperature,
        generator=generator,
        shift_prior_sd=cfg.shift_prior_sd,
    )
    if not torch.isfinite(out.loss):
        raise TrainingError(f"objective became {float(out.loss)} at step {step}; try a lower --lr")
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if sync is not None:
        sync.reduce_gradients(module, batch_cells(batch))
    opt.step()
    return out
