"""Delta Lake storage: the only module that writes tables.

Every table lives at `<lake>/<layer>/<name>` as a plain Delta table (no deletion vectors, no column
mapping) so that any Delta reader can open it. Each write carries shoplake metadata in its commit
(`shoplake.*` keys): a write key that makes the write idempotent, the run id and the row accounting.
Because the metadata is committed atomically with the data, a run killed at any point can be resumed
without double counting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound

from shoplake.errors import TableNotFoundError

log = logging.getLogger(__name__)

META_PREFIX = "shoplake."
# zstd keeps files small without costing much write time; every Delta/Parquet reader supports it.
_WRITER_PROPERTIES = WriterProperties(compression="ZSTD", compression_level=1)


@dataclass(frozen=True)
class Commit:
    """One entry of a table's Delta history, with shoplake's metadata decoded."""

    version: int
    timestamp: datetime
    operation: str
    rows_added: int | None
    meta: dict[str, Any]


class DeltaStore:
    """The lake on disk: locate, read and write Delta tables by catalog name."""

    def __init__(self, lake: Path):
        self.lake = Path(lake)

    def path(self, name: str) -> Path:
        layer, _, short = name.partition(".")
        return self.lake / layer / short

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(str(self.path(name)))

    def open(self, name: str, version: int | datetime | None = None) -> DeltaTable:
        """Open a table, optionally at an earlier version or timestamp (time travel)."""
        try:
            table = DeltaTable(str(self.path(name)))
        except DeltaTableNotFound as exc:
            raise TableNotFoundError(f"table {name} has not been written yet: run `shoplake build` "
                                     f"(or `shoplake ingest` for bronze tables)") from exc
        if version is not None:
            try:
                table.load_as_version(version)
            except Exception as exc:  # delta-rs raises several types for a missing version
                raise TableNotFoundError(f"{name} has no version {version}: "
                                         f"see `shoplake history {name}`") from exc
        return table

    def version(self, name: str) -> int | None:
        """Latest version, or None when the table does not exist."""
        return self.open(name).version() if self.exists(name) else None

    def create_empty(self, name: str, schema: pa.Schema, *, description: str = "") -> bool:
        """Create an empty table with `schema` unless it exists. Returns True when created."""
        if self.exists(name):
            return False
        write_deltalake(str(self.path(name)), schema.empty_table(), mode="error",
                        name=name, description=description[:1000],
                        commit_properties=CommitProperties(custom_metadata={META_PREFIX + "op": "create"}))
        return True

    def write(self, name: str, data: pa.Table | pa.RecordBatchReader, *, mode: str,
              meta: dict[str, Any], description: str = "") -> int:
        """Append or overwrite `data` in one commit carrying `meta`. Returns the new version."""
        custom = {META_PREFIX + k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                  for k, v in meta.items()}
        write_deltalake(str(self.path(name)), data, mode=mode, name=name, description=description[:1000],
                        schema_mode="overwrite" if mode == "overwrite" else None,
                        writer_properties=_WRITER_PROPERTIES,
                        commit_properties=CommitProperties(custom_metadata=custom))
        version = self.open(name).version()
        log.debug("wrote %s version %s (%s)", name, version, mode)
        return version

    def history(self, name: str, limit: int | None = None) -> list[Commit]:
        """Commits of a table, newest first."""
        entries = self.open(name).history(limit)
        return [_decode_commit(entry) for entry in entries]

    def commits(self, name: str) -> Iterator[Commit]:
        """All commits, oldest first; nothing when the table does not exist."""
        if self.exists(name):
            yield from reversed(self.history(name))

    def find_write(self, name: str, write_key: str) -> Commit | None:
        """The commit that carries `write_key`, if that write already happened."""
        for commit in self.commits(name):
            if commit.meta.get("write_key") == write_key:
                return commit
        return None

    def file_uris(self, name: str, version: int | datetime | None = None) -> list[str]:
        return self.open(name, version).file_uris()

    def row_count(self, name: str) -> int:
        """Rows in the current snapshot, from the log's per-file statistics (no data read)."""
        if not self.exists(name):
            return 0
        actions = pa.table(self.open(name).get_add_actions(flatten=True))
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0


def _decode_commit(entry: dict[str, Any]) -> Commit:
    meta: dict[str, Any] = {}
    for key, value in entry.items():
        if key.startswith(META_PREFIX):
            short = key[len(META_PREFIX):]
            try:
                meta[short] = json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
            except json.JSONDecodeError:
                meta[short] = value
    metrics = entry.get("operationMetrics") or {}
    return Commit(
        version=int(entry["version"]),
        timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000).astimezone(),
        operation=entry.get("operation", ""),
        rows_added=metrics.get("num_added_rows"),
        meta=meta,
    )


def consumed_batches(commits: Iterable[Commit]) -> set[str]:
    """Bronze batch ids already consumed by the writes in `commits`."""
    consumed: set[str] = set()
    for commit in commits:
        consumed.update(commit.meta.get("batches") or [])
    return consumed
