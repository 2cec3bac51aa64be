"""Table declarations: the single place where a table's name, grain, inputs, columns and checks live."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import pyarrow as pa

LAYERS = ("bronze", "silver", "gold", "quarantine", "ops")
# A shared relation (`TableSpec.shared_relations`) is a temporary name, never a lake table (`layer.name`).
_RELATION_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

# Logical column types, written as the embedded engine's SQL types; `arrow_type` maps them for Delta.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BLOB": pa.binary(),
}


def arrow_type(sql_type: str) -> pa.DataType:
    """The Arrow (and so Delta) type of a declared column type."""
    return _ARROW_TYPES[sql_type]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in _ARROW_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.type}")


def col(name: str, type_: str, description: str = "") -> Column:
    """Shorthand used by the declarations."""
    return Column(name, type_, description)


Action = Literal["warn", "quarantine", "fail"]


@dataclass(frozen=True)
class Check:
    """A data quality rule on a table.

    `failing_sql` is a boolean SQL expression over one row that is TRUE when the row breaks the rule
    (row-level rules), or, for `kind == "query"`, a query returning the failing rows of the candidate
    table `candidate` (table-level rules such as grain uniqueness). `keys`: columns a query rule groups the
    rows by (uniqueness), so its failing rows never mix two values of them: a table built in parts of one
    of them (`TableSpec.split_by`) is checked part by part.
    """

    name: str
    kind: Literal["row", "query"]
    failing_sql: str
    action: Action = "warn"
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "query" and self.action == "quarantine":
            raise ValueError(f"check {self.name}: only row-level checks can quarantine rows")


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def not_null(column: str, *, action: Action = "warn") -> Check:
    return Check(f"not_null_{column}", "row", f"{column} IS NULL", action)


def accepted_values(column: str, values: tuple[str, ...], *, action: Action = "warn") -> Check:
    listed = ", ".join(_sql_literal(v) for v in values)
    return Check(f"accepted_values_{column}", "row", f"{column} IS NOT NULL AND {column} NOT IN ({listed})",
                 action)


def in_range(column: str, *, low: float | None = None, high: float | None = None,
             action: Action = "warn", name: str | None = None) -> Check:
    parts = []
    if low is not None:
        parts.append(f"{column} < {low!r}")
    if high is not None:
        parts.append(f"{column} > {high!r}")
    return Check(name or f"range_{column}", "row", f"{column} IS NOT NULL AND ({' OR '.join(parts)})", action)


def row_rule(name: str, failing_sql: str, *, action: Action = "warn") -> Check:
    """A custom row-level rule: `failing_sql` is TRUE for a bad row."""
    return Check(name, "row", failing_sql, action)


def unique(*columns: str, action: Action = "fail") -> Check:
    keys = ", ".join(columns)
    return Check(f"unique_{'_'.join(columns)}", "query",
                 f"SELECT {keys}, count(*) AS n FROM candidate GROUP BY {keys} HAVING count(*) > 1", action,
                 keys=columns)


def query_rule(name: str, failing_rows_sql: str, *, action: Action = "warn") -> Check:
    """A custom table-level rule: a query over `candidate` returning the failing rows."""
    return Check(name, "query", failing_rows_sql, action)


Build = Literal["ingest", "incremental", "full", "external"]


@dataclass(frozen=True)
class Maintenance:
    """How `shoplake optimize` / `shoplake vacuum` (and the `maintain` job task) keep a table's files in shape.

    Attributes:
        target_file_mb: compaction rewrites small files into files of about this size.
        min_small_files: compact only when at least this many files are below half the target (fewer small
            files cost less to read than a rewrite costs to make).
        retention_hours: vacuum keeps every file a version committed within this window needs, so time travel
            and readers holding an older snapshot keep working inside it (default 7 days, Delta's default).
        zorder_by: columns `shoplake optimize --zorder` clusters the table by (a full rewrite, so never run by
            the daily job).
    """

    target_file_mb: int = 128
    min_small_files: int = 8
    retention_hours: int = 168
    zorder_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """One table of the lake, declared once.

    Attributes:
        name: catalog name `<layer>.<name>`.
        description: what the table holds, starting with its grain ("One row per ...").
        grain: the columns that identify a row (checked unique for derived tables).
        columns: published columns, in order.
        inputs: upstream catalog tables (lineage is derived from these).
        build: how rows arrive. `ingest`: appended by `shoplake ingest` (bronze);
            `incremental`: the SQL runs over bronze batches not yet consumed, exact duplicates are
            removed within and across batches, rows are appended; `full`: recomputed from its inputs
            and overwritten, only when an input changed; `external`: written by another subsystem
            (quarantine, ops, ML).
        sql_file: the transformation, relative to `shoplake/layers/`.
        sql_text: the transformation itself, for tables generated from another declaration (a funnel
            declaration generates its table's SQL); give either this or `sql_file`.
        checks: quality rules the runner enforces and records in `ops.data_quality`.
        source: for incremental tables, the source whose quarantine table takes diverted rows.
        owns_rows: for incremental tables reading a shared bronze table, the rows of that input this
            table takes; the owners of one input partition it (e.g. retail sales vs returns).
        dedupe: for incremental tables, remove exact duplicates (all published columns equal).
        accounting_sql: for full tables, a query returning one row with `rows_in` (input rows),
            `rows_out` (input rows folded into the output `candidate`, measured on the output) and one
            column per diversion reason; it feeds `ops.ledger`.
        maintenance: file compaction and retention (see `Maintenance`).
        ledgered: whether its writes carry `ops.ledger` entries. Default (None): every table but the ops
            tables, which are the bookkeeping itself; an ops table derived from other rows (the ML
            decision and monitoring logs) sets True.
        write_order: columns a full table's rows are written sorted by, so a reader filtering on the first
            of them reads only the row groups of its slice (the file statistics tell which). The sort runs
            on the checked candidate at write time, apart from the query, so it never adds to the query's
            memory.
        split_by: a column of every input whose values never meet in the SQL (the rows of one value come
            only from input rows of that value, e.g. each user's funnel entries from that user's events).
            A full build over many input rows may then run the SQL on parts of the inputs, split by the
            column's value, and write their union: its memory is that of one part (`parts_for` of the
            engine decides how many).
        shared_relations: (name, SQL) pairs computed once over the whole inputs before the table's SQL
            runs, which reads them by name: a value across all rows (the latest event of all users) that
            every part of a split build must see whole.
    """

    name: str
    description: str
    grain: tuple[str, ...]
    columns: tuple[Column, ...]
    inputs: tuple[str, ...] = ()
    build: Build = "full"
    sql_file: str | None = None
    sql_text: str | None = None
    checks: tuple[Check, ...] = ()
    source: str | None = None
    owns_rows: str | None = None
    dedupe: bool = True
    accounting_sql: str | None = None
    maintenance: Maintenance = Maintenance()
    ledgered: bool | None = None
    write_order: tuple[str, ...] = ()
    split_by: str | None = None
    shared_relations: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        layer, _, short = self.name.partition(".")
        if layer not in LAYERS or not short:
            raise ValueError(f"table name {self.name!r} must be <layer>.<name> with layer in {LAYERS}")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate column names")
        missing = [g for g in self.grain if g not in names]
        if missing:
            raise ValueError(f"{self.name}: grain columns {missing} are not declared columns")
        if self.build in ("incremental", "full") and not (self.sql_file or self.sql_text):
            raise ValueError(f"{self.name}: derived tables need a sql_file or sql_text")
        if self.sql_file and self.sql_text:
            raise ValueError(f"{self.name}: give sql_file or sql_text, not both")
        if self.build != "incremental" and any(c.action == "quarantine" for c in self.checks):
            # A full rebuild would quarantine the same rows again on every run.
            raise ValueError(f"{self.name}: only incremental tables can quarantine rows")
        if self.build == "incremental" and not self.source:
            raise ValueError(f"{self.name}: incremental tables name the source they quarantine into")
        unknown = [c for c in self.maintenance.zorder_by if c not in names]
        if unknown:
            raise ValueError(f"{self.name}: zorder_by columns {unknown} are not declared columns")
        unknown = [c for c in self.write_order if c not in names]
        if unknown:
            raise ValueError(f"{self.name}: write_order columns {unknown} are not declared columns")
        if self.split_by and self.build != "full":
            raise ValueError(f"{self.name}: only full tables are split by a column")
        if self.shared_relations and self.build != "full":
            raise ValueError(f"{self.name}: only full tables read shared relations")
        bad = [name for name, _ in self.shared_relations if not _RELATION_NAME.match(name) or name == "candidate"]
        if bad:
            raise ValueError(f"{self.name}: shared relation names {bad} must be plain lower-case identifiers "
                             "(not a lake table's layer.name, not candidate)")
        if self.write_order and self.build != "full":
            raise ValueError(f"{self.name}: only full tables have a write_order (appends keep arrival order)")

    @property
    def layer(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def is_ledgered(self) -> bool:
        return self.layer != "ops" if self.ledgered is None else self.ledgered

    @property
    def short_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in self.columns])

    def sql(self) -> str:
        """The transformation SQL text (DuckDB dialect)."""
        if self.sql_text:
            return self.sql_text
        if not self.sql_file:
            raise ValueError(f"{self.name} has no SQL")
        return resources.files("shoplake.layers").joinpath(self.sql_file).read_text()
