"""Hard limits of the SQL API: a deadline its worker cannot ignore, row and byte caps, the body limit,
per-token concurrency and rate limits, the audit log that never stops silently, SIGTERM draining, and a
dashboard that answers within 1 s while 50 slow queries are in flight."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient

import shoplake.serve.querylog
from shoplake.layers.ops import QUERY_LOG
from shoplake.query import run_query
from shoplake.serve.app import create_app, make_server
from shoplake.serve.querylog import QueryLog, QueryLogEntry

from .conftest import LOCAL, TIMEOUT_SECONDS, free_port

SQL = "/api/v1/sql"
# Nested, and endless for any practical purpose: 10^12 rows compared against a subquery per row.
RUNAWAY = ("select count(*) from (select a.range as x from range(1000000000000) a "
           "where a.range in (select b.range * -1 - 1 from range(1000000000000) b)) nested")


def post(client, served, query: str, role: str | None = "analyst", **extra):
    headers = served.headers(role) if role else {}
    return client.post(SQL, json={"query": query, **extra}, headers=headers | extra.pop("headers", {}))


def logged(client, served, query_id: str) -> dict:
    client.app.state.query_log.flush()
    rows = run_query(served.lake, f"SELECT * FROM {QUERY_LOG.name} WHERE query_id = '{query_id}'").to_pylist()
    assert len(rows) == 1, rows
    return rows[0]


def test_a_runaway_nested_query_is_stopped_within_the_deadline_and_logged_as_timeout(client, served):
    started = time.monotonic()
    response = post(client, served, RUNAWAY)
    elapsed = time.monotonic() - started
    assert response.status_code == 408, response.text
    assert elapsed < TIMEOUT_SECONDS + 5, elapsed
    assert logged(client, served, response.headers["x-query-id"])["status"] == "timeout"
    # The killed worker is replaced: the next query runs.
    assert post(client, served, "SELECT 1 AS x").json()["rows"] == [[1]]


def test_parsing_a_200_kb_expression_is_inside_the_deadline(client, served):
    started = time.monotonic()
    response = post(client, served, "SELECT " + "1+" * 100_000 + "1 AS x")
    assert time.monotonic() - started < TIMEOUT_SECONDS + 5
    assert response.status_code in (400, 408), response.text  # refused or stopped, never a 500


@pytest.mark.parametrize("accept", ["application/json", "text/csv"])
def test_the_byte_cap_bounds_wide_rows(client, served, accept):
    cap = served.lake.settings.serve_byte_cap
    # 1000 rows of 100 KB: 100 MB, far beyond the cap, but only 2 rows beyond the row cap.
    response = post(client, served, "SELECT range AS i, repeat('x', 100000) AS s FROM range(1000)",
                    headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["x-truncated"] == "true" and response.headers["x-truncated-by"] == "bytes"
    rows = int(response.headers["x-row-count"])
    assert 0 < rows < 1000 and rows * 100_000 <= cap < (rows + 2) * 100_010
    assert len(response.content) <= cap + 1024


def test_a_body_over_the_limit_is_413_unread_and_logged(client, served):
    limit = served.lake.settings.serve_body_limit
    response = client.post(SQL, content=b'{"query": "' + b"x" * (limit + 10) + b'"}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    entry = logged(client, served, response.json()["query_id"])
    assert entry["status"] == "too_large" and len(entry["query"]) < 200

    def chunks():
        yield b'{"query": "'
        for _ in range(limit // 65536 + 2):
            yield b"y" * 65536
        yield b'"}'

    chunked = client.post(SQL, content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413


def test_a_malformed_body_is_422_and_logged(client, served):
    response = client.post(SQL, json={"sql": "SELECT 1"}, headers=served.headers("analyst"))
    assert response.status_code == 422 and "query" in response.json()["detail"]
    entry = logged(client, served, response.headers["x-query-id"])
    assert entry["status"] == "invalid" and entry["query"] == '{"sql":"SELECT 1"}'


def test_an_unauthenticated_query_is_logged_truncated(client, served):
    query = "SELECT 1 -- " + "z" * 500_000
    response = post(client, served, query, role=None)
    assert response.status_code == 401
    entry = logged(client, served, response.headers["x-query-id"])
    assert entry["status"] == "unauthorized"
    assert entry["query"].startswith("SELECT 1 -- zzz") and f"{len(query)} bytes in all" in entry["query"]
    assert len(entry["query"]) < 1100


@pytest.fixture
def strict_client(served):
    settings = replace(served.lake.settings, serve_token_rate=3, serve_token_concurrency=1, serve_query_timeout=4)
    with TestClient(create_app(settings, query_log_interval=0.2), base_url=LOCAL) as strict:
        yield strict


def test_a_token_over_its_rate_gets_429_with_retry_after(strict_client, served):
    statuses = [post(strict_client, served, "SELECT 1 AS x") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert int(statuses[-1].headers["retry-after"]) >= 1
    assert logged(strict_client, served, statuses[-1].headers["x-query-id"])["status"] == "rate_limited"


def test_a_token_over_its_concurrency_gets_429_and_others_are_served(strict_client, served):
    slow = threading.Thread(target=post, args=(strict_client, served, RUNAWAY))
    slow.start()
    time.sleep(1.0)
    second = post(strict_client, served, "SELECT 1 AS x")
    other_token = post(strict_client, served, "SELECT 1 AS x", role="engineer")
    slow.join()
    assert second.status_code == 429 and "already has 1" in second.json()["detail"]
    assert other_token.status_code == 200


def test_queries_are_refused_while_the_log_cannot_be_written_and_nothing_is_lost(client, served, monkeypatch):
    def broken(store, batch):
        raise OSError("No space left on device")

    monkeypatch.setattr(shoplake.serve.querylog, "_append", broken)
    first = post(client, served, "SELECT 1 AS x")
    assert first.status_code == 200
    client.app.state.query_log.flush()
    refused = post(client, served, "SELECT 1 AS x")
    assert refused.status_code == 503 and "query log cannot be written" in refused.json()["detail"]
    health = client.get("/api/v1/health")
    assert health.status_code == 503 and health.json()["query_log"] == "failing"
    assert "No space left on device" in client.get("/health").text
    monkeypatch.undo()
    client.app.state.query_log.flush()
    assert client.get("/api/v1/health").json()["query_log"] == "ok"
    ids = {first.headers["x-query-id"]: "ok", refused.headers["x-query-id"]: "unavailable"}
    rows = run_query(served.lake, f"SELECT query_id, status FROM {QUERY_LOG.name}").to_pylist()
    assert {r["query_id"]: r["status"] for r in rows if r["query_id"] in ids} == ids
    assert post(client, served, "SELECT 1 AS x").status_code == 200


def test_entries_that_cannot_be_written_at_shutdown_are_journaled_and_replayed(served, tmp_path, monkeypatch):
    journal = tmp_path / "query_log.journal.jsonl"
    entry = QueryLogEntry(query_id="journaled-" + str(time.time_ns()), token_name="t", role="analyst",
                          started_at=__import__("datetime").datetime.now(__import__("datetime").UTC), query="SELECT 1",
                          rows=1, truncated=False, duration_ms=1.0, status="ok")
    monkeypatch.setattr(shoplake.serve.querylog, "_append", lambda store, batch: (_ for _ in ()).throw(OSError("x")))
    failing = QueryLog(served.lake.store, journal=journal)
    failing.record(entry)
    failing.close()
    assert journal.is_file() and entry.query_id in journal.read_text()
    monkeypatch.undo()
    replaying = QueryLog(served.lake.store, journal=journal)
    replaying.start()
    replaying.close()
    assert not journal.exists()
    rows = run_query(served.lake, f"SELECT status FROM {QUERY_LOG.name} WHERE query_id = '{entry.query_id}'")
    assert rows.to_pylist() == [{"status": "ok"}]


def test_sigterm_stops_a_server_with_a_running_query_within_10_s_and_logs_it(served):
    port = free_port()
    command = [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(served.lake.settings.lake),
               "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={**__import__("os").environ, "SHOPLAKE_SERVE_QUERY_TIMEOUT": "120"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()[-2000:]
        time.sleep(0.2)
    answers: list[httpx.Response | Exception] = []
    marked = f"{RUNAWAY} -- sigterm {time.time_ns()}"

    def slow(role: str) -> None:
        try:
            answers.append(httpx.post(f"{url}{SQL}", json={"query": marked}, headers=served.headers(role),
                                      timeout=60))
        except httpx.HTTPError as exc:
            answers.append(exc)

    # Four queries on two workers: two running, two waiting for a worker when the signal comes.
    clients = [threading.Thread(target=slow, args=(role,)) for role in ("analyst", "engineer") * 2]
    for one in clients:
        one.start()
    time.sleep(2.0)
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    assert time.monotonic() - started < 10
    for one in clients:
        one.join(timeout=10)
    rows = run_query(served.lake, f"SELECT status FROM {QUERY_LOG.name} WHERE query = '{marked}'").to_pylist()
    assert [r["status"] for r in rows] == ["unavailable"] * 4, (rows, answers)


def test_the_dashboard_answers_within_1_s_while_50_slow_queries_are_in_flight(served):
    settings = replace(served.lake.settings, serve_query_timeout=60, serve_max_pending=64)
    app = create_app(settings)
    server = make_server(app, host="127.0.0.1", port=free_port())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    service = app.state.service
    assert app.state.warmed.wait(60)  # the server renders its first pages at start, in the background
    paths = ("/api/v1/health", "/health", "/", "/funnel")

    def medians() -> dict[str, float]:
        times: dict[str, list[float]] = {path: [] for path in paths}
        with httpx.Client(base_url=url, timeout=30) as browser:
            for _ in range(5):
                for path in paths:
                    started = time.perf_counter()
                    page = browser.get(path)
                    times[path].append(time.perf_counter() - started)
                    assert page.status_code == 200, (path, page.text[:300])
        return {path: sorted(values)[2] for path, values in times.items()}

    def slow() -> None:
        try:
            httpx.post(f"{url}{SQL}", json={"query": RUNAWAY}, headers=served.headers("engineer"), timeout=90)
        except httpx.HTTPError:
            pass  # the server stops under them at the end of the test

    idle = medians()
    clients = [threading.Thread(target=slow) for _ in range(50)]
    for one in clients:
        one.start()
    try:
        deadline = time.monotonic() + 10
        while service.health()["queries_in_flight"] < 50:
            assert time.monotonic() < deadline, service.health()
            time.sleep(0.05)
        # Within 1 s; on a machine other programs load (this one is shared), at least not much slower than
        # the same pages just before, when the server had nothing else to do. A page must be slow in two
        # measurements in a row to fail: another test starting beside this one (make test runs two at a time)
        # once slowed one measurement of one page.
        for _ in range(2):
            loaded = medians()
            # Still all in flight: the pages were measured while 50 queries waited or ran.
            assert service.health()["queries_in_flight"] == 50
            slow_pages = {p: (idle[p], loaded[p]) for p in paths
                          if loaded[p] >= 1.0 and loaded[p] >= 1.5 * idle[p]}
            if not slow_pages:
                break
        assert slow_pages == {}, {"idle": idle, "with 50 slow queries": loaded}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for one in clients:
            one.join(timeout=30)
