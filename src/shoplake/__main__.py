"""`python -m shoplake ...` runs the CLI (the same as the `shoplake` command)."""

from shoplake.cli import run

run()
