"""gim train DATA --out RUN"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer

from gimcli import _keys
from gimcli.cli._app import app
from gimcli.cli._common import api_options, emit_json, setup_logging
from gimcli.config import TrainConfig

log = logging.getLogger("gimcli.cli.train")
_D = TrainConfig()


@app.command(help="Fit a GIM to a perturbation screen (.h5ad) and write a run directory.")
def train(
    data: Path = typer.Argument(..., help="Input .h5ad (cells x genes; counts or log-normalised)."),
    out: Path = typer.Option(Path("gim_run"), "--out", "-o", help="Run directory to write."),
    perturbation_key: str = typer.Option(
        "condition", help="obs column naming the perturbation (A+B = combination)."
    ),
    control: str = typer.Option(
        "control", help="Value of the perturbation column for control cells."
    ),
    dose_key: str | None = typer.Option(
        None, help="obs column with the dose (number, or a+b for combinations)."
    ),
    covariate_keys: str | None = typer.Option(
        None, help="Comma list of obs columns (e.g. cell_line)."
    ),
    smiles_key: str | None = typer.Option(None, help="obs column with each drug's SMILES."),
    drug_features: Path | None = typer.Option(None, help="CSV with columns name,smiles."),
    feature_keys: str | None = typer.Option(
        None, help="Comma list of numeric obs columns describing each perturbation."
    ),
    counts_layer: str | None = typer.Option(
        None, help="Layer with raw counts (default: auto-detect X)."
    ),
    perturbed_gene_key: str | None = typer.Option(
        None,
        help="obs column with the gene each perturbation targets (default: the name, or a guide "
        "label's stem before _<digits>, when it is a measured gene).",
    ),
    input_kind: str = typer.Option(
        "auto",
        "--input",
        help="auto | counts | log | continuous (negative values allowed, used as given).",
    ),
    min_cells: int = typer.Option(
        0, help="Model only genes detected in at least this many cells (0: no filter)."
    ),
    combination_sep: str = typer.Option(
        "+",
        help="Separator of a combination's components ('none': every name is one perturbation; "
        "names in --drug-features are never split).",
    ),
    n_top_genes: int = typer.Option(
        _D.n_top_genes, help="Highly variable genes to model (all if fewer)."
    ),
    min_cells_per_context: int = typer.Option(
        _D.min_cells_per_context,
        help="Skip perturbed contexts with fewer cells (1: keep bulk samples, one per context).",
    ),
    steps: int = typer.Option(_D.steps, help="Optimisation steps."),
    lr: float = typer.Option(_D.lr, help="Adam learning rate."),
    weight_decay: float = typer.Option(
        _D.weight_decay, help="Decoupled weight decay of the network's weight matrices."
    ),
    target_cost: float = typer.Option(
        _D.target_cost, help="Cost in nats of each used direct target."
    ),
    l1_graph: float = typer.Option(_D.l1_graph, help="L1 penalty on the causal graph B."),
    shift_sd: float = typer.Option(
        _D.shift_sd,
        help="sd of a target's shift around the network's (standardised "
        "units); negative: learned per gene from |value|; 0: the shift is exactly m.",
    ),
    spike_sd: float = typer.Option(
        _D.spike_sd,
        help="sd of a non-target's shift; negative: learned per gene from "
        "|value|; 0: non-targets do not move.",
    ),
    shift_prior_sd: float = typer.Option(
        _D.shift_prior_sd,
        help="sd of a N(0, sd^2) prior on the network's shift of every gene (standardised "
        "units); 0: none.",
    ),
    objective: str = typer.Option(
        _D.objective, help="schedule (relaxed, then exact) | exact | relaxed."
    ),
    fix_graph: bool = typer.Option(False, "--fix-graph", help="Ablation: no causal model (B = 0)."),
    batch_contexts: int = typer.Option(_D.batch_contexts, help="Contexts per step."),
    max_cells_per_context: int = typer.Option(
        _D.max_cells_per_context, help="Cells per context per step."
    ),
    restarts: int = typer.Option(
        _D.restarts, help="Independent restarts; the best validation objective wins."
    ),
    seed: int = typer.Option(_D.seed, help="Random seed (results are reproducible from it)."),
    deterministic: bool = typer.Option(
        False,
        "--deterministic",
        help="Deterministic GPU kernels (CPU runs are bit-identical from --seed alone).",
    ),
    checkpoint_every: float = typer.Option(
        0.0,
        help="Minutes between checkpoints to RUN/checkpoint.pt (0: only on "
        "SIGTERM/SIGUSR1, which save and exit with code 75).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from RUN/checkpoint.pt if present (else start)."
    ),
    holdout_conditions: str | None = typer.Option(
        None, help="Comma list of conditions to hold out and score."
    ),
    holdout_doses: str | None = typer.Option(
        None, help="Comma list of doses to hold out (every drug) and score."
    ),
    holdout_combinations: str | None = typer.Option(
        None, help="Comma list of combinations A+B to hold out, or 'all'."
    ),
    holdout_covariate: str | None = typer.Option(
        None, help="KEY=VALUE: hold out that group (alone) or the held-out conditions within it."
    ),
    split_key: str | None = typer.Option(
        None, help="obs column with train/test per cell (instead of --holdout-*)."
    ),
    baseline_refit: bool = typer.Option(
        True,
        "--baseline-refit/--no-baseline-refit",
        help="With a holdout, also refit the GIM with B = 0 (the gim_nograph baseline).",
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda[:N]."),
    precision: str = typer.Option(
        _D.precision, help="fp32 | tf32 | bf16: precision of the d x d matmuls of a step."
    ),
    batching: str = typer.Option(
        _D.batching, help="full (every cell each step, via per-context sums) | sampled."
    ),
    backed: bool = typer.Option(
        False, "--backed", help="Read cells in chunks from disk (files larger than memory)."
    ),
    threads: int = typer.Option(
        0,
        help="CPU threads per process (0: OMP_NUM_THREADS if set, else SLURM_CPUS_PER_TASK or "
        "the CPU affinity, shared among torchrun's processes on the node).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
):
    params = dict(locals())  # every option, by name: passed through to gimcli.api.train
    from gimcli import api
    from gimcli.cli._config import invocation
    from gimcli.data.io import check_run_dir
    from gimcli.training.distributed import env_rank

    main_rank = env_rank() == 0  # under torchrun only rank 0 touches the run directory
    if main_rank:
        check_run_dir(out, overwrite=overwrite)
    setup_logging(quiet=quiet or not main_rank, log_file=out / _keys.LOG if main_rank else None)
    with _Progress(steps, enabled=not quiet and main_rank) as prog:
        run = api.train(
            data,
            progress=prog.update,
            invocation=invocation(params),
            **api_options(params, api.train),
        )
    if main_rank:
        _report(run, out, as_json=as_json)


def _report(run, out: Path, *, as_json: bool) -> None:
    """The closing log line and the --json summary."""
    t, tr = run.outputs["timings"], run.meta.training
    diag = run.meta.diagnostics
    summary = {
        "status": "ok",
        "out": str(out),
        "files": run.outputs["files"],
        "seconds": round(t["total"], 2),
        "n_cells": run.meta.training.n_cells,
        "n_genes": len(run.genes),
        "n_contexts": len(run.meta.contexts),
        "best_step": tr.best_step,
        "best_val_nll": tr.best_val_nll,
        "device": run.meta.training.device,
        "diagnostics": diag.to_dict(),
        "warnings": run.meta.warnings,
        "timings": {k: round(t[k], 3) for k in ("read", "prepare", "train", "write")},
    }
    log.info(
        "wrote %s in %.1f s (best step %d, B spectral radius %.2f)",
        out,
        summary["seconds"],
        tr.best_step,
        diag.B_spectral_radius,
    )
    if as_json:
        emit_json(summary)


class _Progress:
    """A rich progress bar on a terminal; plain log lines at most every 10 s otherwise."""

    def __init__(self, total: int, *, enabled: bool):
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.bar = None

    def __enter__(self):
        if self.enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TextColumn("time left"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, info="")
        return self

    def update(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        info = f"{row['phase']} loss {row['loss']:.3f} val {row['val_nll']:.3f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step + 1, info=info)
        elif time.perf_counter() - self.last > 10 or step == 0:
            self.last = time.perf_counter()
            log.info("step %d/%d %s", step + 1, self.total, info)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
