"""gim explain RUN [--top-targets N] [--conditions ...] [--graph] --format table|csv|json"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gimcli.cli._app import app
from gimcli.cli._common import api_options, setup_logging


@app.command(
    help="Direct targets per perturbation (probability, signed shift) and downstream genes; "
    "or the learned graph."
)
def explain(
    run_dir: Path = typer.Argument(..., help="Run directory written by `gim train`."),
    top_targets: int = typer.Option(10, help="Direct targets listed per condition."),
    min_prob: float = typer.Option(
        0.5, help="List a gene as a direct target only at this target probability or more."
    ),
    n_downstream: int = typer.Option(
        5, help="Strongest downstream (indirectly changed) genes per condition."
    ),
    conditions: str | None = typer.Option(
        None, help="Comma list of conditions (default: all training conditions)."
    ),
    features: Path | None = typer.Option(
        None, "--features", "--drug-features", help="CSV of new perturbations (as for predict)."
    ),
    conditions_file: Path | None = typer.Option(
        None, help="File of condition names, one per line (for names with commas)."
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
    params = dict(locals())  # every option, by name: passed through to gimcli.api.explain
    from gimcli import api
    from gimcli.data.io import write_text
    from gimcli.errors import InputError

    setup_logging(quiet=quiet)
    fmt = "json" if as_json else fmt
    if fmt not in ("table", "csv", "json"):
        raise InputError(f"--format {fmt!r}: expected table, csv or json")
    df = api.explain(run_dir, **api_options(params, api.explain))
    text = _render(df, fmt)
    none = _without_targets(df)
    if none and fmt == "table":
        text += "".join(f"{n}\n" for n in none)
    if fmt != "table" or out is not None:  # on stderr: a few, then how many more
        for n in none[:_SHOW_WITHOUT]:
            typer.echo(n, err=True)
        if len(none) > _SHOW_WITHOUT:
            more = len(none) - _SHOW_WITHOUT
            typer.echo(
                f"... and {more} more condition(s) without confident direct targets", err=True
            )
    if out is not None:
        write_text(text, out)
    else:
        sys.stdout.write(text)


_SHOW_WITHOUT = 5  # conditions without confident targets named on stderr


def _without_targets(df) -> list[str]:
    """'<condition ...>: no confident direct targets (prob >= p)' per condition without one."""
    p = df.attrs.get("min_prob")
    return [
        f"{' '.join(str(v) for v in base.values())}: no confident direct targets (prob >= {p:g})"
        for base in df.attrs.get("without_targets", [])
    ]


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
