"""Typed errors; only the CLI maps them to exit codes and one-line messages.

Exit codes: 0 ok, 1 a bug, 2 usage (click), 3 bad input (`InputError`: a file, column, value or
option, including data that do not fit a run, e.g. missing genes or perturbations its features
cannot describe), 4 a run directory that cannot be loaded (`ModelError`), 5 training failed
(`TrainingError`), 75 preempted (`Preempted`).
"""


class GimError(Exception):
    """Base class of every error gim raises on purpose."""

    exit_code = 3


class InputError(GimError):
    """Bad user input: a file, column, value or option that cannot be used."""

    exit_code = 3


class ModelError(GimError):
    """A run directory that cannot be loaded (missing, corrupt, tampered, another format). Data
    that do not fit a run are an `InputError`."""

    exit_code = 4


class CheckpointMismatch(ModelError):
    """A model or checkpoint from an incompatible version or configuration."""

    exit_code = 4


class TrainingError(GimError):
    """Training diverged or could not proceed."""

    exit_code = 5


class Preempted(GimError):
    """Training stopped by SIGTERM/SIGUSR1 after saving a checkpoint; rerun with --resume."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, the same command will continue


class ConfigError(InputError):
    """A configuration field with a value it cannot take; `field` names it (the CLI maps it to
    its flag)."""

    def __init__(self, field: str, value: object, rule: str):
        super().__init__(f"{field}={value!r}: {rule}")
        self.field, self.value, self.rule = field, value, rule


def weights_only_reason(e: BaseException) -> str:
    """The part of torch's `weights_only=True` refusal message that names the refused object."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()]
    return (named or lines or [""])[0][:200]
