"""Run history: one `ops.job_runs` row per task attempt, and summaries of runs read back from it.

Each attempt is appended in its own commit as soon as it ends, so a run killed at any point keeps the
record of every attempt that finished; that record is what `--resume` reads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from shoplake import locks
from shoplake.engines.delta import DeltaStore
from shoplake.errors import ConfigError
from shoplake.layers.ops import JOB_RUNS

log = logging.getLogger(__name__)

FINAL_OK = ("succeeded",)


@dataclass(frozen=True)
class Attempt:
    """One row of `ops.job_runs`."""

    run_id: str
    job: str
    task: str
    attempt: int
    status: str  # succeeded | failed | retrying | skipped
    started_at: datetime | None
    ended_at: datetime | None
    rows_written: int = 0
    error: str | None = None
    trigger: str = "manual"
    detail: str | None = None
    cpu_seconds: float | None = None


def record_attempt(store: DeltaStore, attempt: Attempt) -> int:
    """Append one attempt in its own commit (under the table's writer lock, so a compaction of
    `ops.job_runs` never races it). Returns the table version written."""
    with locks.writing(store.lake, [JOB_RUNS.name]):
        return _append_attempt(store, attempt)


def _append_attempt(store: DeltaStore, attempt: Attempt) -> int:
    table = pa.Table.from_pylist([asdict(attempt)], schema=JOB_RUNS.arrow_schema)
    meta = {"write_key": f"job:{attempt.run_id}:{attempt.task}:{attempt.attempt}", "run_id": attempt.run_id}
    if store.exists(JOB_RUNS.name):
        existing = {f.name for f in store.open(JOB_RUNS.name).schema().fields}
        missing = [name for name in JOB_RUNS.arrow_schema.names if name not in existing]
        if missing:
            # A lake created before these columns were declared: rewrite it once with them (NULLs).
            old = store.open(JOB_RUNS.name).to_pyarrow_table()
            for name in missing:
                old = old.append_column(name, pa.nulls(old.num_rows, JOB_RUNS.arrow_schema.field(name).type))
            table = pa.concat_tables([old.select(JOB_RUNS.arrow_schema.names).cast(JOB_RUNS.arrow_schema), table])
            log.info("ops.job_runs: added columns %s", ", ".join(missing))
            return store.write(JOB_RUNS.name, table, mode="overwrite", meta=meta, description=JOB_RUNS.description)
    return store.write(JOB_RUNS.name, table, mode="append", meta=meta, description=JOB_RUNS.description)


def read_attempts(store: DeltaStore, *, job: str | None = None, run_id: str | None = None) -> list[Attempt]:
    """Attempts recorded in `ops.job_runs`, oldest first, optionally of one job or run."""
    if not store.exists(JOB_RUNS.name):
        return []
    table = store.open(JOB_RUNS.name).to_pyarrow_table()
    names = set(table.column_names)
    rows = []
    for row in table.to_pylist():
        if (job is not None and row["job"] != job) or (run_id is not None and row["run_id"] != run_id):
            continue
        values: dict[str, Any] = {k: row.get(k) if k in names else None for k in Attempt.__dataclass_fields__}
        rows.append(Attempt(**values))
    epoch = datetime.min.replace(tzinfo=UTC)
    rows.sort(key=lambda a: (a.ended_at or a.started_at or epoch, a.attempt))
    return rows


@dataclass(frozen=True)
class TaskHistory:
    """What a run did for one task so far: its last recorded attempt."""

    task: str
    status: str
    attempts: int  # highest attempt number recorded (0: skipped, never attempted)
    error: str | None
    rows_written: int


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    job: str
    status: str  # succeeded | failed
    trigger: str
    started_at: datetime | None
    ended_at: datetime | None
    tasks: dict[str, TaskHistory]

    @property
    def failed(self) -> list[str]:
        return [t.task for t in self.tasks.values() if t.status in ("failed", "retrying")]

    @property
    def skipped(self) -> list[str]:
        return [t.task for t in self.tasks.values() if t.status == "skipped"]


def task_histories(attempts: list[Attempt]) -> dict[str, TaskHistory]:
    """The latest state of each task from its recorded attempts."""
    by_task: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_task[a.task].append(a)
    out = {}
    for task, rows in by_task.items():
        real = [r for r in rows if r.attempt > 0]
        last = max(real, key=lambda r: r.attempt) if real else rows[-1]
        out[task] = TaskHistory(task, last.status, max((r.attempt for r in rows), default=0), last.error,
                                sum(r.rows_written or 0 for r in rows if r.status == "succeeded"))
    return out


def summarize_runs(attempts: list[Attempt]) -> list[RunSummary]:
    """One summary per run id, newest first."""
    by_run: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts:
        by_run[a.run_id].append(a)
    runs = []
    for run_id, rows in by_run.items():
        tasks = task_histories(rows)
        # A task skipped after an attempt lacked inputs (not a failure); one skipped with attempt 0 was
        # blocked by a failed upstream task.
        ok = all(t.status in FINAL_OK or (t.status == "skipped" and t.attempts > 0) for t in tasks.values())
        starts = [r.started_at for r in rows if r.started_at]
        ends = [r.ended_at for r in rows if r.ended_at]
        triggers = list(dict.fromkeys(r.trigger or "manual" for r in rows))
        runs.append(RunSummary(run_id, rows[0].job, "succeeded" if ok else "failed", "+".join(triggers),
                               min(starts) if starts else None, max(ends) if ends else None, tasks))
    runs.sort(key=lambda r: r.started_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return runs


def run_history(store: DeltaStore, run_id: str) -> tuple[str, dict[str, TaskHistory]]:
    """The job and per-task state of one recorded run (for `--resume`)."""
    attempts = read_attempts(store, run_id=run_id)
    if not attempts:
        raise ConfigError(f"no run {run_id!r} in ops.job_runs (a run appears there once its first task "
                          f"attempt ends); see `shoplake jobs runs`")
    jobs = {a.job for a in attempts}
    if len(jobs) != 1:
        raise ConfigError(f"run {run_id!r} holds tasks of several jobs ({', '.join(sorted(jobs))})")
    return jobs.pop(), task_histories(attempts)
