"""gim simulate --out FILE.h5ad"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import check_output_file, emit_json, parse_floats, setup_logging

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
    from gimcli import _keys
    from gimcli.data.features import read_feature_csv
    from gimcli.data.io import write_h5ad, write_text
    from gimcli.errors import InputError
    from gimcli.simulation import simulate as sim

    setup_logging()
    if graph not in ("cyclic", "dag"):
        raise InputError(f"--graph {graph!r}: expected cyclic or dag")
    if features not in ("numeric", "smiles"):
        raise InputError(f"--features {features!r}: expected numeric or smiles")
    if min(n_genes, n_drugs, n_cells, n_control, n_cell_lines) < 1 or n_targets > n_genes:
        raise InputError("sizes must be >= 1 and --n-targets <= --n-genes")
    if library_size <= 0:
        raise InputError(f"--library-size {library_size:g}: must be > 0")
    check_output_file(out, overwrite=overwrite)
    smiles = None
    if smiles_csv is not None:
        df = read_feature_csv(str(smiles_csv), smiles=True)
        smiles = dict(zip(df["name"], df["smiles"], strict=True))
    try:
        adata = sim(
            n_genes=n_genes,
            n_drugs=n_drugs,
            doses=tuple(parse_floats(doses, option="--doses")),
            n_cells=n_cells,
            n_control=n_control,
            n_combos=n_combos,
            n_cell_lines=n_cell_lines,
            graph=graph,
            degree=degree,
            n_targets=n_targets,
            features=features,
            smiles=smiles,
            counts=counts,
            library_size=library_size,
            seed=seed,
        )
    except ValueError as e:
        raise InputError(str(e)) from e
    write_h5ad(adata, out)
    truth = adata.uns[_keys.UNS_TRUTH]
    truth_json = {
        "genes": adata.var_names.tolist(),
        "B": truth["B"].tolist(),
        "targets": truth["targets"].to_dict("records"),
        "drug_targets": truth["drug_targets"].to_dict("records"),
        "params": truth["params"],
    }
    tpath = out.with_suffix(".truth.json")
    write_text(json.dumps(truth_json), tpath)
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
