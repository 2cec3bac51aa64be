"""Snapshot reuse: a worker binds each table once per committed version, and still reads one version per query."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import replace

from shoplake.lake import Lake
from shoplake.query import run_query
from shoplake.serve.security import ROLE_LAYERS
from shoplake.serve.worker import AnswerCache, QueryAnswer, QueryJob, Sessions, execute

TABLE = "gold.daily_funnel"


def _job(sql: str) -> QueryJob:
    return QueryJob(sql, ROLE_LAYERS["analyst"], limit=100, row_cap=100, byte_cap=10**6)


def _copy(served, tmp_path) -> Lake:
    shutil.copytree(served.lake.settings.lake, tmp_path / "lake")
    return Lake(replace(served.lake.settings, lake=tmp_path / "lake"))


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


def test_a_worker_reuses_an_answer_until_a_table_it_read_has_a_new_version(served, tmp_path):
    lake = _copy(served, tmp_path)
    sessions = Sessions(lake)
    query = _job(f"SELECT count(*) FROM {TABLE}")
    first = execute(lake, query, sessions)
    assert execute(lake, query, sessions) is first  # the same bytes, not run again
    # Another limit, format or role is another answer; another client sending the same query shares it.
    for other in (replace(query, limit=5), replace(query, fmt="csv"), replace(query, layers=ROLE_LAYERS["engineer"])):
        assert execute(lake, other, sessions) is not first
    assert execute(lake, replace(query, user="someone"), sessions) is first
    # Over the PostgreSQL endpoint the key is the translated query, parameters bound: other values, other answers.
    by_date = replace(query, query=f"SELECT count(*) FROM {TABLE} WHERE event_date >= $1", dialect="postgres")
    since = [execute(lake, replace(by_date, params=((1082, day),)), sessions) for day in ("1900-01-01", "2999-01-01")]
    assert [json.loads(answer.body) for answer in since] == [json.loads(first.body), [[0]]]
    _append_one_row(lake)
    after = execute(lake, query, sessions)
    assert after is not first and int(after.body.strip(b"[]")) == int(first.body.strip(b"[]")) + 1
    # An answer that depends on chance or the clock is never reused.
    for sql in ("SELECT random() AS r", "SELECT now() AS t", "SELECT age(DATE '2020-01-01') AS a",
                "SELECT current_date AS d", f"SELECT count(*) FROM {TABLE} USING SAMPLE 50%"):
        assert execute(lake, _job(sql), sessions) is not execute(lake, _job(sql), sessions)
    sessions.close()


def test_the_answer_cache_stays_within_its_bytes():
    cache = AnswerCache(max_bytes=64 * 1024)
    def key(sql: str) -> tuple:
        return AnswerCache.key(_job(sql), sql, ())

    for n in range(100):
        cache.put(key(f"SELECT {n} AS n -- " + "x" * 1000), QueryAnswer("ok", body=b"[" + b"1," * 1000 + b"1]"))
        assert cache.size <= cache.max_bytes
    assert cache.get(key("SELECT 99 AS n -- " + "x" * 1000)) is not None  # the newest stay
    assert cache.get(key("SELECT 0 AS n -- " + "x" * 1000)) is None
    cache.put(key("SELECT 'big'"), QueryAnswer("ok", body=b"x" * 20_000))  # over a quarter: not kept
    assert cache.get(key("SELECT 'big'")) is None
    off = AnswerCache(max_bytes=0)  # serve_answer_cache = 0
    off.put(key("SELECT 1"), QueryAnswer("ok", body=b"[[1]]"))
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
