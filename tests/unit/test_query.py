"""Time travel parsed by sqlglot (`exp.Version`), and batch ids bound as data, never spliced into SQL."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shoplake.config import Settings
from shoplake.errors import QueryError
from shoplake.lake import Lake
from shoplake.query import parse_query, resolve_tables, run_query


def test_time_travel_words_inside_a_string_literal_are_text():
    parsed = parse_query("select 'gold.x VERSION AS OF 1' as s")
    assert parsed.travels == {}
    assert parsed.statement.sql(dialect="duckdb") == "SELECT 'gold.x VERSION AS OF 1' AS s"


def test_time_travel_rewrites_table_references_only(tmp_path):
    lake = Lake(Settings(lake=tmp_path))
    lake.store.write("gold.daily_funnel", pa.table({"n": [1, 2]}), mode="append", meta={"write_key": "a"})
    lake.store.write("gold.daily_funnel", pa.table({"n": [3]}), mode="append", meta={"write_key": "b"})
    got = run_query(lake, "SELECT 'gold.daily_funnel VERSION AS OF 0' AS s, sum(n) AS total "
                          "FROM Gold.Daily_Funnel version as of 0").to_pylist()
    assert got == [{"s": "gold.daily_funnel VERSION AS OF 0", "total": 3}]


def test_time_travel_version_and_timestamp_resolve_to_views():
    parsed = parse_query("SELECT * FROM silver.events VERSION AS OF 3 e "
                         "JOIN gold.daily_funnel TIMESTAMP AS OF '2026-11-22 10:00:00' AS f ON true")
    refs = {ref.view: (ref.table, str(ref.at)) for ref in resolve_tables(parsed)}
    assert refs == {"silver.events__v3": ("silver.events", "3"),
                    "gold.daily_funnel__t20261122100000": ("gold.daily_funnel", "2026-11-22 10:00:00+00:00")}
    assert "VERSION" not in parsed.statement.sql(dialect="duckdb")


@pytest.mark.parametrize(("sql", "message"), [
    ("SELECT * FROM gold.x VERSION AS OF 'abc'", "VERSION AS OF needs a version number, got 'abc'"),
    ("SELECT * FROM gold.x TIMESTAMP AS OF 5", "TIMESTAMP AS OF needs an ISO timestamp"),
    ("WITH c AS (SELECT 1) SELECT * FROM c VERSION AS OF 1", "time travel reads catalog tables"),
])
def test_time_travel_refusals_say_what_is_expected(sql, message):
    with pytest.raises(QueryError, match=message):
        parse_query(sql)


def test_incremental_bind_takes_batch_ids_as_data(tmp_path, catalog):
    """A batch id with a quote or SQL in it selects exactly its rows: ids are bound, not spliced."""
    lake = Lake(Settings(lake=tmp_path))
    spec = catalog.get("bronze.products")
    hostile = "b'); DROP VIEW x; --"
    rows = {c.name: [None, None] for c in spec.columns}
    rows["_batch_id"] = [hostile, "other"]
    lake.store.write(spec.name, pa.Table.from_pydict(rows, schema=spec.arrow_schema), mode="append",
                     meta={"write_key": "w"})
    with lake.engine() as engine:
        engine.bind(spec, batches=[hostile])
        assert engine.rows(f"SELECT _batch_id FROM {spec.name}") == [(hostile,)]
        engine.bind(spec, batches=[])
        assert engine.rows(f"SELECT count(*) FROM {spec.name}") == [(0,)]
