"""`python -m gimcli ...` (also what `torchrun -m gimcli train ...` runs)."""

from gimcli.cli import run

run()
