"""Snapshot reuse: a worker binds each table once per committed version, and still reads one version per query;
the service reuses an answer until a table it read has a new version."""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import replace

from shoplake.lake import Lake
from shoplake.query import run_query
from shoplake.serve.answers import AnswerCache
from shoplake.serve.security import ROLE_LAYERS
from shoplake.serve.service import QueryService
from shoplake.serve.worker import QueryAnswer, QueryJob, Sessions, execute

TABLE = "gold.daily_funnel"


def _job(sql: str) -> QueryJob:
    return QueryJob(sql, ROLE_LAYERS["analyst"], limit=100, row_cap=100, byte_cap=10**6)


def _copy(served, tmp_path) -> Lake:
    """A copy of the served lake. Its queries get a generous time limit: these tests are about reuse, and on a
    loaded machine a worker's first query (process start, imports, first bind) can take longer than the
    2 s the served settings give."""
    shutil.copytree(served.lake.settings.lake, tmp_path / "lake")
    return Lake(replace(served.lake.settings, lake=tmp_path / "lake", serve_query_timeout=60))


def _append_one_row(lake: Lake) -> int:
    """Commit a new version of TABLE with one more row (a copy of its first)."""
    first = lake.store.open(TABLE).to_pyarrow_table().slice(0, 1)
    return lake.store.write(TABLE, first, mode="append", meta={"op": "test"})


def _count(lake: Lake, sessions: Sessions) -> int:
    answer = execute(lake, _job(f"SELECT count(*) FROM {TABLE}"), sessions)
    assert answer.status == "ok", answer.message
    return int(answer.body.strip(b"[]"))


def test_a_kept_session_binds_a_table_once_per_version_and_sees_the_next_commit(served, tmp_path):
    lake = _copy(served, tmp_path)
    sessions = Sessions(lake)
    spec = lake.catalog.get(TABLE)
    before = _count(lake, sessions)
    engine = sessions.get(ROLE_LAYERS["analyst"])
    version = lake.store.version(TABLE)
    assert engine.bind_latest(spec) == version  # already bound: the same version, nothing reopened

    new_version = _append_one_row(lake)
    assert new_version == version + 1
    assert _count(lake, sessions) == before + 1  # the very next query sees the commit
    assert engine.bind_latest(spec) == new_version
    # Time travel still reads the old version, and leaves the kept view on the latest one.
    answer = execute(lake, _job(f"SELECT count(*) FROM {TABLE} VERSION AS OF {version}"), sessions)
    assert int(answer.body.strip(b"[]")) == before
    assert _count(lake, sessions) == before + 1
    sessions.close()


def test_a_query_reads_one_version_of_each_table_while_versions_are_committed(served, tmp_path):
    lake = _copy(served, tmp_path)
    sessions = Sessions(lake)
    first_version = lake.store.version(TABLE)
    # The same table read twice in one query: both reads must see the same version.
    twice = f"SELECT (SELECT count(*) FROM {TABLE}) AS a, (SELECT sum(count_events) FROM {TABLE}) AS b"
    observed: list[tuple] = []
    done = threading.Event()

    def commit_versions() -> None:
        for _ in range(8):
            _append_one_row(lake)
        done.set()

    writer = threading.Thread(target=commit_versions)
    writer.start()
    while not done.is_set():
        answer = execute(lake, _job(twice), sessions)
        assert answer.status == "ok", answer.message
        observed.append(tuple(json.loads(answer.body)[0]))
    writer.join()
    answer = execute(lake, _job(twice), sessions)
    observed.append(tuple(json.loads(answer.body)[0]))
    sessions.close()

    at_versions = []
    for v in range(first_version, lake.store.version(TABLE) + 1):
        row = run_query(lake, twice.replace(TABLE, f"{TABLE} VERSION AS OF {v}")).to_pylist()[0]
        at_versions.append((row["a"], row["b"]))
    assert set(observed) <= set(at_versions)  # every answer is the table at one committed version
    assert observed[-1] == at_versions[-1]  # and the one after the writer stopped is the newest


def test_the_service_reuses_an_answer_until_a_table_it_read_has_a_new_version(served, tmp_path):
    lake = _copy(served, tmp_path)
    service = QueryService(lake.settings, query_log_interval=0.2)
    service.start()
    try:
        tokens = service.tokens.current()
        analyst, engineer = tokens["analyst-token"], tokens["engineer-token"]
        sql = f"SELECT count(*) FROM {TABLE}"
        first = service.run(analyst, sql)
        again = service.run(analyst, sql)
        assert first.status == again.status == "ok" and again.answer is first.answer  # not run again
        # Both are logged, as every query is.
        service.query_log.flush()
        logged = run_query(lake, f"SELECT query_id FROM ops.query_log WHERE query = '{sql}'").column(0).to_pylist()
        assert {first.query_id, again.query_id} <= set(logged)
        # Another limit, format or role is another answer.
        for other in (service.run(analyst, sql, limit=5), service.run(analyst, sql, fmt="csv"),
                      service.run(engineer, sql)):
            assert other.status == "ok" and other.answer is not first.answer
        # Over the PostgreSQL endpoint the parameters are part of the key.
        by_date = f"SELECT count(*) FROM {TABLE} WHERE event_date >= $1"
        since = [service.run(analyst, by_date, dialect="postgres", params=((1082, day),)).answer
                 for day in ("1900-01-01", "2999-01-01")]
        assert [json.loads(answer.body) for answer in since] == [json.loads(first.answer.body), [[0]]]
        # A commit to the table read: the next query runs and sees it.
        _append_one_row(lake)
        after = service.run(analyst, sql)
        assert after.answer is not first.answer
        assert json.loads(after.answer.body) == [[json.loads(first.answer.body)[0][0] + 1]]
        assert service.run(analyst, sql).answer is after.answer
        # An answer that depends on chance or the clock, or on the session (the emulated catalog), is not reused.
        for query, dialect in (("SELECT random() AS r", "duckdb"), ("SELECT now() AS t", "duckdb"),
                               ("SELECT age(DATE '2020-01-01') AS a", "duckdb"), ("SELECT current_date AS d", "duckdb"),
                               (f"SELECT count(*) FROM {TABLE} USING SAMPLE 50%", "duckdb"),
                               ("SELECT current_user", "postgres")):
            answers = [service.run(analyst, query, dialect=dialect, user=analyst.name).answer for _ in range(2)]
            assert answers[0] is not None and answers[0] is not answers[1], query
    finally:
        service.close()


def test_identical_queries_in_flight_share_one_worker_run(served, tmp_path):
    lake = _copy(served, tmp_path)
    service = QueryService(lake.settings, query_log_interval=0.2)
    service.start()
    runs, pool_run = [], service.pool.run

    def slow_run(job, deadline, cancel=None):
        runs.append(job.query)
        time.sleep(0.5)  # long enough for every client below to arrive while it runs
        return pool_run(job, deadline, cancel)

    service.pool.run = slow_run
    try:
        analyst = service.tokens.current()["analyst-token"]
        sql = f"SELECT event_date, count_views FROM {TABLE} ORDER BY 1"
        outcomes: list = []
        clients = [threading.Thread(target=lambda: outcomes.append(service.run(analyst, sql))) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert runs == [sql]
        assert [o.status for o in outcomes] == ["ok"] * 8 and len({id(o.answer) for o in outcomes}) == 1
        assert len({o.query_id for o in outcomes}) == 8  # eight queries, eight log entries
        # A query that may not be kept is run for each client.
        runs.clear()
        clients = [threading.Thread(target=service.run, args=(analyst, "SELECT random() AS r")) for _ in range(3)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert len(runs) == 3
    finally:
        service.close()


def test_the_answer_cache_stays_within_its_bytes(served):
    cache = AnswerCache(served.lake.store, max_bytes=64 * 1024)

    def answer(size: int) -> QueryAnswer:
        return QueryAnswer("ok", body=b"x" * size, reusable=True)

    for n in range(100):
        cache.put(_job(f"SELECT {n} AS n -- " + "x" * 1000), answer(2000))
        assert cache.size <= cache.max_bytes
    assert cache.get(_job("SELECT 99 AS n -- " + "x" * 1000)) is not None  # the newest stay
    assert cache.get(_job("SELECT 0 AS n -- " + "x" * 1000)) is None
    cache.put(_job("SELECT 'big'"), answer(20_000))  # over a quarter: not kept
    assert cache.get(_job("SELECT 'big'")) is None
    cache.put(_job("SELECT 'kept?'"), replace(answer(10), reusable=False))  # the worker said no
    assert cache.get(_job("SELECT 'kept?'")) is None
    off = AnswerCache(served.lake.store, max_bytes=0)  # serve_answer_cache = 0
    off.put(_job("SELECT 1"), answer(5))
    assert off.size == 0


def test_a_postgres_dialect_query_time_travels_and_a_string_that_says_so_does_not(served, tmp_path):
    lake = _copy(served, tmp_path)
    sessions = Sessions(lake)
    version = lake.store.version(TABLE)
    before = _count(lake, sessions)
    _append_one_row(lake)
    travelled = execute(lake, replace(_job(f"SELECT count(*) FROM {TABLE} VERSION AS OF {version}"),
                                      dialect="postgres"), sessions)
    assert travelled.status == "ok", travelled.message
    assert int(travelled.body.strip(b"[]")) == before
    # The words inside a literal are text: the query is translated from PostgreSQL and reads the latest version.
    text = execute(lake, replace(_job(f"SELECT count(*), 'VERSION AS OF {version}' AS note FROM {TABLE}"),
                                 dialect="postgres"), sessions)
    assert text.status == "ok", text.message
    assert json.loads(text.body) == [[before + 1, f"VERSION AS OF {version}"]]
    sessions.close()
