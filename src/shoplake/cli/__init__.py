"""The `shoplake` command line: a thin layer over the Python API.

`app.py` holds the Typer app, the consoles, the settings of one invocation and the error wrapper; each
other module is one command group that imports only `app.py` (and, inside its commands, the library
modules it drives). Importing this package registers every group, in the order `shoplake --help` lists
them.
"""

from shoplake.cli import core, generate, verify, maintenance, batches, ml, jobs, serve  # noqa: F401, I001  (help order)
from shoplake.cli.app import main, run

__all__ = ["main", "run"]
