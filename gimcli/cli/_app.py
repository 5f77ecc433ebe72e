"""The typer application every command registers with (kept apart from `main` so that the
command modules and the entry point do not import each other)."""

from __future__ import annotations

import typer

from gimcli._version import __version__

app = typer.Typer(
    name="gim",
    help="Generative Intervention Models for single-cell perturbation screens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"gim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
):
    pass
