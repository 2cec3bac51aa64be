"""Read-only SQL over the catalog, with Delta time travel.

Tables are named by catalog name (`gold.daily_funnel`). An earlier version of a table is read with
`silver.events VERSION AS OF 3` or `silver.events TIMESTAMP AS OF '2026-11-22 10:00:00'` (the Delta /
Databricks syntax). Only queries run: any statement that could write is refused.

`parse_query` and `resolve_tables` are shared with the SQL API's query service, which adds its allow-list,
role check and sandboxed session on top (`shoplake.serve.service`); `run_query` is the trusted path of the
`shoplake sql` command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from shoplake.engines.base import Capability
from shoplake.errors import QueryError
from shoplake.lake import Lake


@dataclass(frozen=True)
class ParsedQuery:
    """One read query, parsed; time-travelled references renamed to views (`gold.t__v3`)."""

    statement: exp.Query
    travels: dict[str, tuple[str, int | datetime]]


@dataclass(frozen=True)
class TableRef:
    """A catalog table a query reads: the name it has in the query, the table, and the version read."""

    view: str
    table: str
    at: int | datetime | None = None


def _travel_target(version: exp.Version) -> tuple[int | datetime, str]:
    """The version or moment of a parsed `VERSION AS OF n` / `TIMESTAMP AS OF '...'`, and a view suffix."""
    kind, value = str(version.name).upper(), version.expression
    if str(version.args.get("kind", "")).upper() != "AS OF" or kind not in ("VERSION", "TIMESTAMP"):
        raise QueryError(f"unsupported time travel {version.sql(dialect='duckdb')!r}: use VERSION AS OF n or "
                         f"TIMESTAMP AS OF '2026-11-22 10:00:00'")
    text = value.sql(dialect="duckdb") if value is not None else ""
    if kind == "VERSION":
        if not (isinstance(value, exp.Literal) and not value.is_string and value.name.isdigit()):
            raise QueryError(f"VERSION AS OF needs a version number, got {text}")
        at: int | datetime = int(value.name)
        return at, f"v{at}"
    try:
        if not (isinstance(value, exp.Literal) and value.is_string):
            raise ValueError(text)
        at = datetime.fromisoformat(value.name)
    except ValueError as exc:
        raise QueryError(f"TIMESTAMP AS OF needs an ISO timestamp such as '2026-11-22 10:00:00', "
                         f"got {text}") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at, "t" + at.strftime("%Y%m%d%H%M%S")


def _rewrite_time_travel(statement: exp.Expr) -> dict[str, tuple[str, int | datetime]]:
    """Replace each `t VERSION AS OF n` (sqlglot's `exp.Version` on a table) by a reference to a view bound
    at that version, in place. Only table references travel: the same words inside a string literal or a
    comment are text."""
    travels: dict[str, tuple[str, int | datetime]] = {}
    for table in list(statement.find_all(exp.Table)):
        version = table.args.get("version")
        if version is None:
            continue
        if not table.db or table.catalog or not isinstance(table.this, exp.Identifier):
            raise QueryError(f"time travel reads catalog tables such as gold.daily_funnel VERSION AS OF 3, not "
                             f"{table.name!r}")
        at, suffix = _travel_target(version)
        name = f"{table.db}.{table.name}".lower()
        layer, short = name.split(".", 1)
        view = f"{layer}.{short}__{suffix}"
        travels[view] = (name, at)
        table.set("version", None)
        table.set("db", exp.to_identifier(layer))
        table.set("this", exp.to_identifier(f"{short}__{suffix}"))
    return travels


def has_time_travel(sql: str, *, dialect: str = "duckdb") -> bool:
    """Whether the query reads a table `VERSION AS OF` or `TIMESTAMP AS OF` (sqlglot's `exp.Version` on a table).

    False when the text does not parse: the caller's own parse reports that.
    """
    try:
        statements = sqlglot.parse(sql.strip().rstrip(";"), dialect=dialect)
    except sqlglot.errors.SqlglotError:
        return False
    return any(table.args.get("version") is not None
               for statement in statements if statement is not None for table in statement.find_all(exp.Table))


def _statement_class(statement: exp.Expr, sql: str) -> str:
    """The kind of statement, as a user would name it (INSERT, COPY, LOAD, CHECKPOINT, ...)."""
    if isinstance(statement, exp.Command):
        return statement.name.upper()  # statements sqlglot only knows by their keyword (LOAD, CALL, ...)
    if isinstance(statement, exp.Column | exp.Identifier | exp.Var):
        return sql.split(None, 1)[0].upper()  # a bare keyword such as CHECKPOINT parses as a name
    return statement.key.upper()


def parse_query(sql: str) -> ParsedQuery:
    """Parse exactly one read query (SELECT, WITH, set operations), with time travel.

    Raises:
        QueryError: a parse error, several statements, or a statement that is not a query.
    """
    text = sql.strip().rstrip(";")
    try:
        statements = sqlglot.parse(text, dialect="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1 or statements[0] is None:
        raise QueryError("give exactly one SQL statement")
    statement = statements[0]
    if not isinstance(statement, exp.Query):
        raise QueryError(f"only read queries (SELECT, WITH, UNION, ...) are allowed, "
                         f"not {_statement_class(statement, text)}")
    return ParsedQuery(statement, _rewrite_time_travel(statement))


def resolve_tables(parsed: ParsedQuery) -> list[TableRef]:
    """The catalog tables a query reads, resolved scope by scope.

    A bare name is a CTE only where that CTE is visible (sqlglot's scopes follow SQL's rules), so a CTE
    defined inside a subquery cannot make a bare system view name elsewhere look like a CTE. Table
    functions (`range(10)`, `read_csv(...)`) are not tables; whether they may run is the caller's policy.

    Raises:
        QueryError: a name that is not `<layer>.<name>` and not a visible CTE.
    """
    try:
        scopes = traverse_scope(parsed.statement)
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"cannot resolve the tables of the query: {str(exc).splitlines()[0]}") from exc
    refs: dict[str, TableRef] = {}
    resolved: set[int] = set()
    for scope in scopes:
        visible_ctes = {name.lower() for name in scope.cte_sources}
        for table in scope.tables:
            resolved.add(id(table))
            if not isinstance(table.this, exp.Identifier):
                continue
            if not table.db and not table.catalog and table.name.lower() in visible_ctes:
                continue
            if table.catalog or not table.db:
                raise QueryError(f"unknown table {table.sql(dialect='duckdb')!r}: name tables as <layer>.<name>, "
                                 f"e.g. gold.daily_funnel (see `shoplake tables`)")
            view = f"{table.db}.{table.name}".lower()
            base, at = parsed.travels.get(view, (view, None))
            refs.setdefault(view, TableRef(view, base, at))
    for table in parsed.statement.find_all(exp.Table):
        # Every table node must belong to a scope; one sqlglot could not place is refused, not skipped.
        if id(table) not in resolved and isinstance(table.this, exp.Identifier):
            raise QueryError(f"cannot tell which table {table.sql(dialect='duckdb')!r} is; "
                             f"name tables as <layer>.<name> outside nested constructs")
    return list(refs.values())


def limited(statement: exp.Query, limit: int | None) -> str:
    """The statement as DuckDB SQL, returning at most `limit` rows."""
    final = statement.sql(dialect="duckdb")
    return final if limit is None else f"SELECT * FROM ({final}) AS q LIMIT {int(limit)}"


def run_query(lake: Lake, sql: str, *, limit: int | None = None) -> pa.Table:
    """Run one read-only query over the lake and return its result (the trusted `shoplake sql` path).

    Untrusted callers go through `shoplake.serve.service.QueryService` instead, which adds the
    allow-list, the role check, a sandboxed session and hard limits.

    Args:
        limit: at most this many rows.
    """
    parsed = parse_query(sql)
    refs = resolve_tables(parsed)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        for ref in refs:
            engine.bind(lake.catalog.get(ref.table), version=ref.at, view=ref.view)
        return engine.table(limited(parsed.statement, limit))
