"""The SQL API through FastAPI's TestClient: tokens, roles, refused statements, caps, CSV, time limit, log."""

from __future__ import annotations

import csv
import io
import time

import pytest

from shoplake.layers.ops import QUERY_LOG
from shoplake.query import run_query

from .conftest import ROW_CAP, TIMEOUT_SECONDS

SQL = "/api/v1/sql"


def post(client, served, query: str, role: str | None = "analyst", **extra):
    headers = served.headers(role) if role else {}
    headers |= extra.pop("headers", {})
    return client.post(SQL, json={"query": query, **extra}, headers=headers)


def test_no_token_is_401(client, served):
    response = post(client, served, "SELECT 1 AS x", role=None)
    assert response.status_code == 401
    assert "bearer token" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_token_is_401(client, served):
    response = post(client, served, "SELECT 1 AS x", role=None, headers={"Authorization": "Bearer slk_wrong"})
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid token"


def test_analyst_reads_gold(client, served):
    response = post(client, served, "SELECT event_date, count_events FROM gold.daily_funnel ORDER BY event_date")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = run_query(served.lake, "SELECT event_date, count_events FROM gold.daily_funnel ORDER BY event_date")
    assert [c["name"] for c in body["columns"]] == ["event_date", "count_events"]
    assert body["rows"] == [[d.isoformat(), n] for d, n in zip(*expected.to_pydict().values(), strict=True)]
    assert body["row_count"] == expected.num_rows > 0
    assert body["truncated"] is False


@pytest.mark.parametrize("table", ["silver.events", "bronze.clickstream", "quarantine.retail"])
def test_analyst_on_a_restricted_layer_is_403_naming_the_table(client, served, table):
    response = post(client, served, f"SELECT count(*) FROM {table}")
    assert response.status_code == 403
    assert table in response.json()["detail"]


def test_analyst_cannot_time_travel_into_silver(client, served):
    response = post(client, served, "SELECT count(*) FROM silver.events VERSION AS OF 0")
    assert response.status_code == 403


def test_engineer_reads_silver(client, served):
    response = post(client, served, "SELECT count(*) AS n FROM silver.events", role="engineer")
    assert response.status_code == 200, response.text
    expected = run_query(served.lake, "SELECT count(*) AS n FROM silver.events").column("n")[0].as_py()
    assert response.json()["rows"] == [[expected]]


REFUSED_STATEMENTS = {
    "insert": "INSERT INTO gold.daily_funnel SELECT * FROM gold.daily_funnel",
    "update": "UPDATE gold.daily_funnel SET revenue = 0",
    "delete": "DELETE FROM gold.daily_funnel",
    "create": "CREATE TABLE t AS SELECT 1",
    "drop": "DROP TABLE gold.daily_funnel",
    "copy": "COPY gold.daily_funnel TO '/tmp/out.csv'",
    "copy_from": "COPY t FROM '/etc/passwd'",
    "attach": "ATTACH '/tmp/other.duckdb' AS other",
    "detach": "DETACH other",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "pragma": "PRAGMA enable_profiling",
    "set": "SET enable_external_access = true",
    "reset": "RESET threads",
    "call": "CALL pragma_version()",
    "export": "EXPORT DATABASE '/tmp/dump'",
    "two_statements": "SELECT 1; DROP TABLE gold.daily_funnel",
}


@pytest.mark.parametrize("sql", REFUSED_STATEMENTS.values(), ids=REFUSED_STATEMENTS.keys())
def test_statements_that_are_not_queries_are_400(client, served, sql):
    response = post(client, served, sql, role="engineer")
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "only read queries" in detail or "cannot parse" in detail or "exactly one" in detail


@pytest.mark.parametrize(("key", "named"), [("insert", "INSERT"), ("drop", "DROP"), ("copy", "COPY"),
                                           ("attach", "ATTACH"), ("load", "LOAD"), ("pragma", "PRAGMA"),
                                           ("set", "SET"), ("call", "CALL")])
def test_the_refusal_names_the_statement_class(client, served, key, named):
    assert f"not {named}" in post(client, served, REFUSED_STATEMENTS[key]).json()["detail"]


# Every way found to make DuckDB read a file: table functions, scalar use, lateral joins, quoted paths.
PASSWD_READERS = {
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('/etc/passwd')",
    "read_text": "SELECT * FROM read_text('/etc/passwd')",
    "read_blob": "SELECT * FROM read_blob('/etc/passwd')",
    "read_json": "SELECT * FROM read_json('/etc/passwd')",
    "read_json_auto": "SELECT * FROM read_json_auto('/etc/passwd')",
    "read_json_objects": "SELECT * FROM read_json_objects('/etc/passwd')",
    "read_ndjson": "SELECT * FROM read_ndjson('/etc/passwd')",
    "read_parquet": "SELECT * FROM read_parquet('/etc/passwd')",
    "parquet_scan": "SELECT * FROM parquet_scan('/etc/passwd')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('/etc/passwd')",
    "parquet_schema": "SELECT * FROM parquet_schema('/etc/passwd')",
    "sniff_csv": "SELECT * FROM sniff_csv('/etc/passwd')",
    "glob": "SELECT * FROM glob('/etc/*')",
    "quoted_path": "SELECT * FROM '/etc/passwd'",
    "double_quoted_path": 'SELECT * FROM "/etc/passwd"',
    "scalar_subquery": "SELECT (SELECT content FROM read_text('/etc/passwd')) AS c FROM gold.daily_funnel",
    "lateral": "SELECT * FROM gold.daily_funnel, LATERAL read_csv('/etc/passwd')",
    "cte": "WITH p AS (SELECT * FROM read_text('/etc/passwd')) SELECT * FROM p",
    "union": "SELECT 'x' AS c UNION ALL SELECT content FROM read_text('/etc/passwd')",
    "query_function": "SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')",
    "query_table": "SELECT * FROM query_table('/etc/passwd')",
    "delta_scan": "SELECT * FROM delta_scan('/etc')",
    "sqlite_scan": "SELECT * FROM sqlite_scan('/etc/passwd', 't')",
    "st_read": "SELECT * FROM ST_Read('/etc/passwd')",
    "http": "SELECT * FROM read_csv('http://example.com/x.csv')",
}


@pytest.mark.parametrize("sql", PASSWD_READERS.values(), ids=PASSWD_READERS.keys())
def test_reading_files_is_refused_with_400(client, served, sql):
    response = post(client, served, sql, role="engineer")
    assert response.status_code == 400, response.text
    assert "root:" not in response.text


def test_limit_is_honoured_and_the_cap_is_reported(client, served):
    total = run_query(served.lake, "SELECT count(*) AS n FROM gold.product_performance").column("n")[0].as_py()
    assert total > ROW_CAP  # the fixture is large enough for the cap to bite
    capped = post(client, served, "SELECT product_id FROM gold.product_performance").json()
    assert capped["row_count"] == len(capped["rows"]) == ROW_CAP
    assert capped["truncated"] is True and capped["row_cap"] == ROW_CAP
    asked = post(client, served, "SELECT product_id FROM gold.product_performance", limit=7).json()
    assert asked["row_count"] == 7 and asked["truncated"] is False
    above = post(client, served, "SELECT product_id FROM gold.product_performance", limit=ROW_CAP * 10).json()
    assert above["row_count"] == ROW_CAP and above["truncated"] is True


def test_csv_by_accept_header(client, served):
    sql = "SELECT event_date, count_views FROM gold.daily_funnel ORDER BY event_date"
    response = post(client, served, sql, headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    parsed = list(csv.reader(io.StringIO(response.text)))
    expected = run_query(served.lake, sql).to_pylist()
    assert parsed[0] == ["event_date", "count_views"]
    assert parsed[1:] == [[r["event_date"].isoformat(), str(r["count_views"])] for r in expected]


def test_a_slow_query_stops_with_a_clear_error(client, served):
    slow = "SELECT count(*) FROM range(100000000) a, range(100000000) b WHERE a.range + b.range = -1"
    started = time.monotonic()
    response = post(client, served, slow)
    assert response.status_code == 408, response.text
    assert f"{TIMEOUT_SECONDS} s time limit" in response.json()["detail"]
    # The stop is the timer's: far sooner than the cross join could ever finish.
    assert time.monotonic() - started < 60


def _log_rows(served, client, query_id: str) -> list[dict]:
    client.app.state.query_log.flush()
    return run_query(served.lake, f"SELECT * FROM {QUERY_LOG.name} WHERE query_id = '{query_id}'").to_pylist()


@pytest.mark.parametrize(("role", "sql", "status", "rows"), [
    ("analyst", "SELECT event_date FROM gold.daily_funnel ORDER BY 1 LIMIT 3", "ok", 3),
    ("analyst", "SELECT count(*) FROM silver.events", "forbidden", 0),
    ("engineer", "DELETE FROM gold.daily_funnel", "refused", 0),
    (None, "SELECT 1", "unauthorized", 0),
])
def test_every_query_is_logged_once(client, served, role, sql, status, rows):
    response = post(client, served, sql, role=role)
    logged = _log_rows(served, client, response.headers["x-query-id"])
    assert len(logged) == 1
    entry = logged[0]
    assert (entry["status"], entry["rows"], entry["query"]) == (status, rows, sql)
    assert entry["token_name"] == (f"{role}-token" if role else None)
    assert (entry["error"] is None) == (status == "ok")


def test_tables_lists_what_the_role_may_read(client, served):
    listed = client.get("/api/v1/tables", headers=served.headers("analyst"))
    assert listed.status_code == 200, listed.text
    analyst = {t["name"] for t in listed.json()}
    engineer = {t["name"] for t in client.get("/api/v1/tables", headers=served.headers("engineer")).json()}
    assert "gold.daily_funnel" in analyst and "ops.query_log" in analyst
    assert not any(name.split(".")[0] in ("bronze", "silver", "quarantine") for name in analyst)
    assert "silver.events" in engineer and analyst < engineer
    assert client.get("/api/v1/tables").status_code == 401


def test_table_detail(client, served):
    response = client.get("/api/v1/tables/gold.daily_funnel", headers=served.headers("analyst"))
    assert response.status_code == 200
    body = response.json()
    assert body["grain"] == ["event_date"]
    assert body["lineage"]["upstream"] == ["silver.events"]
    assert {"name": "count_views", "type": "BIGINT", "description": ""} in body["columns"]
    history = served.lake.store.history("gold.daily_funnel")
    assert [v["version"] for v in body["versions"]] == [c.version for c in history]
    assert client.get("/api/v1/tables/silver.events", headers=served.headers("analyst")).status_code == 403
    assert client.get("/api/v1/tables/gold.nope", headers=served.headers("analyst")).status_code == 404


def test_openapi_docs(client):
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/sql", "/api/v1/tables", "/api/v1/tables/{name}"} <= set(paths)


def test_a_query_answered_again_from_a_workers_cache_is_logged_each_time(client, served):
    sql = "SELECT event_date, count_views FROM gold.daily_funnel ORDER BY 1 LIMIT 4"
    responses = [post(client, served, sql) for _ in range(3)]
    assert all(r.status_code == 200 for r in responses) and responses[0].json()["rows"] == responses[2].json()["rows"]
    for response in responses:
        logged = _log_rows(served, client, response.headers["x-query-id"])
        assert [(e["status"], e["rows"], e["query"]) for e in logged] == [("ok", 4, sql)]
