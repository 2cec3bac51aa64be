"""The `shoplake` command line: a thin layer over the Python API.

A `ShoplakeError` becomes one red line and exit code 1 (usage errors exit 2); `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoplake.config import Settings, load_settings
from shoplake.errors import ShoplakeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="shoplake: a local-first e-commerce lakehouse on Delta Lake.")
# Off a terminal (pipes, CI logs) Rich would wrap tables at 80 columns and cut table names.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class _State:
    settings: Settings | None = None
    overrides: dict = {}
    debug: bool = False


def _settings() -> Settings:
    if _State.settings is None:
        _State.settings = load_settings(**_State.overrides)
    return _State.settings


def _lake():
    from shoplake.lake import Lake

    return Lake(_settings())


@app.callback()
def _main(
    lake: Annotated[Path | None, typer.Option(help="lake folder (env SHOPLAKE_LAKE; default ./lakehouse)")] = None,
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
    _State.overrides = {"lake": lake, "engine": engine}
    _State.settings = None
    _State.debug = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


class Source(StrEnum):
    clickstream = "clickstream"
    products = "products"
    retail = "retail"


@app.command()
def ingest(
    source: Annotated[Source, typer.Argument(help="clickstream, products or retail")],
    paths: Annotated[list[str], typer.Argument(help="files, folders, globs, s3:// or http(s):// URLs")],
    encoding: Annotated[str, typer.Option(help="text encoding of CSV files: utf-8, latin-1 or cp1252 "
                                               "(windows-1252)")] = "utf-8",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="parse and count only; write nothing")] = False,
) -> None:
    """Ingest raw files into bronze.<source>; unparseable rows go to quarantine.<source>.

    All files are parsed before any is committed: one unreadable file means none is ingested.
    """
    from shoplake.ingest import ingest_files
    from shoplake.lake import new_run_id

    run_id = new_run_id()
    title = f"ingest {run_id}" + (" (dry run: nothing written)" if dry_run else "")
    table = Table("file", "status", "rows read", "bronze", "quarantined", "seconds", title=title)

    def show(result) -> None:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(result.quarantined.items()))
        status = {"skipped": "skipped (already ingested)",
                  "dry-run": "would be ingested"}.get(result.status, result.status)
        table.add_row(result.uri, status, f"{result.rows_read:,}", f"{result.rows_bronze:,}",
                      f"{result.rows_quarantined:,}" + (f" ({reasons})" if reasons else ""),
                      f"{result.seconds:.1f}")
        console.print(f"{result.uri}: {status}, {result.rows_bronze:,} rows to bronze.{source.value}"
                      + (f", {result.rows_quarantined:,} quarantined" if result.rows_quarantined else ""))

    with console.status(f"{'reading' if dry_run else 'ingesting'} {source.value} ..."):
        ingest_files(_lake(), source.value, paths, run_id=run_id, on_file=show, encoding=encoding, dry_run=dry_run)
    console.print(table)


@app.command()
def build(
    selection: Annotated[str | None, typer.Argument(
        help="tables to build: silver.events, gold.daily_funnel+ (with downstream), +gold.customer_rfm "
             "(with upstream), silver, gold; default all")] = None,
) -> None:
    """Build Silver and Gold tables in dependency order (incremental; unchanged tables are skipped)."""
    from shoplake.build import build_tables
    from shoplake.lake import new_run_id

    lake = _lake()
    run_id = new_run_id()
    specs = lake.catalog.select(selection)
    table = Table("table", "status", "rows written", "version", "rows in", "diverted", "seconds",
                  title=f"build {run_id}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("building", total=len(specs))

        def show(result) -> None:
            progress.update(task, advance=1, description=f"built {result.table}")
            entry = result.ledger
            diverted = ", ".join(f"{k}={v:,}" for k, v in sorted(entry.diverted.items())) if entry else ""
            style = {"failed": "red", "skipped": "yellow"}.get(result.status, "")
            table.add_row(result.table, f"[{style}]{result.status}[/]" if style else result.status,
                          f"{result.rows_written:,}", "" if result.version is None else str(result.version),
                          f"{entry.rows_in:,}" if entry else "", diverted or result.message,
                          f"{result.seconds:.1f}")

        results = build_tables(lake, selection, run_id=run_id, on_table=show)
    console.print(table)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        err_console.print(f"[red]error: {result.message}[/red]")
    if failed:
        raise typer.Exit(1)


@app.command()
def tables() -> None:
    """List every table: layer, rows, latest version and description."""
    lake = _lake()
    out = Table("table", "layer", "rows", "version", "description")
    for spec in lake.catalog.ordered():
        exists = lake.store.exists(spec.name)
        out.add_row(spec.name, spec.layer, f"{lake.store.row_count(spec.name):,}" if exists else "-",
                    str(lake.store.version(spec.name)) if exists else "-", spec.description)
    console.print(out)


@app.command()
def describe(table: Annotated[str, typer.Argument(help="catalog name, e.g. gold.daily_funnel")]) -> None:
    """Show a table's grain, columns, lineage, checks and latest version."""
    lake = _lake()
    spec = lake.catalog.get(table)
    exists = lake.store.exists(spec.name)
    console.print(f"[bold]{spec.name}[/bold]  ({spec.layer}, build: {spec.build})")
    console.print(spec.description)
    console.print(f"grain: {', '.join(spec.grain)}")
    console.print(f"upstream: {', '.join(lake.catalog.upstream(spec.name)) or '-'}")
    console.print(f"downstream: {', '.join(lake.catalog.downstream(spec.name)) or '-'}")
    console.print(f"location: {lake.store.path(spec.name)}")
    if exists:
        console.print(f"latest version: {lake.store.version(spec.name)}, rows: {lake.store.row_count(spec.name):,}")
    else:
        console.print("latest version: not written yet")
    columns = Table("column", "type", "description")
    for column in spec.columns:
        columns.add_row(column.name, column.type, column.description)
    console.print(columns)
    if spec.checks:
        checks = Table("check", "fails when", "action")
        for check in spec.checks:
            checks.add_row(check.name, check.failing_sql, check.action)
        console.print(checks)


@app.command()
def history(
    table: Annotated[str, typer.Argument(help="catalog name")],
    limit: Annotated[int, typer.Option(help="newest N commits")] = 20,
) -> None:
    """Show a table's Delta history (versions, operations, rows, runs)."""
    lake = _lake()
    spec = lake.catalog.get(table)
    out = Table("version", "timestamp", "operation", "rows added", "run", "write key", title=spec.name)
    for commit in lake.store.history(spec.name, limit):
        out.add_row(str(commit.version), commit.timestamp.strftime("%Y-%m-%d %H:%M:%S"), commit.operation,
                    "" if commit.rows_added is None else f"{commit.rows_added:,}",
                    str(commit.meta.get("run_id", "")), str(commit.meta.get("write_key", "")))
    console.print(out)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one read-only query; tables by catalog name; "
                                              "`t VERSION AS OF n` reads an earlier version")],
    format: Annotated[Format, typer.Option("--format", "-f", help="table, csv or json")] = Format.table,
    limit: Annotated[int | None, typer.Option(help="at most N rows")] = None,
) -> None:
    """Run a read-only SQL query over the lake."""
    from shoplake.query import run_query

    result = run_query(_lake(), query, limit=limit)
    if format is Format.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.column_names)
        for row in result.to_pylist():
            writer.writerow([_plain(v) for v in row.values()])
        sys.stdout.write(buffer.getvalue())
    elif format is Format.json:
        sys.stdout.write(json.dumps([{k: _plain(v) for k, v in row.items()} for row in result.to_pylist()],
                                    indent=None) + "\n")
    else:
        out = Table(*result.column_names)
        for row in result.to_pylist():
            out.add_row(*("NULL" if v is None else str(_plain(v)) for v in row.values()))
        console.print(out)
        console.print(f"{result.num_rows:,} row(s)")


@app.command()
def generate(
    source: Annotated[Source, typer.Argument(help="clickstream, products or retail")],
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
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(source.value, total=rows)
        try:
            result = generate_source(source.value, out, rows=rows, seed=seed, start=first_day, days=days,
                                     dirty_fraction=dirty_fraction,
                                     progress=lambda n: progress.update(task, advance=n))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    files = ", ".join(str(f) for f in result.files)
    console.print(f"{source.value}: {result.rows:,} rows ({result.dirty_rows:,} dirty) -> {files}")
    if result.truth_file:
        console.print(f"planted truth: {result.truth_file}")


@app.command()
def summary() -> None:
    """Rows per table, headline KPIs and the row-accounting balance."""
    from shoplake.reports import lake_summary

    report = lake_summary(_lake())
    rows = Table("table", "rows", "version")
    for name, count, version in report.tables:
        rows.add_row(name, f"{count:,}" if count is not None else "-", "-" if version is None else str(version))
    console.print(rows)
    kpis = Table("KPI", "value")
    for name, value in report.kpis:
        kpis.add_row(name, value)
    console.print(kpis)
    console.print(report.ledger_line)
    console.print(report.verify_line)
    console.print(f"lake: {report.lake}")


@app.command()
def verify(
    show_all: Annotated[bool, typer.Option("--all", help="list every reconciliation, not only failures")] = False,
) -> None:
    """Reconcile the lake across tables: files, bronze, quarantine, silver, gold and the ledger.

    Exit 1 with a table of what disagrees.
    """
    from shoplake.quality.verify import verify_lake

    result = verify_lake(_lake())
    shown = result.findings if show_all else result.failures
    if shown:
        out = Table("check", "subject", "what", "expected", "found", "ok", title="verify")
        for f in shown:
            out.add_row(f.check, f.subject, f.what, _figure(f.expected), _figure(f.found),
                        "yes" if f.ok else "[red]NO[/red]")
        console.print(out)
    console.print(result.verdict())
    if not result.ok:
        raise typer.Exit(1)


_SELECTION_HELP = "table or layer names (silver.events, ops, 'gold bronze'); default every table"


def _retention_hours(text: str | None) -> float | None:
    """`7d`, `36h` or a number of hours."""
    if text is None:
        return None
    value = text.strip().lower()
    try:
        if value.endswith("d"):
            return float(value[:-1]) * 24
        return float(value.removesuffix("h"))
    except ValueError:
        raise ShoplakeError(f"--retain {text!r}: expected a duration such as 7d or 36h") from None


def _maintenance_table(report, title: str) -> None:
    out = Table("table", "files before", "files after", "compacted", "files removed", "checkpoint", "seconds",
                title=title)
    for t in report.tables:
        out.add_row(t.table, f"{t.files_before:,}", f"{t.files_after:,}",
                    "z-order" if t.zordered else ("yes" if t.compacted else ""), f"{t.files_vacuumed:,}",
                    "yes" if t.checkpoint else "", f"{t.seconds:.1f}")
    console.print(out)
    console.print(report.describe())


@app.command()
def optimize(
    selection: Annotated[str | None, typer.Argument(help=_SELECTION_HELP)] = None,
    zorder: Annotated[bool, typer.Option("--zorder", help="cluster by each table's declared zorder_by columns "
                                                          "(rewrites the whole table)")] = False,
) -> None:
    """Compact each table's small files into files of its declared target size (rows unchanged)."""
    from shoplake.maintenance import maintain

    _maintenance_table(maintain(_lake(), selection, vacuum=False, zorder=zorder), "optimize")


@app.command()
def vacuum(
    selection: Annotated[str | None, typer.Argument(help=_SELECTION_HELP)] = None,
    retain: Annotated[str | None, typer.Option(help="keep files any version of this age needs, e.g. 7d or 36h "
                                                    "(default: each table's declared retention, 7d)")] = None,
    allow_short_retention: Annotated[bool, typer.Option(
        help="accept --retain below a table's declared retention (breaks time travel before it)")] = False,
    dry_run: Annotated[bool, typer.Option(help="list the counts, delete nothing")] = False,
) -> None:
    """Delete files no version within the retention needs (and files no commit ever referenced)."""
    from shoplake.maintenance import maintain

    report = maintain(_lake(), selection, compact=False, retain_hours=_retention_hours(retain),
                      allow_short_retention=allow_short_retention, dry_run=dry_run)
    _maintenance_table(report, "vacuum (dry run)" if dry_run else "vacuum")


@app.command()
def maintain(
    selection: Annotated[str | None, typer.Argument(help=_SELECTION_HELP)] = None,
) -> None:
    """Optimize, vacuum and checkpoint (what the daily job's `maintain` task runs)."""
    from shoplake.maintenance import maintain as run_maintenance

    _maintenance_table(run_maintenance(_lake(), selection), "maintain")


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


batches_app = typer.Typer(no_args_is_help=True,
                          help="Bronze batches: list them, exclude one from builds, include it again.")
app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def batches_list(source: Annotated[Source | None, typer.Argument(help="one source; default all")] = None) -> None:
    """Every bronze batch: file, rows, which Silver tables consumed it, exclusions."""
    from shoplake.quality.batches import list_batches

    out = Table()
    out.add_column("batch", no_wrap=True)  # ids are copied into `batches exclude`: keep them whole
    for name in ("file", "rows", "ingested", "consumed by", "waiting for", "excluded"):
        out.add_column(name)
    for info in list_batches(_lake(), source.value if source else None):
        out.add_row(info.batch_id, info.source_file, "" if info.rows is None else f"{info.rows:,}",
                    info.ingested_at.strftime("%Y-%m-%d %H:%M:%S"), ", ".join(info.consumed_by) or "-",
                    ", ".join(info.waiting_for) or "-", info.excluded or "")
    console.print(out)


@batches_app.command("exclude")
def batches_exclude(
    batch_id: Annotated[str, typer.Argument(help="a batch id from `shoplake batches list`")],
    reason: Annotated[str, typer.Option(help="why (recorded in ops.batch_exclusions)")],
) -> None:
    """Keep builds from consuming a batch no Silver table has consumed yet (reversible: `include`)."""
    from shoplake.quality.batches import exclude_batch

    info = exclude_batch(_lake(), batch_id, reason)
    console.print(f"excluded {info.batch_id} ({info.source_file}): later builds skip it; "
                  f"`shoplake batches include {info.batch_id}` reverses this")


@batches_app.command("include")
def batches_include(
    batch_id: Annotated[str, typer.Argument(help="an excluded batch id")],
    reason: Annotated[str, typer.Option(help="why (recorded)")] = "",
) -> None:
    """Reverse an exclusion: the next build consumes the batch."""
    from shoplake.quality.batches import include_batch

    info = include_batch(_lake(), batch_id, reason)
    console.print(f"included {info.batch_id} again: the next build consumes it")


def _register_command_groups() -> None:
    """Command groups that live with their subsystem (jobs, ml, ...): one line each."""
    from shoplake.ml.cli import register as _ml; _ml(app)  # noqa: E702, I001
    from shoplake.jobs.cli import register as _jobs; _jobs(app)  # noqa: E702, I001
    from shoplake.serve.cli import register as _serve; _serve(app)  # noqa: E702, I001


_register_command_groups()


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
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
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


if __name__ == "__main__":
    # `python -m shoplake.cli` loads this file as `__main__`; the command groups import `shoplake.cli`,
    # which would be a second copy with its own settings. Run the one copy everything else imports.
    from shoplake.cli import run as _run

    _run()
