"""`shoplake generate`: realistic raw data in the exact source schemas."""

from __future__ import annotations

import shlex
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from shoplake.cli import app as cli
from shoplake.sources.schemas import sources_text


@cli.app.command()
def generate(
    source: Annotated[cli.Source, typer.Argument(help=sources_text())],
    out: Annotated[Path, typer.Option("--out", help="output folder")],
    rows: Annotated[int | None, typer.Option(help="data rows (default: a month of a small shop)")] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same bytes)")] = 42,
    start: Annotated[str, typer.Option(help="first day, YYYY-MM-DD")] = "2019-10-01",
    days: Annotated[int, typer.Option(help="number of days")] = 31,
    dirty_fraction: Annotated[float, typer.Option(help="share of realistic bad rows to plant")] = 0.0,
) -> None:
    """Generate realistic raw data (CSV.gz in the exact source schema) plus a truth side file."""
    from shoplake.synth import generate as generate_source

    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(f"--start {start!r} is not a date like 2019-10-01") from None
    with Progress(TextColumn("generating {task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"),
                  TimeElapsedColumn(), console=cli.console, transient=True) as progress:
        task = progress.add_task(source.value, total=rows)
        try:
            result = generate_source(source.value, out, rows=rows, seed=seed, start=first_day, days=days,
                                     dirty_fraction=dirty_fraction,
                                     progress=lambda n: progress.update(task, advance=n))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    files = ", ".join(str(f) for f in result.files)
    cli.console.print(f"{source.value}: {result.rows:,} rows ({result.dirty_rows:,} dirty) -> {files}")
    if result.truth_file:
        cli.console.print(f"planted truth: {result.truth_file} (a side folder that ingest passes by)")
    # One unwrapped line, so it can be copied and run as it is.
    cli.console.print(f"next: {_ingest_command(source.value, out)}", soft_wrap=True, markup=False, highlight=False)


def _ingest_command(source: str, out: Path) -> str:
    """The command that ingests what was just generated, with this invocation's --lake if it had one."""
    lake = cli.given_lake()
    prefix = f"shoplake --lake {shlex.quote(str(lake))}" if lake else "shoplake"
    return f"{prefix} ingest {source} {shlex.quote(str(out))}"
