"""The scheduler: runs jobs at the times given by their cron `schedule`, one run at a time.

- Fire times come from `croniter` in the job's `timezone` (default UTC). A run that overruns the next
  fire time makes the scheduler skip the missed firings (no catch-up burst); they are reported.
- Runs go through `run_job`, which holds the job's lock: a job still running (started by hand, by
  `--watch` or by another scheduler) is not started twice; that firing is reported as skipped.
- One scheduler per lake: the scheduler holds a `scheduler` lock too. Both locks are crash-safe: a lock
  left by a dead process on this host is taken over (see `locks.py`).
- The job file is read once at start: restart the scheduler after editing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from shoplake import locks
from shoplake.errors import ConfigError, LockedError, ShoplakeError
from shoplake.jobs.definitions import JobBook, JobDef
from shoplake.jobs.runner import RunResult, run_job
from shoplake.lake import Lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduleEvent:
    at: datetime
    job: str
    kind: str  # scheduled | started | finished | skipped | missed | error | stopped
    message: str
    result: RunResult | None = None


def next_fire(job: JobDef, after: datetime) -> datetime:
    """The first fire time of the job's schedule strictly after `after` (timezone-aware, in UTC)."""
    if not job.schedule:
        raise ConfigError(f"job {job.name!r} has no schedule")
    base = after.astimezone(ZoneInfo(job.timezone))
    return croniter(job.schedule, base).get_next(datetime).astimezone(UTC)


def run_schedule(lake: Lake, book: JobBook, *, jobs: list[str] | None = None, max_runs: int | None = None,
                 until: datetime | None = None, on_event: Callable[[ScheduleEvent], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 sleep: Callable[[float], None] = time.sleep, **run_options) -> list[RunResult]:
    """Run scheduled jobs until `max_runs` runs have started or `until` is reached (default: forever).

    Args:
        jobs: only these jobs (each must have a schedule); default every job with a schedule.
        max_runs: stop after this many runs (skipped firings do not count).
        until: stop at this time (timezone-aware).
        on_event: called for every event (scheduled, started, finished, skipped, missed, error).
        **run_options: passed to `run_job` (e.g. `max_parallel`, `landing`).
    """
    if jobs:
        selected = [book.get(name) for name in jobs]
        unscheduled = [j.name for j in selected if not j.schedule]
        if unscheduled:
            raise ConfigError(f"job(s) {', '.join(unscheduled)} have no schedule; add `schedule: \"0 2 * * *\"`"
                              f" to the job in the job file")
    else:
        selected = [j for j in book if j.schedule]
        if not selected:
            raise ConfigError("no job has a schedule; add `schedule: \"0 2 * * *\"` to a job in the job file")

    def emit(job: str, kind: str, message: str, result: RunResult | None = None) -> None:
        event = ScheduleEvent(clock(), job, kind, message, result)
        log.info("%s %s: %s", job, kind, message)
        if on_event:
            on_event(event)

    runs: list[RunResult] = []
    with locks.holding(lake.store.lake, "scheduler", what="a scheduler for this lake"):
        pending = {j.name: next_fire(j, clock()) for j in selected}
        by_name = {j.name: j for j in selected}
        for name, fire in pending.items():
            emit(name, "scheduled", f"next run at {fire.isoformat(timespec='seconds')} ({by_name[name].schedule}"
                                    f" {by_name[name].timezone})")
        while True:
            name = min(pending, key=lambda n: pending[n])
            fire = pending[name]
            if until is not None and fire > until:
                _sleep_until(until, clock, sleep)
                emit("scheduler", "stopped", f"reached --until {until.isoformat(timespec='seconds')}")
                break
            _sleep_until(fire, clock, sleep)
            job = by_name[name]
            emit(name, "started", f"run for {fire.isoformat(timespec='seconds')}")
            try:
                result = run_job(lake, job, trigger="schedule", **run_options)
            except LockedError as exc:
                emit(name, "skipped", str(exc))
            except ShoplakeError as exc:
                emit(name, "error", str(exc))
            else:
                runs.append(result)
                failed = "; ".join(result.summary_lines())
                emit(name, "finished", f"run {result.run_id} {result.status} in {result.seconds:.1f}s"
                                       + (f": {failed}" if failed else ""), result)
            now = clock()
            following = next_fire(job, fire)
            missed = 0
            while following <= now and missed < 10_000:
                missed += 1
                following = next_fire(job, following)
            if missed:
                emit(name, "missed", f"{missed} firing(s) passed while the run was going; next at "
                                     f"{following.isoformat(timespec='seconds')}")
            pending[name] = following
            if max_runs is not None and len(runs) >= max_runs:
                emit("scheduler", "stopped", f"reached --max-runs {max_runs}")
                break
    return runs


def _sleep_until(moment: datetime, clock: Callable[[], datetime], sleep: Callable[[float], None]) -> None:
    while True:
        left = (moment - clock()).total_seconds()
        if left <= 0:
            return
        sleep(min(left, 1.0))
