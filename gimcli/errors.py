"""Typed errors; only the CLI maps them to exit codes and one-line messages."""


class GimError(Exception):
    """Base class of every error gim raises on purpose."""

    exit_code = 3


class InputError(GimError):
    """Bad user input: a file, column, value or option that cannot be used."""

    exit_code = 3


class ModelError(GimError):
    """A run directory that cannot be loaded, or does not fit the data."""

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
