"""The `gim` command line: thin typer commands over the library.

`main(argv) -> int` is testable; only the console entry point `run()` calls sys.exit.
Exit codes: 0 ok, 2 usage, 3 bad input, 4 model/run directory, 5 training failed, 1 bug,
75 training preempted by SIGTERM/SIGUSR1 after saving a checkpoint (rerun with --resume).
"""

from __future__ import annotations

import os
import sys

import typer

from gimcli.cli._app import app
from gimcli.cli._config import ConfigFileError, prepare
from gimcli.errors import GimError


def _register() -> None:
    from gimcli.cli import evaluate, explain, predict, simulate, train  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    _register()
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    from gimcli.cli._common import reset_logging

    reset_logging()
    try:
        # --config FILE.toml and GIM_<COMMAND>_<OPTION> variables, for every command
        args, settings = prepare(args, command)
    except ConfigFileError as e:
        typer.echo(f"gim: error: {e}", err=True)
        return 2
    try:
        # standalone mode: typer/click print usage errors themselves and exit 2
        command.main(args=args, prog_name="gim", standalone_mode=True, **settings)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except GimError as e:
        return _fail(f"gim: error: {e}", e.exit_code, type(e).__name__, as_json="--json" in args)
    except KeyboardInterrupt:
        typer.echo("gim: interrupted", err=True)
        return 130
    except Exception as e:  # a bug: one line here, the trace with GIM_DEBUG=1
        if os.environ.get("GIM_DEBUG"):
            raise
        msg = (
            f"gim: internal error: {type(e).__name__}: {e} (please report; GIM_DEBUG=1 shows a "
            "trace)"
        )
        return _fail(msg, 1, "InternalError", as_json="--json" in args)
    return 0


def _fail(message: str, code: int, kind: str, *, as_json: bool) -> int:
    """A failed command: its one line on stderr and at the end of the command's gim.log, and with
    --json an error object on stdout (status, exit_code, error, type)."""
    from gimcli.cli._common import emit_json, log_failure

    typer.echo(message, err=True)
    log_failure(message)
    if as_json:
        emit_json({"status": "error", "exit_code": code, "type": kind, "error": message})
    return code


def run() -> None:
    sys.exit(main())
