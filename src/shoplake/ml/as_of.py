"""What the propensity features may read, and the parse check that refuses anything else.

Leakage is made impossible by construction rather than searched for afterwards. The features of a cutoff T
are computed in two steps, and both are SQL that sqlglot parses before any of it runs:

1. The *window* query (`features.feature_window_sql()`) is the only read of a catalog table. It must be one
   plain `SELECT` from a table declared in `AS_OF_INPUTS`, and its `WHERE` must keep only rows strictly
   before the cutoff: a top-level `AND` term exactly `<time column> < $cutoff`, where `$cutoff` is the named
   parameter the training code binds to T. Gold tables (aggregates over all time, label window included),
   tables without a time column, joins and subqueries are refused.
2. The *feature* query (`features.pair_features_sql()`) may read only the names the training code binds as
   of T (`FEATURE_QUERY_INPUTS`: the window's rows and the cutoff itself) and its own CTEs.

This is an allow-list: a reference is accepted only when it is named here. The cutoff-invariance audit
(`leakage.audit_cutoff_invariance`) then re-binds every input the window reads as of T and proves, on the
run's data, that no feature changes.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from shoplake.ml.errors import LeakageError


@dataclass(frozen=True)
class AsOfInput:
    """A catalog table that can be bound as of a cutoff T: the rows whose `time_column` is before T."""

    table: str
    time_column: str


# The catalog tables a feature window may read. Gold tables are absent on purpose: they aggregate all
# time, so a feature read from them sees the label window (the audit that found a leaky feature
# promoted to champion had it reading all-time counts from gold.product_performance).
AS_OF_INPUTS: dict[str, AsOfInput] = {"silver.events": AsOfInput("silver.events", "event_at")}

# The named parameter of the window query that the training code binds to the cutoff T.
CUTOFF_PARAMETER = "cutoff"

# What a feature query may read: the window's rows (all before T) and a one-row table holding T.
FEATURE_QUERY_INPUTS = ("feature_events", "feature_cutoff")


def _parse(sql: str, what: str) -> exp.Expr:
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except ParseError as exc:
        raise LeakageError(f"{what} cannot be parsed, so what it reads cannot be checked: "
                           f"{str(exc).splitlines()[0]}") from exc
    if len(statements) != 1:
        raise LeakageError(f"{what} must be one SQL statement, found {len(statements)}")
    return statements[0]


def _table_name(table: exp.Table) -> str:
    return ".".join(part for part in (table.catalog, table.db, table.name) if part)


def _refuse_reference(what: str, table: exp.Table, allowed: Collection[str]) -> LeakageError:
    allowed_text = ", ".join(sorted(allowed))
    if not isinstance(table.this, exp.Identifier):
        return LeakageError(f"{what} reads a table function ({table.this.sql(dialect='duckdb')[:60]}): features "
                            f"may read only {allowed_text}")
    name = _table_name(table)
    if table.db == "gold" or name.startswith("gold."):
        return LeakageError(f"{what} reads {name}: Gold tables aggregate all time, the label window included; "
                            f"features may read only {allowed_text}")
    return LeakageError(f"{what} reads {name}, which is not bound as of the cutoff; features may read only "
                        f"{allowed_text}")


def _is_strictly_before_cutoff(term: exp.Expr, time_column: str) -> bool:
    return (isinstance(term, exp.LT) and isinstance(term.this, exp.Column) and term.this.name == time_column
            and isinstance(term.expression, exp.Placeholder) and term.expression.name == CUTOFF_PARAMETER)


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    """The terms of a top-level AND chain (parentheses removed); one term when there is no AND."""
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return _conjuncts(condition.this) + _conjuncts(condition.expression)
    return [condition]


def check_window_sql(sql: str) -> AsOfInput:
    """Refuse a window query that could read a row at or after the cutoff; return the input it reads.

    Raises:
        LeakageError: the query reads something other than one `AS_OF_INPUTS` table, or does not keep
            only the rows with `<time column> < $cutoff`.
    """
    what = "the feature window query"
    tree = _parse(sql, what)
    if not isinstance(tree, exp.Select) or tree.args.get("with") or tree.args.get("joins"):
        raise LeakageError(f"{what} must be one SELECT from one table, without WITH, joins or set operations")
    tables = list(tree.find_all(exp.Table))
    for table in tables:
        if _table_name(table) not in AS_OF_INPUTS or not isinstance(table.this, exp.Identifier):
            raise _refuse_reference(what, table, AS_OF_INPUTS)
    if len(tables) != 1 or any(select is not tree for select in tree.find_all(exp.Select)):
        raise LeakageError(f"{what} must read one table, without subqueries")
    source = AS_OF_INPUTS[_table_name(tables[0])]
    where = tree.args.get("where")
    terms = _conjuncts(where.this) if where is not None else []
    if not any(_is_strictly_before_cutoff(term, source.time_column) for term in terms):
        raise LeakageError(f"{what} reads {source.table} without the condition `{source.time_column} < "
                           f"${CUTOFF_PARAMETER}` on every row (its WHERE is "
                           f"{where.this.sql(dialect='duckdb') if where is not None else 'missing'}): features "
                           f"may read only rows strictly before the cutoff")
    return source


def check_feature_sql(sql: str, *, allowed: Collection[str] = FEATURE_QUERY_INPUTS) -> None:
    """Refuse a feature query that reads anything but `allowed` (names bound as of the cutoff) and its CTEs.

    Raises:
        LeakageError: naming the first reference outside the allow-list.
    """
    what = "a feature query"
    tree = _parse(sql, what)
    own = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise _refuse_reference(what, table, allowed)
        name = _table_name(table)
        if name in allowed or (name in own and "." not in name):
            continue
        raise _refuse_reference(what, table, allowed)
