"""The second wall: an API engine session can open no file at all, even when a query gets past the allow-list.

These tests switch the allow-list off (in process) to check that the sandboxed session alone holds.
"""

from __future__ import annotations

import pytest

import shoplake.serve.worker
from shoplake.errors import QueryError
from shoplake.serve.worker import QueryJob, execute

FILE_READS = [
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_json_objects('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "COPY (SELECT 1) TO '/tmp/shoplake-sandbox-escape.csv'",
    "ATTACH '/tmp/shoplake-sandbox-escape.duckdb' AS escape",
    "INSTALL httpfs",
]


@pytest.mark.parametrize("sql", FILE_READS)
def test_a_sandboxed_session_cannot_reach_files(served, sql):
    lake = served.lake
    with lake.engine() as engine:
        # Without the sandbox the same session reads /etc/passwd (so the test can fail).
        assert engine.rows("SELECT count(*) FROM read_text('/etc/passwd')")[0][0] == 1
        engine.sandbox()
        with pytest.raises(QueryError):
            engine.rows(sql)


def test_a_sandboxed_session_cannot_read_the_lake_files_by_path(served):
    lake = served.lake
    bronze = lake.store.file_uris("bronze.clickstream")
    with lake.engine() as engine:
        assert engine.rows(f"SELECT count(*) FROM read_parquet('{bronze[0]}')")[0][0] > 0
        engine.sandbox()
        engine.bind(lake.catalog.get("gold.daily_funnel"))
        with pytest.raises(QueryError, match="(?i)disabled|permission"):
            engine.rows(f"SELECT count(*) FROM read_parquet('{bronze[0]}')")
        # Not even the gold table's own files: the session reads them through Arrow, not by path.
        gold = lake.store.file_uris("gold.daily_funnel")
        with pytest.raises(QueryError, match="(?i)disabled|permission"):
            engine.rows(f"SELECT count(*) FROM read_parquet('{gold[0]}')")


def test_the_sandbox_cannot_be_switched_off(served):
    with served.lake.engine() as engine:
        engine.sandbox()
        with pytest.raises(QueryError, match="locked"):
            engine.rows("SET enable_external_access = true")


def test_a_sandboxed_session_still_reads_the_tables_bound_to_it(served):
    lake = served.lake
    with lake.engine() as engine:
        engine.sandbox()
        engine.bind(lake.catalog.get("gold.daily_funnel"))
        assert engine.rows("SELECT count(*) FROM gold.daily_funnel")[0][0] == lake.store.row_count("gold.daily_funnel")


def test_a_query_past_a_switched_off_allow_list_still_reads_no_file(served, monkeypatch):
    monkeypatch.setattr(shoplake.serve.worker, "check_allowed", lambda statement: None)
    job = QueryJob("SELECT * FROM gold.daily_funnel, LATERAL read_text('/etc/passwd')", frozenset({"gold"}),
                   limit=10, row_cap=10, byte_cap=10_000)
    answer = execute(served.lake, job)
    assert answer.status == "refused" and "disabled by configuration" in answer.message
    assert b"root:" not in answer.body
