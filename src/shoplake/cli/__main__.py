"""`python -m shoplake.cli ...` runs the CLI (the same as `python -m shoplake` and the `shoplake` command)."""

from shoplake.cli import run

run()
