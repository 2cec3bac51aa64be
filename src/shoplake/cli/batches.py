"""`shoplake batches ...`: list Bronze batches, exclude one from builds, include it again."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from shoplake.cli import app as cli

batches_app = typer.Typer(no_args_is_help=True,
                          help="Bronze batches: list them, exclude one from builds, include it again.")
cli.app.add_typer(batches_app, name="batches")


@batches_app.command("list")
def batches_list(source: Annotated[cli.Source | None, typer.Argument(help="one source; default all")] = None) -> None:
    """Every bronze batch: file, rows, which Silver tables consumed it, exclusions."""
    from shoplake.quality.batches import list_batches

    out = Table()
    out.add_column("batch", no_wrap=True)  # ids are copied into `batches exclude`: keep them whole
    for name in ("file", "rows", "ingested", "consumed by", "waiting for", "excluded"):
        out.add_column(name)
    for info in list_batches(cli.lake(), source.value if source else None):
        out.add_row(info.batch_id, info.source_file, "" if info.rows is None else f"{info.rows:,}",
                    info.ingested_at.strftime("%Y-%m-%d %H:%M:%S"), ", ".join(info.consumed_by) or "-",
                    ", ".join(info.waiting_for) or "-", info.excluded or "")
    cli.console.print(out)


@batches_app.command("exclude")
def batches_exclude(
    batch_id: Annotated[str, typer.Argument(help="a batch id from `shoplake batches list`")],
    reason: Annotated[str, typer.Option(help="why (recorded in ops.batch_exclusions)")],
) -> None:
    """Keep builds from consuming a batch no Silver table has consumed yet (reversible: `include`)."""
    from shoplake.quality.batches import exclude_batch

    info = exclude_batch(cli.lake(), batch_id, reason)
    cli.console.print(f"excluded {info.batch_id} ({info.source_file}): later builds skip it; "
                  f"`shoplake batches include {info.batch_id}` reverses this")


@batches_app.command("include")
def batches_include(
    batch_id: Annotated[str, typer.Argument(help="an excluded batch id")],
    reason: Annotated[str, typer.Option(help="why (recorded)")] = "",
) -> None:
    """Reverse an exclusion: the next build consumes the batch."""
    from shoplake.quality.batches import include_batch

    info = include_batch(cli.lake(), batch_id, reason)
    cli.console.print(f"included {info.batch_id} again: the next build consumes it")
