"""Row-by-row comparison of two Delta tables (or Arrow tables), as the engine parity tests need it."""

from __future__ import annotations

import math

import pyarrow as pa

# Columns that record wall-clock time or the run that wrote a row: they differ between any two runs.
WALL_CLOCK = {"_ingested_at", "_quarantined_at", "recorded_at", "checked_at", "run_id",
              "first_ingested_at", "last_ingested_at"}
REL_TOLERANCE = 1e-9
# A sum whose terms cancel (revenue net of returns) ends near 0 by a rounding residue that depends on
# the order of addition; relative tolerance cannot compare such values, so they get this absolute one.
ABS_TOLERANCE = 1e-9


def comparable(table: pa.Table, drop: set[str] = WALL_CLOCK) -> pa.Table:
    """The table without wall-clock columns, sorted by all its columns (nulls last)."""
    table = table.select([n for n in table.column_names if n not in drop])
    return table.sort_by([(n, "ascending") for n in table.column_names])


def _same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE) or a == b
    return a == b


def differences(left: pa.Table, right: pa.Table, *, limit: int = 5, drop: set[str] = WALL_CLOCK) -> list[str]:
    """Human-readable differences between two tables compared as sorted rows; empty when identical."""
    left, right = comparable(left, drop), comparable(right, drop)
    found = []
    if left.column_names != right.column_names:
        return [f"columns differ: {left.column_names} vs {right.column_names}"]
    if left.num_rows != right.num_rows:
        found.append(f"row counts differ: {left.num_rows} vs {right.num_rows}")
    for name in left.column_names:
        a, b = left.column(name).to_pylist(), right.column(name).to_pylist()
        bad = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if not _same_value(x, y)]
        if bad:
            i = bad[0]
            found.append(f"{name}: {len(bad)} rows differ, first at sorted row {i}: {a[i]!r} vs {b[i]!r}")
        if len(found) >= limit:
            break
    return found
