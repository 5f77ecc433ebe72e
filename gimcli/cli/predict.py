"""gim predict RUN (--features CSV | --conditions A,B+C) --out PRED.h5ad"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import api_options, emit_json, setup_logging

log = logging.getLogger("gimcli.cli.predict")


@app.command(
    help="Predict the cells of perturbations, measured or not (new drugs, doses, combinations, "
    "cell lines)."
)
def predict(
    run_dir: Path = typer.Argument(..., help="Run directory written by `gim train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .h5ad of predicted cells."),
    features: Path | None = typer.Option(
        None,
        "--features",
        "--drug-features",
        help="CSV: name + smiles (or the numeric feature columns), optional dose and covariate "
        "columns.",
    ),
    conditions: str | None = typer.Option(
        None, help="Comma list of perturbations/combinations (A+B) the model knows."
    ),
    conditions_file: Path | None = typer.Option(
        None, help="File of condition names, one per line (for names with commas)."
    ),
    doses: str | None = typer.Option(
        None, help="Comma list of doses to predict each perturbation at."
    ),
    covariate: list[str] | None = typer.Option(
        None, help="KEY=VALUE (repeatable); default: every training group."
    ),
    n_cells: int = typer.Option(
        0,
        help="Cells per predicted condition; 0: every training control cell of its group once "
        "(up to 500; the cells' mean is then exactly the predicted mean).",
    ),
    map_targets: bool = typer.Option(
        False,
        "--map-targets",
        help="Move cells by the MAP targets (prob > 0.5) instead of the expected shift E[u].",
    ),
    noise: str = typer.Option(
        "controls",
        help="controls: move training control cells by the predicted effect "
        "(the SEM counterfactual) | gaussian: sample the fitted noise.",
    ),
    with_controls: bool = typer.Option(
        True,
        "--with-controls/--no-controls",
        help="Also write the training control cells of each requested group, labelled with the "
        "control label (what cell-eval, pertpy and scanpy compare predictions against).",
    ),
    seed: int = typer.Option(0, help="Seed for sampling cells."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    params = dict(locals())  # every option, by name: passed through to gimcli.api.predict
    from gimcli import api

    setup_logging(quiet=quiet)
    res = api.predict(run_dir, **api_options(params, api.predict))
    log.info("wrote %s: %d conditions, %d cells", out, res["n_conditions"], res["n_obs"])
    if as_json:
        conds = res["conditions"]
        emit_json(
            {
                "status": "ok",
                "out": str(out),
                "n_conditions": res["n_conditions"],
                "n_cells": int(res["n_obs"]),
                "low_similarity": conds.index[conds["low_similarity"]].tolist(),
                "conditions": conds.reset_index(names="label").to_dict("records"),
            }
        )
