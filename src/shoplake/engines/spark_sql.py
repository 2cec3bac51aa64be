"""DuckDB-dialect SQL -> Spark SQL: sqlglot's translation plus the few overrides it gets wrong.

The declared SQL (layers, checks, source parsing) is written once, in DuckDB's dialect. The Spark engine
runs it through `to_spark`, which
- renames catalog tables (`silver.events`) to the temporary views the engine binds them as
  (`silver__events`), since Spark temporary views cannot carry a schema; and
- applies the overrides below, each where sqlglot 30's DuckDB -> Spark output differs in meaning.
  Every override is covered by a test that runs the same input on both engines
  (tests/parity/test_sql_overrides.py).
"""

from __future__ import annotations

import re
from functools import lru_cache

import sqlglot
from sqlglot import exp

from shoplake.errors import QueryError


def view_name(name: str) -> str:
    """The Spark temporary view a catalog name (`layer.table`) is bound as."""
    return name.replace(".", "__")


def spark_type(duckdb_type: str) -> str:
    """A declared (DuckDB) column type in Spark SQL (`VARCHAR` -> `STRING`, `TIMESTAMPTZ` -> `TIMESTAMP`)."""
    return exp.DataType.build(duckdb_type, dialect="duckdb").sql(dialect="spark")


@lru_cache(maxsize=512)
def to_spark(sql: str) -> str:
    """Translate one DuckDB-dialect statement (or expression) to Spark SQL."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"cannot parse SQL: {str(exc).splitlines()[0]}") from exc
    tree = tree.transform(_override)
    return tree.sql(dialect="spark")


def _override(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Table) and node.args.get("db") and not node.args.get("catalog"):
        return _catalog_view(node)
    if isinstance(node, exp.DayOfWeekIso):
        return _iso_day_of_week(node)
    if isinstance(node, exp.TimeToUnix):
        return _epoch_seconds(node)
    if isinstance(node, exp.Anonymous) and node.name.upper() in ("STRPTIME", "TRY_STRPTIME"):
        return _strptime_formats(node)
    return node


def _catalog_view(table: exp.Table) -> exp.Expr:
    """`silver.events [AS e]` -> `silver__events [AS e]` (unaliased: aliased as `events`, so qualified
    column references such as `events.user_id` keep resolving)."""
    alias = table.alias or table.name
    renamed = exp.Table(this=exp.to_identifier(view_name(f"{table.db}.{table.name}")))
    return exp.alias_(renamed, alias, table=True)


def _iso_day_of_week(node: exp.DayOfWeekIso) -> exp.Expr:
    # sqlglot writes ((DAYOFWEEK(x) % 7) + 1), which makes Sunday 2; Spark's WEEKDAY is 0 = Monday.
    return exp.Paren(this=exp.Add(this=exp.Anonymous(this="WEEKDAY", expressions=[node.this]),
                                  expression=exp.Literal.number(1)))


def _micros(value: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this="UNIX_MICROS", expressions=[value])


def _epoch_seconds(node: exp.TimeToUnix) -> exp.Expr:
    """DuckDB `epoch(ts)` and `epoch(ts1 - ts2)` (an interval) -> seconds as DOUBLE.

    sqlglot writes UNIX_TIMESTAMP(...), which Spark refuses for an interval and truncates to whole
    seconds for a timestamp.
    """
    value = node.this
    if isinstance(value, exp.Sub):
        micros: exp.Expr = exp.Sub(this=_micros(value.this), expression=_micros(value.expression))
    else:
        micros = _micros(value)
    # DOUBLE, as DuckDB returns: Spark would make `micros / 1000000.0` a DECIMAL.
    seconds = exp.Div(this=exp.Cast(this=micros, to=exp.DataType.build("DOUBLE")),
                      expression=exp.Literal.number(1000000))
    return exp.Paren(this=seconds)


_STRFTIME_TO_JAVA = {"%Y": "yyyy", "%m": "M", "%d": "d", "%H": "H", "%M": "m", "%S": "s", "%f": "SSSSSS"}


def java_datetime_pattern(strftime: str) -> str:
    """A strptime format (the directives shoplake's sources use) as a Spark datetime pattern.

    Month, day and time fields take one letter, which parses one or two digits as DuckDB's strptime
    does; literal letters (`T`, ` UTC`) are quoted, since Spark reads bare letters as pattern fields.
    """
    out = []
    for token in re.findall(r"%.|[A-Za-z]+|[^%A-Za-z]+", strftime):
        if token.startswith("%"):
            if token not in _STRFTIME_TO_JAVA:
                raise QueryError(f"strptime directive {token} has no Spark translation in shoplake")
            out.append(_STRFTIME_TO_JAVA[token])
        elif token[0].isalpha():
            out.append(f"'{token}'")
        else:
            out.append(token)
    return "".join(out)


def _strptime_formats(node: exp.Anonymous) -> exp.Expr:
    """`[TRY_]STRPTIME(x, fmt | [fmt, ...])` -> COALESCE(TRY_TO_TIMESTAMP(x, java_fmt), ...).

    sqlglot passes a list of formats through unchanged, which Spark cannot take; DuckDB returns the
    first format that parses. (Plain STRPTIME errors on no match in DuckDB; here it gives NULL.)
    """
    value, formats = node.expressions[0], node.expressions[1]
    listed = formats.expressions if isinstance(formats, exp.Array) else [formats]
    attempts = [exp.Anonymous(this="TRY_TO_TIMESTAMP",
                              expressions=[value.copy(), exp.Literal.string(java_datetime_pattern(f.name))])
                for f in listed]
    return attempts[0] if len(attempts) == 1 else exp.Coalesce(this=attempts[0], expressions=attempts[1:])
