"""gim explain RUN [--top-targets N] [--conditions ...] [--graph] --format table|csv|json"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import parse_floats, parse_kv, setup_logging, split_list


@app.command(
    help="Direct targets per perturbation (probability, signed shift) and downstream genes; "
    "or the learned graph."
)
def explain(
    run_dir: Path = typer.Argument(..., help="Run directory written by `gim train`."),
    top_targets: int = typer.Option(10, help="Direct targets listed per condition."),
    n_downstream: int = typer.Option(
        5, help="Strongest downstream (indirectly changed) genes per condition."
    ),
    conditions: str | None = typer.Option(
        None, help="Comma list of conditions (default: all training conditions)."
    ),
    features: Path | None = typer.Option(
        None, "--features", "--drug-features", help="CSV of new perturbations (as for predict)."
    ),
    doses: str | None = typer.Option(None, help="Doses for conditions/features not in training."),
    covariate: list[str] | None = typer.Option(None, help="KEY=VALUE (repeatable)."),
    graph: bool = typer.Option(False, "--graph", help="List the learned causal edges instead."),
    top_edges: int = typer.Option(100, help="Edges listed with --graph (strongest first)."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to this file instead of stdout."
    ),
    plot: Path | None = typer.Option(
        None, "--plot", help="Also draw the targets of each condition to this PNG."
    ),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    from gimcli.data.features import read_feature_csv
    from gimcli.data.io import write_text
    from gimcli.errors import InputError
    from gimcli.explanation import graph_table, target_table, training_requests
    from gimcli.gimrun import GimRun
    from gimcli.prediction import build_requests

    setup_logging(quiet=quiet)
    fmt = "json" if as_json else fmt
    if fmt not in ("table", "csv", "json"):
        raise InputError(f"--format {fmt!r}: expected table, csv or json")
    if features is not None and conditions:
        raise InputError(
            "give --conditions or --features, not both (the CSV lists what to explain)"
        )
    run = GimRun.load(run_dir)
    if graph:
        df = graph_table(run, top=top_edges)
    else:
        conds = split_list(conditions)
        new = {}
        if features is not None:
            req, new = build_requests(
                run,
                features=read_feature_csv(str(features)),
                doses=parse_floats(doses, option="--doses"),
                covariates=parse_kv(covariate, option="--covariate"),
            )
        else:
            req = training_requests(run, conds, parse_kv(covariate, option="--covariate"))
            known = set(req["condition"])
            unseen = [c for c in conds or [] if c not in known]
            if unseen:  # not trained on (e.g. a new combination): explain from the network's prior
                extra, _ = build_requests(
                    run,
                    conditions=unseen,
                    doses=parse_floats(doses, option="--doses"),
                    covariates=parse_kv(covariate, option="--covariate"),
                )
                import pandas as pd

                req = pd.concat([req, extra], ignore_index=True)
        df = target_table(run, req, new, top=top_targets, n_downstream=n_downstream)
        if plot is not None:
            from gimcli.data.io import atomic_path
            from gimcli.report.plots import targets_bars

            if len(req) > 24:
                raise InputError(
                    f"--plot draws at most 24 conditions ({len(req)} selected); narrow with "
                    "--conditions/--covariate"
                )
            png = targets_bars(df, label_cols=["condition", "dose", *run.cov_keys])
            with atomic_path(plot) as tmp:
                tmp.write_bytes(png)
    text = _render(df, fmt)
    if out is not None:
        write_text(text, out)
    else:
        sys.stdout.write(text)


def _render(df, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False, float_format="%.6g")
    if fmt == "json":
        return df.to_json(orient="records", double_precision=6) + "\n"
    if df.empty:
        return "(nothing to show)\n"
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    t = Table(show_lines=False)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "fi" else "left")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    buf = StringIO()
    Console(file=buf, width=200, force_terminal=False).print(t)
    return buf.getvalue()
