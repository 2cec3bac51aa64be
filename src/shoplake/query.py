"""Read-only SQL over the catalog, with Delta time travel.

Tables are named by catalog name (`gold.daily_funnel`). An earlier version of a table is read with
`silver.events VERSION AS OF 3` or `silver.events TIMESTAMP AS OF '2026-11-22 10:00:00'` (the Delta /
Databricks syntax). Only queries run: any statement that could write is refused.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import sqlglot
from sqlglot import exp

from shoplake.errors import AccessDeniedError, QueryError, QueryTimeoutError
from shoplake.lake import Lake

# Table functions that only generate rows (no file, no network): allowed for untrusted callers.
_GENERATOR_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Functions that read files, list folders or run SQL text. Any `read_*` or `*_scan` function is refused too.
_FILE_FUNCTIONS = frozenset({
    "glob", "sniff_csv", "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
    "parquet_bloom_probe", "query", "query_table", "st_read", "st_readosm", "st_read_meta", "iceberg_metadata",
    "iceberg_snapshots", "getenv", "load_aws_credentials", "sqlite_attach", "postgres_attach", "mysql_attach",
})


@dataclass(frozen=True)
class QueryPolicy:
    """Limits for SQL from callers who must not reach beyond the catalog (the SQL API).

    Attributes:
        layers: the layers the caller may read (None: every layer).
        timeout_seconds: stop the query after this long (None: no limit).
    """

    layers: frozenset[str] | None = None
    timeout_seconds: float | None = None

_TIME_TRAVEL = re.compile(
    r"\b(?P<table>[A-Za-z_]+\.[A-Za-z_]+)\s+(?P<kind>VERSION|TIMESTAMP)\s+AS\s+OF\s+"
    r"(?P<value>\d+|'[^']*')", re.IGNORECASE)


def _rewrite_time_travel(sql: str) -> tuple[str, dict[str, tuple[str, int | datetime]]]:
    """Replace `t VERSION AS OF n` by a reference to a view bound at that version."""
    travels: dict[str, tuple[str, int | datetime]] = {}

    def replace(match: re.Match) -> str:
        table, kind, value = match["table"].lower(), match["kind"].upper(), match["value"]
        if kind == "VERSION":
            if not value.isdigit():
                raise QueryError(f"VERSION AS OF needs a version number, got {value}")
            at: int | datetime = int(value)
            suffix = f"v{at}"
        else:
            try:
                at = datetime.fromisoformat(value.strip("'"))
            except ValueError as exc:
                raise QueryError(f"TIMESTAMP AS OF needs an ISO timestamp such as '2026-11-22 10:00:00', "
                                 f"got {value}") from exc
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            suffix = "t" + at.strftime("%Y%m%d%H%M%S")
        layer, short = table.split(".", 1)
        view = f"{layer}.{short}__{suffix}"
        travels[view] = (table, at)
        return view

    return _TIME_TRAVEL.sub(replace, sql), travels


def _statement_class(statement: exp.Expression, sql: str) -> str:
    """The kind of statement, as a user would name it (INSERT, COPY, LOAD, CHECKPOINT, ...)."""
    if isinstance(statement, exp.Command):
        return statement.name.upper()  # statements sqlglot only knows by their keyword (LOAD, CALL, ...)
    if isinstance(statement, exp.Column | exp.Identifier | exp.Var):
        return sql.split(None, 1)[0].upper()  # a bare keyword such as CHECKPOINT parses as a name
    return statement.key.upper()


def _function_name(func: exp.Func) -> str:
    return (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()


def _refuse_outside_access(statement: exp.Expression) -> None:
    """Refuse table functions, file-reading functions and quoted paths used as tables."""
    for func in statement.find_all(exp.Func):
        name = _function_name(func)
        if name.startswith("read_") or name.endswith("_scan") or name in _FILE_FUNCTIONS:
            raise QueryError(f"function {name}() is not allowed: it reads files or runs other SQL; "
                             f"query catalog tables such as gold.daily_funnel instead")
    for table in statement.find_all(exp.Table):
        target = table.this
        if isinstance(target, exp.Identifier):
            if target.quoted and not table.db and ("/" in target.name or "." in target.name):
                raise QueryError(f"reading a file by path ({target.name!r}) is not allowed; "
                                 f"query catalog tables such as gold.daily_funnel instead")
            continue
        name = _function_name(target) if isinstance(target, exp.Func) else target.key
        if name not in _GENERATOR_FUNCTIONS:
            raise QueryError(f"table function {name}() is not allowed; only catalog tables and "
                             f"{', '.join(sorted(_GENERATOR_FUNCTIONS))}() can be read")


def _check_layer(lake: Lake, name: str, policy: QueryPolicy | None) -> None:
    if policy is None or policy.layers is None:
        return
    layer = lake.catalog.get(name).layer
    if layer not in policy.layers:
        raise AccessDeniedError(f"access to {name} denied: it is in the {layer} layer and this token may read "
                                f"only {', '.join(sorted(policy.layers))} tables")


def _run_with_timeout(engine, sql: str, timeout: float | None) -> pa.Table:
    if timeout is None:
        return engine.table(sql)
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        engine.interrupt()

    timer = threading.Timer(timeout, stop)
    timer.start()
    try:
        return engine.table(sql)
    except QueryError as exc:
        if fired.is_set():
            raise QueryTimeoutError(f"query stopped after the {timeout:g} s time limit; narrow it (filters, "
                                    f"fewer joins) or ask for fewer rows") from exc
        raise
    finally:
        timer.cancel()


def run_query(lake: Lake, sql: str, *, limit: int | None = None, policy: QueryPolicy | None = None) -> pa.Table:
    """Run one read-only query over the lake and return its result.

    Args:
        limit: at most this many rows.
        policy: limits for untrusted callers. When given, the query may not use table functions other
            than generators, file-reading functions or quoted paths; the engine session is sandboxed to
            the lake folder (no other file or network access, configuration locked); tables outside
            `policy.layers` are refused with AccessDeniedError; and the query stops after
            `policy.timeout_seconds` with QueryTimeoutError.
    """
    rewritten, travels = _rewrite_time_travel(sql.strip().rstrip(";"))
    try:
        statements = sqlglot.parse(rewritten, dialect="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1 or statements[0] is None:
        raise QueryError("give exactly one SQL statement")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise QueryError(f"only read queries (SELECT, WITH, UNION, ...) are allowed, "
                         f"not {_statement_class(statement, rewritten)}")
    if policy is not None:
        _refuse_outside_access(statement)
    ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
    with lake.embedded().engine() as engine:
        if policy is not None:
            engine.sandbox([lake.settings.lake])
        for table in statement.find_all(exp.Table):
            if isinstance(table.this, exp.Func) and _function_name(table.this) in _GENERATOR_FUNCTIONS:
                continue  # range(), generate_series(): rows from nothing
            name = f"{table.db}.{table.name}".lower() if table.db else table.name.lower()
            if not table.db:
                if name in ctes:
                    continue
                raise QueryError(f"unknown table {table.name!r}: name tables as <layer>.<name>, "
                                 f"e.g. gold.daily_funnel (see `shoplake tables`)")
            _check_layer(lake, travels[name][0] if name in travels else name, policy)
            if name in travels:
                base, at = travels[name]
                engine.bind(lake.catalog.get(base), version=at, view=name)
            else:
                engine.bind(lake.catalog.get(name))
        final = statement.sql(dialect="duckdb")
        if limit is not None:
            final = f"SELECT * FROM ({final}) AS q LIMIT {int(limit)}"
        return _run_with_timeout(engine, final, policy.timeout_seconds if policy else None)
