"""gim simulate --out FILE.h5ad"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import api_options, emit_json, setup_logging

log = logging.getLogger("gimcli.cli.simulate")


@app.command(help="Write a synthetic screen with a known causal graph and known direct targets.")
def simulate(
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output .h5ad (ground truth in uns['gim_truth'] and OUT.truth.json).",
    ),
    n_genes: int = typer.Option(20, help="Genes."),
    n_drugs: int = typer.Option(12, help="Drugs (perturbations)."),
    doses: str = typer.Option("10,100,1000", help="Comma list of doses."),
    n_cells: int = typer.Option(60, help="Cells per perturbed condition."),
    n_control: int = typer.Option(300, help="Control cells per cell line."),
    n_combos: int = typer.Option(0, help="Random drug pairs (A+B) at the top dose."),
    n_cell_lines: int = typer.Option(1, help="Cell lines (covariate 'cell_line')."),
    graph: str = typer.Option("cyclic", help="cyclic | dag"),
    degree: float = typer.Option(1.5, help="Mean parents per gene."),
    n_targets: int = typer.Option(2, help="Direct targets per drug."),
    features: str = typer.Option("numeric", help="numeric (obs f0..) | smiles (obs 'smiles')."),
    smiles_csv: Path | None = typer.Option(
        None, help="CSV name,smiles of drugs to use with --features smiles."
    ),
    counts: bool = typer.Option(
        False, "--counts", help="Write Poisson counts instead of log-normalised values."
    ),
    library_size: float = typer.Option(
        2000.0, help="Mean counts per cell with --counts (smaller = sparser)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
):
    params = dict(locals())  # every option, by name: passed through to gimcli.api.simulate
    from gimcli import api

    setup_logging()
    adata = api.simulate(**api_options(params, api.simulate))
    tpath = out.with_suffix(".truth.json")
    log.info("wrote %s (%d cells x %d genes) and %s", out, adata.n_obs, adata.n_vars, tpath)
    if as_json:
        emit_json(
            {
                "status": "ok",
                "out": str(out),
                "truth": str(tpath),
                "n_obs": adata.n_obs,
                "n_vars": adata.n_vars,
            }
        )
