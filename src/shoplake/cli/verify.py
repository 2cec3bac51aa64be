"""`shoplake summary` and `shoplake verify`: how the lake stands, and whether its rows add up."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from shoplake.cli import app as cli


@cli.app.command()
def summary() -> None:
    """Rows per table, headline KPIs and the row-accounting balance."""
    from shoplake.reports import lake_summary

    report = lake_summary(cli.lake())
    rows = Table("table", "rows", "version")
    for name, count, version in report.tables:
        rows.add_row(name, f"{count:,}" if count is not None else "-", "-" if version is None else str(version))
    cli.console.print(rows)
    kpis = Table("KPI", "value")
    for name, value in report.kpis:
        kpis.add_row(name, value)
    cli.console.print(kpis)
    cli.console.print(report.ledger_line)
    cli.console.print(report.verify_line)
    cli.console.print(f"lake: {report.lake}")


@cli.app.command()
def verify(
    show_all: Annotated[bool, typer.Option("--all", help="list every reconciliation, not only failures")] = False,
) -> None:
    """Reconcile the lake across tables: files, bronze, quarantine, silver, gold and the ledger.

    Exit 1 with a table of what disagrees.
    """
    from shoplake.quality.verify import verify_lake

    result = verify_lake(cli.lake())
    shown = result.findings if show_all else result.failures
    if shown:
        out = Table("check", "subject", "what", "expected", "found", "ok", title="verify")
        for f in shown:
            out.add_row(f.check, f.subject, f.what, _figure(f.expected), _figure(f.found),
                        "yes" if f.ok else "[red]NO[/red]")
        cli.console.print(out)
    cli.console.print(result.verdict())
    if not result.ok:
        raise typer.Exit(1)


def _figure(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
