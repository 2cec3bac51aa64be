#!/usr/bin/env python3
"""Lean reference job in DuckDB: clickstream CSV(.gz) -> Silver events -> gold.daily_funnel and
gold.product_performance, in one process, with none of shoplake's bookkeeping.

It does the same work as shoplake's core path, with shoplake's own SQL text: the source's parse rules
(`judge_sql`), `silver/events.sql` with the quarantine checks of `silver.events` applied as a filter and
exact duplicates removed, then the two Gold tables' SQL over `silver.events`. What it leaves out is what
the benchmark measures the cost of: Bronze with lineage, quarantine tables, the ledger, Delta commits,
the other Gold tables. Silver and Gold are written as Parquet files (Silver is what Gold reads).

    python bench/lean_duckdb.py bench/.cache/clickstream-1000000/clickstream.csv.gz [--out DIR]

Prints one JSON line: {"rows": Silver rows, "tables": {table: rows}, "seconds": ...}.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
from sqlglot import exp

from shoplake.catalog.spec import TableSpec
from shoplake.layers.gold import DAILY_FUNNEL, PRODUCT_PERFORMANCE
from shoplake.layers.silver import EVENTS
from shoplake.sources.schemas import CLICKSTREAM, judge_sql

GOLD = (DAILY_FUNNEL, PRODUCT_PERFORMANCE)
MEMORY_LIMIT = "2GB"


def _literal(value: str) -> str:
    # COPY targets and view definitions cannot take bound parameters: quote through sqlglot instead.
    return exp.Literal.string(value).sql(dialect="duckdb")


def typed_select(spec: TableSpec, relation: str) -> str:
    """The declared columns of `spec`, cast to their declared types (as shoplake's runner writes them)."""
    cols = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in spec.columns)
    return f"SELECT {cols} FROM {relation}"


def bronze_sql(path: Path) -> str:
    """The CSV parsed and typed by the clickstream source's rules; rows the rules refuse are left out."""
    raw = ", ".join(f'"{c.name}" AS "r_{c.name}"' for c in CLICKSTREAM.columns)
    columns = "{" + ", ".join(f"{_literal(c.name)}: 'VARCHAR'" for c in CLICKSTREAM.columns) + "}"
    compression = "gzip" if path.name.endswith(".gz") else "none"
    # ignore_errors: a line with the wrong field count is skipped (shoplake quarantines it).
    scan = (f"read_csv({_literal(str(path))}, header = true, auto_detect = false, columns = {columns}, "
            f"delim = ',', quote = '\"', escape = '\"', compression = '{compression}', ignore_errors = true)")
    typed, reasons = judge_sql(CLICKSTREAM.columns)
    names = ", ".join(f'"{c.name}"' for c in CLICKSTREAM.columns)
    return f"""
        WITH raw AS (SELECT {raw} FROM {scan}),
        typed AS (SELECT *, {', '.join(typed)} FROM raw),
        judged AS (SELECT *, CASE {' '.join(reasons)} END AS _reason FROM typed)
        SELECT {names}, CAST(NULL AS VARCHAR) AS _batch_id, CAST(NULL AS BIGINT) AS _source_row
        FROM judged WHERE _reason IS NULL
    """


def silver_sql() -> str:
    """`silver/events.sql` over `bronze.clickstream`, quarantine checks as a filter, exact duplicates removed."""
    failing = " OR ".join(f"({c.failing_sql})" for c in EVENTS.checks if c.action == "quarantine")
    good = f"(SELECT * FROM ({EVENTS.sql()}) AS candidate WHERE NOT coalesce({failing}, false)) AS g"
    return f"SELECT DISTINCT * FROM ({typed_select(EVENTS, good)}) AS n"


def run(path: Path, out_dir: Path, *, memory_limit: str = MEMORY_LIMIT) -> dict[str, int]:
    """Build Silver and the two Gold tables from `path` into `out_dir/<table>.parquet`; rows per table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": str(out_dir / "spill")})
    try:
        con.execute("SET TimeZone = 'UTC'")  # as shoplake's engine: dates and hours of UTC timestamps
        con.execute("SET preserve_insertion_order = false")  # lets the dedup and aggregates spill
        con.execute("SET enable_progress_bar = false")
        for schema in ("bronze", "silver"):
            con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"CREATE VIEW bronze.clickstream AS {bronze_sql(path)}")
        # No product catalog in this job: rows without category and brand keep them NULL.
        con.execute("CREATE TABLE silver.products (product_id BIGINT, category_id BIGINT, "
                    "category_code VARCHAR, brand VARCHAR, is_current BOOLEAN)")
        counts = {}
        silver_file = out_dir / "silver_events.parquet"
        counts[EVENTS.name] = _copy(con, silver_sql(), silver_file)
        # Gold reads Silver back from its file, as it would from the lake.
        con.execute(f"CREATE VIEW silver.events AS SELECT * FROM read_parquet({_literal(str(silver_file))})")
        for spec in GOLD:
            file = out_dir / f"{spec.name.split('.')[1]}.parquet"
            counts[spec.name] = _copy(con, typed_select(spec, f"({spec.sql()}) AS t"), file)
        return counts
    finally:
        con.close()


def _copy(con: duckdb.DuckDBPyConnection, sql: str, file: Path) -> int:
    """Write the result of `sql` to a Parquet file; the number of rows written."""
    return int(con.execute(f"COPY ({sql}) TO {_literal(str(file))} (FORMAT parquet)").fetchall()[0][0])


if __name__ == "__main__":
    import _lean_cli  # a sibling file: bench/ is on sys.path when this runs as a script

    _lean_cli.main(run, __doc__)
