"""The second line of defence: an API engine session cannot touch files outside the lake, even when a
query gets past the statement checks."""

from __future__ import annotations

import pytest

import shoplake.query
from shoplake.errors import QueryError
from shoplake.query import QueryPolicy, run_query

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
        engine.sandbox([lake.settings.lake])
        with pytest.raises(QueryError):
            engine.rows(sql)


def test_the_sandbox_cannot_be_switched_off(served):
    with served.lake.engine() as engine:
        engine.sandbox([served.lake.settings.lake])
        with pytest.raises(QueryError, match="locked"):
            engine.rows("SET enable_external_access = true")


def test_a_sandboxed_session_still_reads_the_lake(served):
    lake = served.lake
    with lake.engine() as engine:
        engine.sandbox([lake.settings.lake])
        engine.bind(lake.catalog.get("gold.daily_funnel"))
        assert engine.rows("SELECT count(*) FROM gold.daily_funnel")[0][0] == lake.store.row_count("gold.daily_funnel")


def test_run_query_stays_sandboxed_when_the_statement_checks_are_bypassed(served, monkeypatch):
    monkeypatch.setattr(shoplake.query, "_refuse_outside_access", lambda statement: None)
    policy = QueryPolicy(layers=frozenset({"gold"}), timeout_seconds=10)
    with pytest.raises(QueryError, match="(?i)permission|disabled"):
        run_query(served.lake, "SELECT * FROM gold.daily_funnel, LATERAL read_text('/etc/passwd')", policy=policy)
    # The CLI path (no policy) is not sandboxed: the same query reads the file there.
    assert run_query(served.lake, "SELECT count(*) AS n FROM gold.daily_funnel AS f, LATERAL read_text('/etc/passwd')"
                     ).column("n")[0].as_py() > 0
