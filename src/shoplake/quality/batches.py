"""Bronze batches an operator keeps out of the builds (`shoplake batches list|exclude|include`).

A batch is one ingested file content. Excluding a batch that no Silver table has consumed yet lets the
builds go on without it (say, a file exported twice by mistake, or one a check keeps refusing); the
decision is recorded in `ops.batch_exclusions` with its reason and reversed by `include`. A batch already
consumed cannot be excluded: its rows are in Silver and Gold, and removing them is a rebuild, not this.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from shoplake import locks
from shoplake.engines.delta import batch_commits, consumed_batches
from shoplake.errors import ConfigError
from shoplake.lake import Lake
from shoplake.layers.ops import BATCH_EXCLUSIONS


@dataclass(frozen=True)
class BatchInfo:
    batch_id: str
    source: str
    source_file: str
    rows: int | None
    ingested_at: datetime
    consumed_by: tuple[str, ...]
    waiting_for: tuple[str, ...]
    excluded: str | None  # the reason, when excluded


def _decisions(lake: Lake) -> dict[str, dict]:
    """The latest decision per batch."""
    if not lake.store.exists(BATCH_EXCLUSIONS.name):
        return {}
    rows = lake.store.open(BATCH_EXCLUSIONS.name).to_pyarrow_table().sort_by("decided_at").to_pylist()
    return {row["batch_id"]: row for row in rows}


def excluded_batches(lake: Lake) -> dict[str, str]:
    """Batch id -> reason, for every batch currently excluded."""
    return {b: row["reason"] for b, row in _decisions(lake).items() if row["action"] == "exclude"}


def _consumers(lake: Lake, source: str) -> list[str]:
    return [s.name for s in lake.catalog.ordered() if s.build == "incremental" and s.inputs[0] == f"bronze.{source}"]


def list_batches(lake: Lake, source: str | None = None) -> list[BatchInfo]:
    """Every bronze batch (oldest first), what consumed it, and whether it is excluded."""
    excluded = excluded_batches(lake)
    found = []
    sources = [source] if source else [str(s.source) for s in lake.catalog.ordered() if s.build == "ingest"]
    for name in sources:
        consumers = _consumers(lake, name)
        consumed = {c: consumed_batches(lake.store.commits(c)) for c in consumers}
        for commit in batch_commits(lake.store.commits(f"bronze.{name}")):
            batch = commit.meta["write_key"]
            done = tuple(c for c in consumers if batch in consumed[c])
            found.append(BatchInfo(batch, name, str(commit.meta.get("source_file", "")), commit.rows_added,
                                   commit.timestamp, done, tuple(c for c in consumers if c not in done),
                                   excluded.get(batch)))
    return found


def _find(lake: Lake, batch_id: str) -> BatchInfo:
    for info in list_batches(lake):
        if info.batch_id == batch_id:
            return info
    raise ConfigError(f"no bronze batch {batch_id!r}: see `shoplake batches list`")


def _record(lake: Lake, info: BatchInfo, action: str, reason: str) -> None:
    decided_at = datetime.now(UTC)
    row = {"batch_id": info.batch_id, "source": info.source, "action": action, "reason": reason,
           "decided_at": decided_at, "decided_by": getpass.getuser()}
    table = pa.Table.from_pylist([row], schema=BATCH_EXCLUSIONS.arrow_schema)
    with locks.writing(lake.store.lake, [BATCH_EXCLUSIONS.name]):
        lake.store.write(BATCH_EXCLUSIONS.name, table, mode="append", description=BATCH_EXCLUSIONS.description,
                         meta={"write_key": f"batch:{action}:{info.batch_id}:{decided_at.isoformat()}",
                               "run_id": "batches"})


def exclude_batch(lake: Lake, batch_id: str, reason: str) -> BatchInfo:
    """Keep builds from consuming `batch_id`. Refused when a Silver table has consumed it already."""
    if not reason.strip():
        raise ConfigError("say why the batch is excluded: --reason TEXT")
    # Under the consumers' locks, so no build consumes the batch between the check and the record.
    info = _find(lake, batch_id)
    with locks.writing(lake.store.lake, _consumers(lake, info.source)):
        info = _find(lake, batch_id)
        if info.consumed_by:
            raise ConfigError(f"batch {batch_id} is already in {', '.join(info.consumed_by)}: excluding it now "
                              f"would not take its rows out; nothing was recorded")
        if info.excluded is not None:
            raise ConfigError(f"batch {batch_id} is already excluded ({info.excluded})")
        _record(lake, info, "exclude", reason.strip())
    return _find(lake, batch_id)


def include_batch(lake: Lake, batch_id: str, reason: str = "") -> BatchInfo:
    """Reverse an exclusion: the next build consumes the batch."""
    info = _find(lake, batch_id)
    if info.excluded is None:
        raise ConfigError(f"batch {batch_id} is not excluded")
    _record(lake, info, "include", reason.strip() or "included again")
    return _find(lake, batch_id)
