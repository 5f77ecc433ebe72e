"""Option values from a TOML file and from GIM_* environment variables, for every command: one
place, applied when `main` starts a command (no option declaration knows about it).

Precedence, highest first: a flag on the command line > an environment variable > the config
file > the option's default (click's own order: command line, envvar, default_map, default).

- Environment: ``GIM_<COMMAND>_<NAME>``, NAME the option's keyword in gimcli.api (its flag with
  '_' for '-'), upper case: ``GIM_TRAIN_STEPS=600``, ``GIM_PREDICT_N_CELLS=200``,
  ``GIM_TRAIN_FIX_GRAPH=1``. ``GIM_CONFIG`` names a config file for every command.
- File (``--config FILE.toml``, anywhere on the command line): keys are the flags' names
  (``dose-key`` or ``dose_key``); a ``[train]``, ``[predict]``, ... table applies to that command,
  top-level keys to every command that has the option (a table's value wins). Comma-list options
  take TOML lists, ``--covariate`` a table (``covariate = {cell_type = "k562"}``). A key that no
  command has, or that the command's table names but the command lacks, is refused (exit 2).

`invocation(params)` gives, inside a command, each option's value and where it came from
(flag, env, file, default); `gim train` records it in model.json ("options").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "GIM"
CONFIG_ENV = "GIM_CONFIG"
CONFIG_FLAG = "--config"


class ConfigFileError(Exception):
    """A config file that cannot be read or names an option no command has (a usage error)."""


@dataclass
class Invocation:
    """What `main` knows of the command being run: its name, the command line, the values the
    config file set and the file."""

    command: str | None = None
    args: list[str] = field(default_factory=list)
    from_file: dict = field(default_factory=dict)
    config_file: str | None = None


CURRENT = Invocation()


def _norm(key: str) -> str:
    return key.strip().lstrip("-").replace("-", "_").lower()


def _options(cmd) -> list:
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and p.name]


def _keys_of(cmd) -> dict:
    """Every name an option goes by in a file (its long flags and its parameter name)."""
    out = {}
    for p in _options(cmd):
        for n in [p.name, *(o for o in p.opts if o.startswith("--"))]:
            out[_norm(n)] = p
    return out


def env_name(command: str, name: str) -> str:
    return f"{ENV_PREFIX}_{command.upper()}_{name.upper()}"


def split_config(args: list[str]) -> tuple[list[str], str | None]:
    """The command line without `--config FILE` (anywhere in it), and FILE (else GIM_CONFIG)."""
    rest, path = [], None
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        if a == CONFIG_FLAG:
            if i + 1 >= len(args):
                raise ConfigFileError(f"{CONFIG_FLAG} needs a file")
            path = args[i + 1]
            next(it, None)
        elif a.startswith(CONFIG_FLAG + "="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
    return rest, path or os.environ.get(CONFIG_ENV) or None


def _value(p, v, where: str):
    """A TOML value as the option takes it: a list of a comma option joined, a table of a
    repeatable KEY=VALUE option as its items."""
    if getattr(p, "multiple", False):
        if isinstance(v, dict):
            return [f"{k}={x}" for k, x in v.items()]
        return [str(x) for x in v] if isinstance(v, list) else [str(v)]
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    if isinstance(v, dict):
        raise ConfigFileError(f"{where}: a table is not a value of this option")
    return v


def load_config(path: str, group, command: str | None) -> dict:
    """{command: {parameter: value}} from the TOML file, checked against every command."""
    import tomllib

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigFileError(f"{CONFIG_FLAG} {path}: cannot read as TOML ({e})") from None
    commands = group.commands
    known = {name: _keys_of(c) for name, c in commands.items()}
    for name, table in data.items():
        if isinstance(table, dict) and name in commands:
            for k in table:
                if _norm(k) not in known[name]:
                    raise ConfigFileError(f"{path}: [{name}] {k!r} is not an option of gim {name}")
        elif not any(_norm(name) in opts for opts in known.values()):
            raise ConfigFileError(f"{path}: no gim command has an option {name!r}")
    if command not in commands:
        return {}
    mine, out = known[command], {}
    top = {k: v for k, v in data.items() if not (isinstance(v, dict) and k in commands)}
    for k, v in [*top.items(), *data.get(command, {}).items()]:
        if _norm(k) in mine:
            p = mine[_norm(k)]
            out[p.name] = _value(p, v, f"{path}: {k}")
    return {command: out}


def prepare(args: list[str], group) -> tuple[list[str], dict]:
    """Before a command runs: the command line without --config, and the keyword arguments of
    click's `main` that give every command its file values and GIM_* variables."""
    args, path = split_config(args)
    command = next((a for a in args if not a.startswith("-")), None)
    from_file = load_config(path, group, command) if path else {}
    CURRENT.command, CURRENT.args = command, list(args)
    CURRENT.from_file = from_file.get(command, {}) if command else {}
    CURRENT.config_file = path
    for name, cmd in group.commands.items():
        note = (
            f"Options can also be set in a TOML file ({CONFIG_FLAG} FILE or {CONFIG_ENV}; a "
            f"table named {name}) and in {ENV_PREFIX}_{name.upper()}_<OPTION> variables; a "
            "flag wins over the environment, which wins over the file."
        )
        cmd.epilog = f"{cmd.epilog}\n\n{note}" if cmd.epilog else note
        for p in _options(cmd):  # a flag takes no value: --help shows none (not "<bool>")
            if getattr(p, "is_flag", False):
                p.metavar = ""
        help_opt = cmd.get_help_option(cmd.context_class(cmd))  # cached by the command
        if help_opt is not None:
            help_opt.metavar = ""
    return args, {"default_map": from_file, "auto_envvar_prefix": ENV_PREFIX}


def _given(p, args: list[str]) -> bool:
    flags = [*p.opts, *getattr(p, "secondary_opts", [])]
    return any(
        a == f or (f.startswith("--") and a.startswith(f + "=")) for a in args for f in flags
    )


def invocation(params: dict) -> dict:
    """Inside a command: every option's value, where it came from (flag, env, file, default)
    and the config file, JSON-able (model.json "options")."""
    import typer

    from gimcli.cli._app import app

    cmd = typer.main.get_command(app).commands.get(CURRENT.command or "")
    sources = {}
    for p in _options(cmd) if cmd is not None else []:
        if _given(p, CURRENT.args):
            sources[p.name] = "flag"
        elif env_name(CURRENT.command, p.name) in os.environ:
            sources[p.name] = "env"
        elif p.name in CURRENT.from_file:
            sources[p.name] = "file"
        else:
            sources[p.name] = "default"
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    return {"values": values, "sources": sources, "config_file": CURRENT.config_file}
