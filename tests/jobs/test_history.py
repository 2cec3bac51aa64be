"""Run history in ops.job_runs: one row per attempt, summaries per run, and lakes made before the
`trigger`, `detail` and `cpu_seconds` columns existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa

from shoplake.engines.delta import DeltaStore
from shoplake.jobs.history import Attempt, read_attempts, record_attempt, summarize_runs
from shoplake.layers.ops import JOB_RUNS

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def _attempt(run: str, task: str, attempt: int, status: str, minute: int, **extra) -> Attempt:
    return Attempt(run, "daily", task, attempt, status, T0 + timedelta(minutes=minute),
                   T0 + timedelta(minutes=minute, seconds=30), **extra)


def test_runs_are_summarised_from_their_attempts(tmp_path):
    store = DeltaStore(tmp_path)
    for a in (_attempt("r1", "ingest", 1, "succeeded", 0, rows_written=10),
              _attempt("r1", "build", 1, "retrying", 1, error="boom"),
              _attempt("r1", "build", 2, "failed", 2, error="boom again"),
              _attempt("r1", "score", 0, "skipped", 2),
              _attempt("r2", "ingest", 1, "succeeded", 10),
              _attempt("r2", "build", 1, "succeeded", 11, rows_written=5)):
        record_attempt(store, a)
    assert store.version(JOB_RUNS.name) == 5  # one commit per attempt
    newest, oldest = summarize_runs(read_attempts(store))
    assert (newest.run_id, newest.status, oldest.run_id, oldest.status) == ("r2", "succeeded", "r1", "failed")
    assert oldest.failed == ["build"] and oldest.skipped == ["score"]
    assert oldest.tasks["build"].attempts == 2 and oldest.tasks["build"].error == "boom again"
    assert newest.tasks["build"].rows_written == 5


def test_a_lake_with_the_old_job_runs_columns_is_upgraded(tmp_path):
    store = DeltaStore(tmp_path)
    old_columns = [f for f in JOB_RUNS.arrow_schema if f.name not in ("trigger", "detail", "cpu_seconds")]
    old = pa.Table.from_pylist([{"run_id": "old", "job": "daily", "task": "build", "attempt": 1,
                                 "status": "succeeded", "started_at": T0, "ended_at": T0, "rows_written": 1,
                                 "error": None}], schema=pa.schema(old_columns))
    store.write(JOB_RUNS.name, old, mode="append", meta={"write_key": "old"})
    record_attempt(store, _attempt("new", "build", 1, "succeeded", 5, trigger="manual", detail="built",
                                   cpu_seconds=2.5))
    rows = {a.run_id: a for a in read_attempts(store)}
    assert rows["old"].trigger is None and rows["new"].detail == "built"
    assert rows["old"].cpu_seconds is None and rows["new"].cpu_seconds == 2.5
    assert {f.name for f in store.open(JOB_RUNS.name).schema().fields} == set(JOB_RUNS.arrow_schema.names)
