"""gim predict RUN (--features CSV | --conditions A,B+C) --out PRED.h5ad"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import (
    check_output_file,
    emit_json,
    parse_floats,
    parse_kv,
    setup_logging,
    split_list,
)

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
    doses: str | None = typer.Option(
        None, help="Comma list of doses to predict each perturbation at."
    ),
    covariate: list[str] | None = typer.Option(
        None, help="KEY=VALUE (repeatable); default: every training group."
    ),
    n_cells: int = typer.Option(100, help="Cells sampled per predicted condition."),
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
    seed: int = typer.Option(0, help="Seed for sampling cells."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    from gimcli import _keys
    from gimcli.data.features import read_feature_csv
    from gimcli.data.io import write_h5ad
    from gimcli.errors import InputError
    from gimcli.gimrun import GimRun
    from gimcli.prediction import build_requests
    from gimcli.prediction import predict as predict_cells
    from gimcli.provenance import provenance

    setup_logging(quiet=quiet)
    if noise not in ("controls", "gaussian"):
        raise InputError(f"--noise {noise!r}: expected controls or gaussian")
    if n_cells < 1:
        raise InputError("--n-cells must be >= 1")
    check_output_file(out, overwrite=overwrite)
    run = GimRun.load(run_dir)
    feats = read_feature_csv(str(features)) if features else None
    req, new = build_requests(
        run,
        features=feats,
        conditions=split_list(conditions),
        doses=parse_floats(doses, option="--doses"),
        covariates=parse_kv(covariate, option="--covariate"),
    )
    pred = predict_cells(
        run, req, new, n_cells=n_cells, seed=seed, map_targets=map_targets, noise=noise
    )
    inputs = {
        "model": run_dir / _keys.MODEL_WEIGHTS,
        "model_meta": run_dir / _keys.MODEL_META,
        "features": features,
    }
    pred.uns[_keys.UNS]["provenance"] = provenance(seed=seed, inputs=inputs).to_dict()
    write_h5ad(pred, out)
    conds = pred.uns[_keys.UNS]["conditions"]
    log.info("wrote %s: %d conditions x %d cells", out, len(req), n_cells)
    if as_json:
        emit_json(
            {
                "status": "ok",
                "out": str(out),
                "n_conditions": len(req),
                "n_cells": int(pred.n_obs),
                "low_similarity": conds.index[conds["low_similarity"]].tolist(),
                "conditions": conds.reset_index(names="label").to_dict("records"),
            }
        )
