"""Column profiles of a table: the exploration step before modelling.

`profile_table` answers, per column, the null share, the distinct count, min / max / quantiles, the top
values with their shares and a histogram, for one version of a catalog table. It reads the table's files
**once**: a single `GROUP BY GROUPING SETS ((c1), (c2), ..., ())` pass counts every distinct value of
every column; all statistics are then computed from those (value, count) pairs, which are far fewer than
the rows. The result is cached per table *data version* (a compaction does not change it), in
`<lake>/_profiles/`, so the second look at a table costs a file read.

Definitions (also in docs/DATA_CONTRACT.md, "Profiles"):
- `nulls`: rows where the column is NULL; `nans`: rows where a floating-point column is NaN. Both are left
  out of distinct, min, max, quantiles and histogram; infinities are values like any other.
- `distinct`: the number of distinct non-null values (NaN counts as one value when present).
- quantiles are *discrete*, the inverse of the empirical distribution: the q-quantile is the smallest value v
  such that at least ceil(q * n) of the n non-null, non-NaN values are <= v (PostgreSQL's `percentile_disc`,
  DuckDB's `quantile_disc`), so every quantile is a value that occurs in the column.
- `top`: the most frequent non-null values (ties broken by the value), with their share of all rows.
- histogram: for numbers and times, `bins` equal-width bins from min to max (the last one closed);
  a column with at most `bins` distinct values gets one bar per value instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from shoplake.engines.base import Capability
from shoplake.errors import ConfigError
from shoplake.lake import Lake

# Bump when what a profile holds or how it is computed changes: older cached profiles are then recomputed.
PROFILE_FORMAT = 1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# GROUPING() packs one bit per column into a BIGINT; wider tables are read in groups of this many columns.
MAX_COLUMNS_PER_SCAN = 60


@dataclass(frozen=True)
class ColumnProfile:
    """What one column of one table version holds. Values are JSON-ready (times as ISO strings)."""

    name: str
    type: str
    kind: str  # number, time, text, boolean or other
    rows: int
    nulls: int
    nans: int
    distinct: int
    minimum: Any = None
    maximum: Any = None
    quantiles: dict[str, Any] = field(default_factory=dict)
    top: list[tuple[Any, int]] = field(default_factory=list)
    histogram: list[tuple[Any, Any, int]] = field(default_factory=list)

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    def share(self, count: int) -> float:
        return count / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class TableProfile:
    table: str
    version: int | None  # the version read (None: the table has not been written)
    data_version: int | None  # the last version that changed rows; the cache key
    rows: int
    columns: list[ColumnProfile]
    computed_at: str
    seconds: float  # time to compute (not to read from the cache)
    cached: bool = False

    def column(self, name: str) -> ColumnProfile:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, cached: bool) -> TableProfile:
        columns = [ColumnProfile(**{**c, "top": [tuple(t) for t in c["top"]],
                                    "histogram": [tuple(h) for h in c["histogram"]]}) for c in data["columns"]]
        return cls(**{**data, "columns": columns, "cached": cached})


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_timestamp(data_type) or pa.types.is_date(data_type):
        return "time"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return "text"
    if pa.types.is_boolean(data_type):
        return "boolean"
    return "other"


def _plain(value: Any) -> Any:
    """A value as JSON can hold it: times as ISO strings, decimals as floats, NaN/inf as strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return value


def _cache_file(lake: Lake, table: str, data_version: int, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return lake.store.lake / "_profiles" / table / f"v{data_version}-{digest}.json"


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `path` so that a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def profile_table(lake: Lake, table: str, *, columns: list[str] | None = None, version: int | None = None,
                  top: int = 10, bins: int = 20, use_cache: bool = True) -> TableProfile:
    """Profile `table` (latest version, or `version`): every column, or only `columns`.

    Raises:
        ConfigError: an unknown column, or `top` / `bins` below 1.
        TableNotFoundError: an unknown table or version.
    """
    if top < 1 or bins < 1:
        raise ConfigError("--top and --bins must be at least 1")
    spec = lake.catalog.get(table)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        bound = engine.bind(spec, version=version)
        view = spec.name
        schema = engine.table(f"SELECT * FROM {view} LIMIT 0").schema
        names = list(schema.names)
        chosen = columns or [n for n in names if n not in _INTERNAL]
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise ConfigError(f"{spec.name} has no column {', '.join(map(repr, unknown))}; "
                              f"its columns: {', '.join(names)}")
        data_version = lake.store.data_version(spec.name, bound)
        key = {"format": PROFILE_FORMAT, "columns": chosen, "top": top, "bins": bins}
        cache = _cache_file(lake, spec.name, data_version, key) if data_version is not None else None
        if use_cache and cache is not None and cache.exists():
            try:
                found = TableProfile.from_json(json.loads(cache.read_text(encoding="utf-8")), cached=True)
                # The cache is keyed by data version; the version read may be a later compaction of it.
                return TableProfile(**{**found.__dict__, "version": bound})
            except (ValueError, KeyError, TypeError):
                pass  # unreadable or from an incompatible writer: recompute and replace it
        started = time.perf_counter()
        profiles: list[ColumnProfile] = []
        rows = 0
        for first in range(0, max(len(chosen), 1), MAX_COLUMNS_PER_SCAN):
            group = [(c, schema.field(c).type) for c in chosen[first:first + MAX_COLUMNS_PER_SCAN]]
            rows, found_columns = _profile_columns(engine, view, group, top=top, bins=bins)
            profiles += found_columns
        result = TableProfile(spec.name, bound, data_version, rows, profiles,
                              computed_at=datetime.now().astimezone().isoformat(timespec="seconds"),
                              seconds=round(time.perf_counter() - started, 3))
    if cache is not None:
        try:
            _write_atomically(cache, result.to_json())
        except OSError:
            pass  # a read-only lake still profiles; it just does not remember
    return result


# Lineage columns every Bronze/Silver row carries: not what an analyst explores unless asked for.
_INTERNAL = frozenset({"_batch_id", "_source_file", "_source_line", "_ingested_at"})


def _profile_columns(engine, view: str, group: list[tuple[str, pa.DataType]], *, top: int,
                     bins: int) -> tuple[int, list[ColumnProfile]]:
    """One scan of `view` for the columns of `group`; their profiles from the (value, count) pairs."""
    counted = "__profile_counts"
    if not group:
        return int(engine.rows(f"SELECT count(*) FROM {view}")[0][0]), []
    grouped = [_grouping_expression(name, data_type) for name, data_type in group]
    sets = ", ".join(f"({expression})" for expression in grouped)
    selected = ", ".join(f"{expression} AS c{i}" for i, expression in enumerate(grouped))
    engine.materialize(counted, f"SELECT GROUPING({', '.join(grouped)}) AS g, {selected}, count(*) AS n "
                                f"FROM {view} GROUP BY GROUPING SETS ({sets}, ())")
    try:
        everything = (1 << len(group)) - 1
        rows = int(engine.rows(f"SELECT coalesce(sum(n), 0) FROM {counted} WHERE g = {everything}")[0][0])
        profiles = []
        for i, (name, data_type) in enumerate(group):
            # Column i is the only one grouped in its set: its bit (counted from the left) is 0.
            mask = everything - (1 << (len(group) - 1 - i))
            profiles.append(_column(engine, counted, f"c{i}", mask, name, data_type, rows, top=top, bins=bins))
        return rows, profiles
    finally:
        engine.drop(counted)


def _grouping_expression(name: str, data_type: pa.DataType) -> str:
    # Nested values (lists, structs, maps) are profiled by their text form.
    return _quote(name) if _kind(data_type) != "other" else f"CAST({_quote(name)} AS VARCHAR)"


def _column(engine, counted: str, column: str, mask: int, name: str, data_type: pa.DataType, rows: int, *,
            top: int, bins: int) -> ColumnProfile:
    kind = _kind(data_type)
    floating = pa.types.is_floating(data_type)
    values = f"SELECT {column} AS v, n FROM {counted} WHERE g = {mask} AND {column} IS NOT NULL"
    nan = "isnan(v)" if floating else "false"
    nulls, nans, distinct = engine.rows(
        f"SELECT (SELECT coalesce(sum(n), 0) FROM {counted} WHERE g = {mask} AND {column} IS NULL), "
        f"coalesce(sum(n) FILTER (WHERE {nan}), 0), count(*) FROM ({values})")[0]
    top_values = [(_plain(v), int(n)) for v, n in
                  engine.rows(f"SELECT v, n FROM ({values}) ORDER BY n DESC, v LIMIT {int(top)}")]
    profile: dict[str, Any] = dict(name=name, type=str(data_type), kind=kind, rows=rows, nulls=int(nulls),
                                   nans=int(nans),
                                   distinct=int(distinct), top=top_values)
    if kind in ("number", "time"):
        ordered = f"SELECT v, n FROM ({values}) WHERE NOT {nan}"
        profile |= _distribution(engine, ordered, data_type, bins=bins)
    elif kind in ("text", "boolean") and distinct:
        low, high = engine.rows(f"SELECT min(v), max(v) FROM ({values})")[0]
        profile |= {"minimum": _plain(low), "maximum": _plain(high)}
    return ColumnProfile(**profile)


def _distribution(engine, ordered: str, data_type: pa.DataType, *, bins: int) -> dict[str, Any]:
    """Min, max, discrete quantiles and a histogram from (value, count) pairs."""
    low, high, total, distinct = engine.rows(f"SELECT min(v), max(v), coalesce(sum(n), 0), count(*) "
                                             f"FROM ({ordered})")[0]
    if not total:
        return {}
    # The first value whose cumulative count reaches ceil(q * n): quantile_disc over the rows themselves,
    # computed from the (value, count) pairs.
    quantile_rows = engine.rows(f"""
        WITH runs AS (SELECT v, sum(n) OVER (ORDER BY v ROWS UNBOUNDED PRECEDING) AS through FROM ({ordered})),
             wanted AS (SELECT unnest([{', '.join(map(str, QUANTILES))}]::DOUBLE[]) AS q)
        SELECT q, min(v) FROM wanted, runs WHERE through >= greatest(ceil({int(total)} * q), 1)
        GROUP BY q ORDER BY q""")
    quantiles = {f"p{round(q * 100):02d}": _plain(v) for q, v in quantile_rows}
    if distinct <= bins:
        histogram = [(_plain(v), _plain(v), int(n)) for v, n in engine.rows(f"SELECT v, n FROM ({ordered}) ORDER BY v")]
    else:
        histogram = _equal_width(engine, ordered, data_type, low, high, bins)
    return {"minimum": _plain(low), "maximum": _plain(high), "quantiles": quantiles, "histogram": histogram}


def _equal_width(engine, ordered: str, data_type: pa.DataType, low: Any, high: Any,
                 bins: int) -> list[tuple[Any, Any, int]]:
    """`bins` equal-width bins from `low` to `high` (the last closed); times binned on their epoch."""
    is_time = pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)
    as_number = ("epoch_us(v::TIMESTAMP)" if pa.types.is_date(data_type) else "epoch_us(v)") if is_time \
        else "v::DOUBLE"
    zone = getattr(data_type, "tz", None)
    start = _epoch_us(low) if is_time else float(low)
    stop = _epoch_us(high) if is_time else float(high)
    width = (stop - start) / bins
    if not math.isfinite(width) or width <= 0:
        return [(_plain(low), _plain(high), int(engine.rows(f"SELECT sum(n) FROM ({ordered})")[0][0]))]
    counts = dict(engine.rows(f"""
        SELECT least(floor(({as_number} - {start!r}) / {width!r}), {bins - 1})::BIGINT AS bin, sum(n)
        FROM ({ordered}) GROUP BY bin"""))

    def edge(k: int) -> Any:
        at = start + k * width
        if is_time:
            moment = datetime(1970, 1, 1) + timedelta(microseconds=round(at))
            return (moment.replace(tzinfo=UTC) if zone else moment).isoformat()
        return at

    return [(edge(k), edge(k + 1), int(counts.get(k, 0))) for k in range(bins)]


def _epoch_us(value: date | datetime) -> int:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None) - (value.utcoffset() or timedelta())
    return round((value - datetime(1970, 1, 1)) / timedelta(microseconds=1))
