"""`python -m shoplake ...` runs the CLI (the same as the `shoplake` command; the runner's task workers run
`python -m shoplake ... jobs task ...`)."""

from shoplake.cli import run

run()
