"""Row accounting: `ops.ledger` and `ops.data_quality` records.

A ledger entry says, for one write of one table, how many rows came in, how many went out into the
table, and how many were diverted and why (quarantine reasons, exact duplicates, rows owned by another
table). `rows_in = rows_out + rows_diverted` must hold for every entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from shoplake.catalog.spec import TableSpec
from shoplake.engines.delta import DeltaStore
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
    store.write(spec.name, table, mode="append", meta={"write_key": write_key, "run_id": run_id},
                description=spec.description)


def recorded_keys(engine, store: DeltaStore, keys: list[str]) -> set[str]:
    """Which of `keys` already have a ledger entry."""
    if not keys or not store.exists(LEDGER.name):
        return set()
    engine.bind(LEDGER)
    placeholders = ", ".join("?" for _ in keys)
    found = engine.rows(f"SELECT DISTINCT write_key FROM ops.ledger WHERE write_key IN ({placeholders})", keys)
    return {row[0] for row in found}
