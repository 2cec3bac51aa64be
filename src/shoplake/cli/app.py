"""The `shoplake` application: the Typer app, its consoles, settings and the error wrapper.

Every command group (`shoplake.cli.core`, `.jobs`, `.ml`, ...) imports this module and adds its commands
to `app`; `shoplake.cli` imports the groups. A group imports nothing else at module level but Typer and
Rich: the library modules it drives are imported inside its commands, so `shoplake --help` and a job's
task worker start without loading scikit-learn, MLflow or FastAPI.

A `ShoplakeError` becomes one red line and exit code 1 (usage errors exit 2); `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from shoplake.errors import ShoplakeError
from shoplake.sources.schemas import SOURCES

if TYPE_CHECKING:
    from shoplake.config import Settings
    from shoplake.lake import Lake

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="shoplake: a local-first e-commerce lakehouse on Delta Lake.")
# Off a terminal (pipes, CI logs) Rich would wrap tables at 80 columns and cut table names.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class _State:
    settings: Settings | None = None
    overrides: dict = {}
    debug: bool = False


def settings() -> Settings:
    """The settings of this invocation, loaded once (defaults, file, environment, then the flags)."""
    from shoplake.config import load_settings  # pydantic loads when a command needs settings, not for --help

    if _State.settings is None:
        _State.settings = load_settings(**_State.overrides)
    return _State.settings


def given_lake() -> Path | None:
    """The `--lake` folder given on this command line, if any (for printing commands to run next)."""
    return _State.overrides.get("lake")


def lake(**changes) -> Lake:
    """The lake of this invocation; `changes` replace settings (a command's own `--landing`, say)."""
    from dataclasses import replace

    from shoplake.lake import Lake

    chosen = settings()
    given = {key: value for key, value in changes.items() if value is not None}
    return Lake(replace(chosen, **given) if given else chosen)


@app.callback()
def _main(
    lake_folder: Annotated[Path | None, typer.Option("--lake", help="lake folder (env SHOPLAKE_LAKE; default "
                                                                   "./lakehouse)")] = None,
    engine: Annotated[str | None, typer.Option(help="duckdb (default) or spark (env SHOPLAKE_ENGINE)")] = None,
    debug: Annotated[bool, typer.Option(help="show tracebacks")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False,
    wait_timeout: Annotated[float | None, typer.Option(
        help="seconds to wait for a table another process is writing before giving up (default 3600)")] = None,
) -> None:
    from shoplake import locks

    # Writers take turns per table; a process that waits says so once, on stderr.
    locks.configure(wait_seconds=wait_timeout,
                    on_wait=lambda message: err_console.print(f"[yellow]{message} ...[/yellow]", highlight=False))
    _State.overrides = {"lake": lake_folder, "engine": engine}
    _State.settings = None
    _State.debug = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


# The sources as a choice on the command line (the registry in `shoplake.sources.schemas`).
Source = StrEnum("Source", {name: name for name in SOURCES})  # type: ignore[misc]  # members from the registry


def main() -> None:
    """Entry point: run the app, turning shoplake errors into one red line."""
    try:
        # With standalone_mode=False, typer returns the code of a `typer.Exit` instead of exiting.
        code = app(standalone_mode=False)
    except ShoplakeError as exc:
        if _State.debug:
            raise
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors arrive here in standalone_mode=False. Typer 0.29 raises its bundled copy of
        # click's exceptions (not `click.ClickException`), so recognise them by what they can do.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
    sys.exit(code or 0)


def run() -> None:
    """The console script: `main`, then leave without interpreter finalisation.

    The native runtimes the CLI loads (DuckDB's and delta-rs's thread pools) can race with Python's
    teardown and abort ("terminate called without an active exception") after the work is done and
    committed; seen in long-running `run --watch`. Every write has committed by then, so skip teardown.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

