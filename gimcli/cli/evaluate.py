"""gim evaluate RUN TEST.h5ad --out DIR"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import emit_json, setup_logging, split_list

log = logging.getLogger("gimcli.cli.evaluate")


@app.command(
    help="Score a run on held-out cells against baselines; writes eval_metrics.csv and .json."
)
def evaluate(
    run_dir: Path = typer.Argument(
        ...,
        help="Run directory written by `gim train` (its annotated.h5ad gives the training cells).",
    ),
    test: Path = typer.Argument(
        ..., help=".h5ad with the held-out cells (control cells are not scored)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Directory for eval_metrics.csv/.json (default: RUN)."
    ),
    methods: str | None = typer.Option(
        None, help="Comma list of methods (default: gim and every baseline)."
    ),
    drug_features: Path | None = typer.Option(
        None,
        "--drug-features",
        "--features",
        help="CSV name,smiles for held-out drugs without SMILES in the data.",
    ),
    n_cells: int = typer.Option(
        300, help="Cells per context for the distribution metrics (sampled / subsampled)."
    ),
    seed: int = typer.Option(0, help="Seed for sampled cells and subsampling."),
    device: str = typer.Option(
        "auto", help="Device for refitting the B = 0 baseline: auto | cpu | cuda[:N]."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing eval_metrics files in --out."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    from gimcli import _keys
    from gimcli.data.features import read_feature_csv
    from gimcli.data.io import read_h5ad
    from gimcli.errors import InputError
    from gimcli.evaluation.heldout import METHODS, describe, evaluate_saved_run, write_eval
    from gimcli.gimrun import GimRun
    from gimcli.training.fitting import resolve_device

    out = out or run_dir
    chosen = tuple(split_list(methods) or METHODS)
    bad = sorted(set(chosen) - set(METHODS))
    if bad:
        raise InputError(f"--methods {bad}: choose from {list(METHODS)}")
    if n_cells < 2:
        raise InputError("--n-cells must be >= 2")
    if not overwrite and ((out / _keys.EVAL_CSV).exists() or (out / _keys.EVAL_JSON).exists()):
        raise InputError(f"{out} already holds {_keys.EVAL_CSV}; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    resolve_device(device)
    run = GimRun.load(run_dir)
    ann_p = run_dir / _keys.ANNOTATED
    if not ann_p.exists():
        raise InputError(f"{ann_p} is missing: the baselines need the training cells")
    feats = read_feature_csv(str(drug_features), smiles=True) if drug_features else None
    setup_logging(quiet=quiet, log_file=out / _keys.LOG)
    res = evaluate_saved_run(
        run,
        run_dir,
        read_h5ad(test),
        methods=chosen,
        drug_features=feats,
        n_cells=n_cells,
        seed=seed,
        device=device,
    )
    paths = write_eval(res, out)
    agg = res.summary["aggregate"]
    log.info(
        "scored %d held-out contexts; mean R2: %s", res.summary["n_test_contexts"], describe(res)
    )
    if as_json:
        emit_json(
            {
                "status": "ok",
                "files": paths,
                "n_test_contexts": res.summary["n_test_contexts"],
                "aggregate": agg,
                "best_baseline": res.summary["best_baseline"],
                "targets": res.summary.get("targets"),
            }
        )
