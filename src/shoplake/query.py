"""Read-only SQL over the catalog, with Delta time travel.

Tables are named by catalog name (`gold.daily_funnel`). An earlier version of a table is read with
`silver.events VERSION AS OF 3` or `silver.events TIMESTAMP AS OF '2026-11-22 10:00:00'` (the Delta /
Databricks syntax). Only queries run: any statement that could write is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pyarrow as pa
import sqlglot
from sqlglot import exp

from shoplake.errors import QueryError
from shoplake.lake import Lake

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


def run_query(lake: Lake, sql: str, *, limit: int | None = None) -> pa.Table:
    """Run one read-only query over the lake and return its result."""
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
                         f"not {statement.key.upper()}")
    ctes = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}
    with lake.engine() as engine:
        for table in statement.find_all(exp.Table):
            name = f"{table.db}.{table.name}".lower() if table.db else table.name.lower()
            if not table.db:
                if name in ctes:
                    continue
                raise QueryError(f"unknown table {table.name!r}: name tables as <layer>.<name>, "
                                 f"e.g. gold.daily_funnel (see `shoplake tables`)")
            if name in travels:
                base, at = travels[name]
                engine.bind(lake.catalog.get(base), version=at, view=name)
            else:
                engine.bind(lake.catalog.get(name))
        final = statement.sql(dialect="duckdb")
        if limit is not None:
            final = f"SELECT * FROM ({final}) AS q LIMIT {int(limit)}"
        return engine.table(final)
