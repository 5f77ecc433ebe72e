"""The self-contained HTML report of a run (PNG plots embedded), built without Jupyter."""

from gimcli.report.html import write_report

__all__ = ["write_report"]
