"""The package version, in a module of its own: every layer reads it, none imports `gimcli`."""

__version__ = "0.1.0"
