"""`shoplake optimize`, `shoplake vacuum` and `shoplake maintain`: table maintenance."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from shoplake.cli import app as cli
from shoplake.errors import ShoplakeError

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
    cli.console.print(out)
    cli.console.print(report.describe())


@cli.app.command()
def optimize(
    selection: Annotated[str | None, typer.Argument(help=_SELECTION_HELP)] = None,
    zorder: Annotated[bool, typer.Option("--zorder", help="cluster by each table's declared zorder_by columns "
                                                          "(rewrites the whole table)")] = False,
) -> None:
    """Compact each table's small files into files of its declared target size (rows unchanged)."""
    from shoplake.maintenance import maintain

    _maintenance_table(maintain(cli.lake(), selection, vacuum=False, zorder=zorder), "optimize")


@cli.app.command()
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

    report = maintain(cli.lake(), selection, compact=False, retain_hours=_retention_hours(retain),
                      allow_short_retention=allow_short_retention, dry_run=dry_run)
    _maintenance_table(report, "vacuum (dry run)" if dry_run else "vacuum")


@cli.app.command()
def maintain(
    selection: Annotated[str | None, typer.Argument(help=_SELECTION_HELP)] = None,
) -> None:
    """Optimize, vacuum and checkpoint (what the daily job's `maintain` task runs)."""
    from shoplake.maintenance import maintain as run_maintenance

    _maintenance_table(run_maintenance(cli.lake(), selection), "maintain")
