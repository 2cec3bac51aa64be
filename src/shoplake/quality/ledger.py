"""Row accounting: `ops.ledger` and `ops.data_quality` records.

A ledger entry says, for one write of one table, how many rows came in, how many went out into the
table, and how many were diverted and why (quarantine reasons, exact duplicates, rows owned by another
table). `rows_in = rows_out + rows_diverted` must hold for every entry.

The entry travels inside the Delta commit of the write it describes (commit metadata `shoplake.ledger`),
so a write and its accounting cannot be separated by a crash. `ops.ledger` is a queryable copy made by
`sync_ledger`, which every writing command runs before it starts and after it commits: it appends the
entry of every commit whose key the ledger lacks, under the ledger's writer lock, so each entry is
recorded exactly once whatever was killed where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from shoplake import locks
from shoplake.catalog.spec import TableSpec
from shoplake.engines.delta import Commit, DeltaStore
from shoplake.layers.ops import DATA_QUALITY, LEDGER


@dataclass
class LedgerEntry:
    run_id: str
    table_name: str
    write_key: str
    rows_in: int
    rows_out: int
    diverted: dict[str, int] = field(default_factory=dict)
    rows_written: int | None = None
    table_version: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_diverted(self) -> int:
        return sum(self.diverted.values())

    @property
    def is_balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.rows_diverted

    def as_meta(self, *, rows_out_from_commit: bool = False) -> dict[str, Any]:
        """This entry as commit metadata. The key may hold `{version}` (filled in from the commit).

        With `rows_out_from_commit`, rows_out (and rows_written) are the commit's rows added, and the
        rows that neither went out nor were diverted are exact duplicates: used for streamed appends,
        whose row count is known only once the commit is made.
        """
        return {"key": self.write_key, "table": self.table_name, "version": self.table_version,
                "rows_in": self.rows_in,
                "rows_out": None if rows_out_from_commit else self.rows_out, "diverted": self.diverted,
                "rows_written": None if rows_out_from_commit else self.rows_written, "inputs": self.inputs}

    @classmethod
    def from_commit(cls, table_name: str, commit: Commit) -> LedgerEntry | None:
        """The entry a commit carries, or None when it carries none."""
        meta = commit.meta.get("ledger")
        if not isinstance(meta, dict):
            return None
        diverted = {k: int(v) for k, v in (meta.get("diverted") or {}).items()}
        rows_out = meta.get("rows_out")
        rows_written = meta.get("rows_written")
        if rows_out is None:
            rows_out = rows_written = int(commit.rows_added or 0)
            duplicates = int(meta["rows_in"]) - rows_out - sum(diverted.values())
            if duplicates:
                diverted["duplicate"] = duplicates
        # An entry may describe another table's write (an ingest batch's entry rides on its quarantine
        # commit, the batch's last write, but accounts for the bronze table).
        version = commit.version if meta.get("version") is None else int(meta["version"])
        return cls(run_id=str(commit.meta.get("run_id", "")), table_name=str(meta.get("table") or table_name),
                   write_key=str(meta["key"]).replace("{version}", str(commit.version)),
                   rows_in=int(meta["rows_in"]), rows_out=int(rows_out), diverted=diverted,
                   rows_written=None if rows_written is None else int(rows_written),
                   table_version=version, inputs=meta.get("inputs") or {})


@dataclass
class QualityResult:
    table_name: str
    rule: str
    rule_sql: str
    action: str
    rows_checked: int
    rows_failed: int


def record_entries(store: DeltaStore, entries: list[LedgerEntry], *, write_key: str | None = None) -> None:
    """Append ledger entries in one commit (a no-op for an empty list)."""
    if not entries:
        return
    now = datetime.now(UTC)
    rows = [{
        "run_id": e.run_id, "recorded_at": now, "table_name": e.table_name, "table_version": e.table_version,
        "write_key": e.write_key, "inputs": json.dumps(e.inputs, sort_keys=True, default=str),
        "rows_in": e.rows_in, "rows_out": e.rows_out, "rows_diverted": e.rows_diverted,
        "diverted": json.dumps(e.diverted, sort_keys=True),
        "rows_written": e.rows_written, "is_balanced": e.is_balanced,
    } for e in entries]
    _append(store, LEDGER, rows, write_key or entries[0].write_key, entries[0].run_id)


def ledgered_commits(store: DeltaStore, names: list[str]) -> list[LedgerEntry]:
    """Every ledger entry carried by the commits of the tables `names`, oldest first per table."""
    entries = []
    for name in names:
        for commit in store.commits(name):
            entry = LedgerEntry.from_commit(name, commit)
            if entry is not None:
                entries.append(entry)
    return entries


def ledger_keys(store: DeltaStore) -> set[str]:
    """Write keys already in `ops.ledger`."""
    if not store.exists(LEDGER.name):
        return set()
    column = store.open(LEDGER.name).to_pyarrow_table(columns=["write_key"]).column("write_key")
    return set(column.to_pylist())


def sync_ledger(store: DeltaStore, names: list[str]) -> list[LedgerEntry]:
    """Append to `ops.ledger` the entries carried by commits of `names` that it lacks. Returns them.

    Runs under the ledger's writer lock, so two processes syncing at once record each entry once.
    """
    with locks.writing(store.lake, [LEDGER.name]):
        recorded = ledger_keys(store)
        missing = [e for e in ledgered_commits(store, names) if e.write_key not in recorded]
        if missing:
            store.create_empty(LEDGER.name, LEDGER.arrow_schema, description=LEDGER.description)
            record_entries(store, missing, write_key=f"sync:{missing[0].write_key}")
    return missing


def record_quality(store: DeltaStore, run_id: str, results: list[QualityResult]) -> None:
    if not results:
        return
    now = datetime.now(UTC)
    rows = [{
        "run_id": run_id, "checked_at": now, "table_name": r.table_name, "rule": r.rule,
        "rule_sql": r.rule_sql, "action": r.action, "rows_checked": r.rows_checked,
        "rows_failed": r.rows_failed, "passed": r.rows_failed == 0,
    } for r in results]
    _append(store, DATA_QUALITY, rows, f"dq:{run_id}:{results[0].table_name}", run_id)


def _append(store: DeltaStore, spec: TableSpec, rows: list[dict[str, Any]], write_key: str, run_id: str) -> None:
    table = pa.Table.from_pylist(rows, schema=spec.arrow_schema)
    with locks.writing(store.lake, [spec.name]):
        store.write(spec.name, table, mode="append", meta={"write_key": write_key, "run_id": run_id},
                    description=spec.description)
