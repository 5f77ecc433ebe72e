"""Shared CLI plumbing: logging, output directories, JSON summaries, option parsing."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from gimcli._version import __version__
from gimcli.errors import InputError

_HANDLERS: list[logging.Handler] = []


def reset_logging() -> None:
    """Forget the handlers of an earlier command in this process (its gim.log is not ours)."""
    root = logging.getLogger("gimcli")
    for h in _HANDLERS:
        root.removeHandler(h)
        h.close()
    _HANDLERS.clear()


def setup_logging(*, quiet: bool = False, log_file: Path | None = None) -> None:
    """Rich on a terminal, plain timestamped lines otherwise (SLURM logs); plus <out>/gim.log."""
    root = logging.getLogger("gimcli")
    for h in _HANDLERS:
        root.removeHandler(h)
        h.close()
    _HANDLERS.clear()
    root.setLevel(logging.INFO)
    root.propagate = False
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        h: logging.Handler = RichHandler(show_path=False, markup=False)
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s gim %(levelname)s %(message)s", "%H:%M:%S"))
    h.setLevel(logging.WARNING if quiet else logging.INFO)
    _HANDLERS.append(h)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh.setLevel(logging.DEBUG)
        with open(log_file, "a") as f:
            f.write(f"# gim {__version__}: {shlex.join(['gim', *sys.argv[1:]])}\n")
        _HANDLERS.append(fh)
    for h in _HANDLERS:
        root.addHandler(h)


def log_failure(message: str) -> None:
    """The error that ends a command, written to the command's gim.log (when it has one)."""
    for h in _HANDLERS:
        if isinstance(h, logging.FileHandler):
            h.handle(
                logging.makeLogRecord(
                    {"name": "gimcli", "levelno": 40, "levelname": "ERROR", "msg": message}
                )
            )
            h.flush()


def emit_json(summary: dict) -> None:
    """The one machine-readable line on stdout (human text goes to stderr)."""
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    sys.stdout.flush()


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def parse_floats(value: str | None, *, option: str) -> list[float] | None:
    items = split_list(value)
    if items is None:
        return None
    try:
        return [float(v) for v in items]
    except ValueError:
        raise InputError(f"{option} {value!r}: expected comma-separated numbers") from None


def parse_kv(values: list[str] | None, *, option: str) -> dict[str, str]:
    out = {}
    for v in values or []:
        if "=" not in v:
            raise InputError(f"{option} {v!r}: expected KEY=VALUE")
        k, val = v.split("=", 1)
        out[k.strip()] = val.strip()
    return out


def api_options(params: dict, func, *, skip: tuple[str, ...] = ()) -> dict:
    """The command's parsed options that the library function `func` takes, by name: every
    command passes its options through to gimcli.api unchanged (tests/test_api.py checks that
    each option is a keyword of its function, with the same default)."""
    import inspect

    kw = inspect.Parameter.KEYWORD_ONLY
    names = {n for n, p in inspect.signature(func).parameters.items() if p.kind == kw}
    return {k: v for k, v in params.items() if k in names and k not in skip}
