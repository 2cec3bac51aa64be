"""The core commands: `ingest`, `build`, `tables`, `describe`, `history` and `sql`."""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shoplake.cli import app as cli
from shoplake.sources.schemas import sources_text


@cli.app.command()
def ingest(
    source: Annotated[cli.Source, typer.Argument(help=sources_text())],
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
        cli.console.print(f"{result.uri}: {status}, {result.rows_bronze:,} rows to bronze.{source.value}"
                      + (f", {result.rows_quarantined:,} quarantined" if result.rows_quarantined else ""))

    with cli.console.status(f"{'reading' if dry_run else 'ingesting'} {source.value} ..."):
        ingest_files(cli.lake(), source.value, paths, run_id=run_id, on_file=show, encoding=encoding, dry_run=dry_run)
    cli.console.print(table)


@cli.app.command()
def build(
    selection: Annotated[str | None, typer.Argument(
        help="tables to build: silver.events, gold.daily_funnel+ (with downstream), +gold.customer_rfm "
             "(with upstream), silver, gold; default all")] = None,
) -> None:
    """Build Silver and Gold tables in dependency order (incremental; unchanged tables are skipped)."""
    from shoplake.build import build_tables
    from shoplake.lake import new_run_id

    lake = cli.lake()
    run_id = new_run_id()
    specs = lake.catalog.select(selection)
    table = Table("table", "status", "rows written", "version", "rows in", "diverted", "seconds",
                  title=f"build {run_id}")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=cli.console, transient=True) as progress:
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
    cli.console.print(table)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        cli.err_console.print(f"[red]error: {result.message}[/red]")
    if failed:
        raise typer.Exit(1)


@cli.app.command()
def tables() -> None:
    """List every table: layer, rows, latest version and description."""
    lake = cli.lake()
    out = Table("table", "layer", "rows", "version", "description")
    for spec in lake.catalog.ordered():
        exists = lake.store.exists(spec.name)
        out.add_row(spec.name, spec.layer, f"{lake.store.row_count(spec.name):,}" if exists else "-",
                    str(lake.store.version(spec.name)) if exists else "-", spec.description)
    cli.console.print(out)


@cli.app.command()
def describe(table: Annotated[str, typer.Argument(help="catalog name, e.g. gold.daily_funnel")]) -> None:
    """Show a table's grain, columns, lineage, checks and latest version."""
    lake = cli.lake()
    spec = lake.catalog.get(table)
    exists = lake.store.exists(spec.name)
    cli.console.print(f"[bold]{spec.name}[/bold]  ({spec.layer}, build: {spec.build})")
    cli.console.print(spec.description)
    cli.console.print(f"grain: {', '.join(spec.grain)}")
    cli.console.print(f"upstream: {', '.join(lake.catalog.upstream(spec.name)) or '-'}")
    cli.console.print(f"downstream: {', '.join(lake.catalog.downstream(spec.name)) or '-'}")
    cli.console.print(f"location: {lake.store.path(spec.name)}")
    if exists:
        cli.console.print(f"latest version: {lake.store.version(spec.name)}, rows: {lake.store.row_count(spec.name):,}")
    else:
        cli.console.print("latest version: not written yet")
    columns = Table("column", "type", "description")
    for column in spec.columns:
        columns.add_row(column.name, column.type, column.description)
    cli.console.print(columns)
    if spec.checks:
        checks = Table("check", "fails when", "action")
        for check in spec.checks:
            checks.add_row(check.name, check.failing_sql, check.action)
        cli.console.print(checks)


@cli.app.command()
def history(
    table: Annotated[str, typer.Argument(help="catalog name")],
    limit: Annotated[int, typer.Option(help="newest N commits")] = 20,
) -> None:
    """Show a table's Delta history (versions, operations, rows, runs)."""
    lake = cli.lake()
    spec = lake.catalog.get(table)
    out = Table("version", "timestamp", "operation", "rows added", "run", "write key", title=spec.name)
    for commit in lake.store.history(spec.name, limit):
        out.add_row(str(commit.version), commit.timestamp.strftime("%Y-%m-%d %H:%M:%S"), commit.operation,
                    "" if commit.rows_added is None else f"{commit.rows_added:,}",
                    str(commit.meta.get("run_id", "")), str(commit.meta.get("write_key", "")))
    cli.console.print(out)


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


@cli.app.command()
def sql(
    query: Annotated[str, typer.Argument(help="one read-only query; tables by catalog name; "
                                              "`t VERSION AS OF n` reads an earlier version")],
    format: Annotated[Format, typer.Option("--format", "-f", help="table, csv or json")] = Format.table,
    limit: Annotated[int | None, typer.Option(help="at most N rows")] = None,
) -> None:
    """Run a read-only SQL query over the lake."""
    from shoplake.query import run_query

    result = run_query(cli.lake(), query, limit=limit)
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
        cli.console.print(out)
        cli.console.print(f"{result.num_rows:,} row(s)")


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e9 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return str(value)


@cli.app.command()
def profile(
    table: Annotated[str, typer.Argument(help="catalog name, e.g. silver.events")],
    column: Annotated[list[str] | None, typer.Option("--column", "-c", help="only this column (repeatable); "
                                                     "shows its quantiles, top values and histogram")] = None,
    version: Annotated[int | None, typer.Option(help="profile an earlier version (time travel)")] = None,
    top: Annotated[int, typer.Option(help="top values per column")] = 10,
    bins: Annotated[int, typer.Option(help="histogram bins for numbers and times")] = 20,
    format: Annotated[Format, typer.Option("--format", "-f", help="table or json")] = Format.table,
    refresh: Annotated[bool, typer.Option(help="recompute even if this table version was profiled before")] = False,
) -> None:
    """Profile a table's columns: nulls, distinct values, min / max / quantiles, top values, histogram.

    One scan of the table; the result is kept per table version, so asking again is instant.
    """
    from shoplake.profile import profile_table

    found = profile_table(cli.lake(), table, columns=column or None, version=version, top=top, bins=bins,
                          use_cache=not refresh)
    if format is not Format.table:
        sys.stdout.write(json.dumps(found.to_json() | {"cached": found.cached}) + "\n")
        return
    source = "from the cache" if found.cached else f"computed in {found.seconds:.2f} s"
    cli.console.print(f"[bold]{found.table}[/bold] version {found.version}: {found.rows:,} rows ({source})")
    summary = Table("column", "type", "nulls", "distinct", "min", "median", "max", "most frequent (share)")
    for c in found.columns:
        nulls = f"{c.null_share:.1%}" + (f" +{c.nans:,} NaN" if c.nans else "")
        common = f"{_shown(c.top[0][0])} ({c.share(c.top[0][1]):.1%})" if c.top else "-"
        summary.add_row(c.name, c.type, nulls, f"{c.distinct:,}", _shown(c.minimum), _shown(c.quantiles.get("p50")),
                        _shown(c.maximum), common)
    cli.console.print(summary)
    if not column:
        cli.console.print("details of one column: shoplake profile TABLE --column NAME")
        return
    for c in found.columns:
        if c.quantiles:
            quantiles = Table(*c.quantiles, title=f"{c.name}: quantiles")
            quantiles.add_row(*(_shown(v) for v in c.quantiles.values()))
            cli.console.print(quantiles)
        values = Table("value", "rows", "share", title=f"{c.name}: top {len(c.top)} values")
        for value, count in c.top:
            values.add_row(_shown(value), f"{count:,}", f"{c.share(count):.2%}")
        cli.console.print(values)
        if c.histogram:
            widest = max(count for _, _, count in c.histogram) or 1
            bars = Table("from", "to", "rows", "", title=f"{c.name}: histogram")
            for low, high, count in c.histogram:
                bars.add_row(_shown(low), _shown(high), f"{count:,}", "█" * round(30 * count / widest))
            cli.console.print(bars)
