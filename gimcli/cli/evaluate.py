"""gim evaluate RUN TEST.h5ad --out DIR"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import api_options, emit_json, setup_logging

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
        0,
        help="Predicted cells per context (those `gim predict --n-cells N --seed S` writes); 0: "
        "every training control cell of its group once.",
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
    params = dict(locals())  # every option, by name: passed through to gimcli.api.evaluate
    from gimcli import _keys, api
    from gimcli.evaluation.heldout import describe

    out = out or run_dir
    setup_logging(quiet=quiet, log_file=out / _keys.LOG)
    res = api.evaluate(run_dir, test, **api_options(params, api.evaluate, skip=("out",)), out=out)
    agg = res.summary["aggregate"]
    log.info(
        "scored %d held-out contexts; mean R2: %s", res.summary["n_test_contexts"], describe(res)
    )
    if as_json:
        emit_json(
            {
                "status": "ok",
                "files": {
                    "eval_csv": str(out / _keys.EVAL_CSV),
                    "eval_json": str(out / _keys.EVAL_JSON),
                },
                "n_test_contexts": res.summary["n_test_contexts"],
                "aggregate": agg,
                "best_baseline": res.summary["best_baseline"],
                "targets": res.summary.get("targets"),
            }
        )
