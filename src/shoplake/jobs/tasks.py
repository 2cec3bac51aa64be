"""What one task attempt does: ingest, build, train, score, maintain or verify, on the Python API.

`execute` runs a task model of `shoplake.jobs.definitions` (as the job file declared it, its landing folder
resolved). It is called in a worker process (`shoplake jobs task ...`, started by the runner, or by a
Databricks `python_wheel_task`), or in the runner's own process when it runs tasks inline.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shoplake import faults
from shoplake.errors import InsufficientDataError, ModelNotFoundError, ShoplakeError, is_transient
from shoplake.jobs.definitions import (
    BuildTask,
    IngestTask,
    MaintainTask,
    MlScoreTask,
    MlTrainTask,
    TaskDef,
)
from shoplake.lake import Lake

log = logging.getLogger(__name__)


class InjectedFailure(ShoplakeError):
    """A failure asked for by a test (`shoplake.faults.TaskHooks.fail_times`). Transient, so it is retried."""


class TaskFailed(ShoplakeError):
    """A task ran but part of its work failed (a table not built, a file not ingested)."""


@dataclass
class TaskOutcome:
    """What one attempt did. `skipped`: its inputs do not exist yet (the detail says which); not a failure."""

    status: str  # succeeded | skipped | failed
    rows_written: int = 0
    detail: str = ""
    error: str | None = None
    retryable: bool = False  # only failures classified transient (`shoplake.errors.is_transient`) are retried
    tables: dict[str, str] = field(default_factory=dict)
    cpu_seconds: float | None = None  # processor time the attempt used (`cpu_seconds`)


def cpu_seconds() -> float:
    """Processor time this process has used so far (user + system, every thread), plus that of the child
    processes it has waited for. On a busy machine it is what a task costs; its seconds also count waiting
    for a core. A worker forked from the job server starts from zero (a fork resets the counters)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def execute(lake: Lake, task: TaskDef, *, run_id: str, attempt: int = 1,
            sleep: Callable[[float], None] = time.sleep) -> TaskOutcome:
    """Run one task attempt. Errors a user can act on become a failed outcome, never an exception."""
    hooks = faults.task_hooks(task.name)

    def pause(point: str) -> None:
        if hooks.pause_after == point:
            log.warning("pausing %.0fs after %s (a test's hook)", hooks.pause_seconds, point)
            sleep(hooks.pause_seconds)

    try:
        if attempt <= hooks.fail_times:
            raise InjectedFailure(f"injected failure: attempt {attempt} of a task with fail_times: "
                                  f"{hooks.fail_times} (a test's hook)")
        pause("start")
        if isinstance(task, IngestTask):
            return _ingest(lake, task, run_id, pause)
        if isinstance(task, BuildTask):
            return _build(lake, task, run_id, pause)
        if isinstance(task, MlTrainTask):
            return _train(lake, task, run_id)
        if isinstance(task, MlScoreTask):
            return _score(lake, task, run_id)
        if isinstance(task, MaintainTask):
            return _maintain(lake, task, run_id)
        return _verify(lake)
    except InsufficientDataError as exc:
        return TaskOutcome("skipped", detail=str(exc))
    except InjectedFailure as exc:
        return TaskOutcome("failed", error=str(exc), retryable=True)
    except ShoplakeError as exc:
        return TaskOutcome("failed", error=str(exc), retryable=is_transient(exc))
    except OSError as exc:  # I/O: a full disk, a vanished network share... may pass on the next attempt
        log.exception("%s task: I/O error", task.kind)
        return TaskOutcome("failed", error=f"{type(exc).__name__}: {exc}", retryable=True)


def _ingest(lake: Lake, call: IngestTask, run_id: str, pause: Callable[[str], None]) -> TaskOutcome:
    from shoplake.ingest import ingest_files
    from shoplake.landing import ingest_landing

    table = f"bronze.{call.source}"

    def on_file(_result) -> None:
        pause(table)

    if call.landing is not None:
        landed = ingest_landing(lake, str(call.source), call.landing, run_id=run_id, on_file=on_file,
                                encoding=call.encoding)
        detail = landed.describe()
        if not landed.scan.exists or not (landed.scan.new or landed.scan.known):
            raise InsufficientDataError(detail)
        if landed.failures:
            raise TaskFailed(f"{len(landed.failures)} file(s) could not be ingested ({detail}): "
                             f"{'; '.join(landed.failures)}")
        return TaskOutcome("succeeded", landed.rows_written, detail)
    results = ingest_files(lake, str(call.source), list(call.paths), run_id=run_id, on_file=on_file,
                           encoding=call.encoding)
    ingested = [r for r in results if r.status != "skipped"]
    rows = sum(r.rows_bronze + r.rows_quarantined for r in ingested)
    detail = (f"{len(ingested)} file(s) ingested ({sum(r.rows_bronze for r in ingested):,} rows to bronze), "
              f"{len(results) - len(ingested)} already ingested")
    return TaskOutcome("succeeded", rows, detail)


def _require_source_data(lake: Lake, what: str) -> None:
    """Raise `InsufficientDataError` while no source file has been ingested (an empty lake)."""
    bronze = [spec.name for spec in lake.catalog if spec.layer == "bronze"]
    if not any(lake.store.exists(name) and lake.store.row_count(name) for name in bronze):
        raise InsufficientDataError(f"{what}: no source data ingested yet (put files in the landing folders, "
                                    f"or run `shoplake ingest SOURCE PATH`)")


def _build(lake: Lake, call: BuildTask, run_id: str, pause: Callable[[str], None]) -> TaskOutcome:
    from shoplake.build import build_tables

    _require_source_data(lake, "nothing to build")
    def on_table(result) -> None:
        if result.status == "built":
            pause(result.table)

    results = build_tables(lake, call.select, run_id=run_id, on_table=on_table)
    built = [r for r in results if r.status == "built"]
    failed = [r for r in results if r.status == "failed"]
    skipped = [r for r in results if r.status == "skipped"]
    unchanged = len(results) - len(built) - len(failed) - len(skipped)
    detail = f"{len(built)} table(s) built, {unchanged} unchanged"
    if failed:
        detail += f", {len(failed)} failed, {len(skipped)} skipped"
    tables = {r.table: r.status for r in results}
    rows = sum(r.rows_written for r in built)
    if failed:
        # Retried only when every failure was transient (a lock timeout, I/O); a failed check fails again.
        return TaskOutcome("failed", rows, detail, "; ".join(r.message for r in failed),
                           retryable=all(r.transient for r in failed), tables=tables)
    return TaskOutcome("succeeded", rows, detail, tables=tables)


def _verify(lake: Lake) -> TaskOutcome:
    from shoplake.quality.verify import verify_lake

    _require_source_data(lake, "nothing to reconcile")
    result = verify_lake(lake)
    if result.ok:
        return TaskOutcome("succeeded", 0, result.verdict())
    detail = "; ".join(f"{f.subject}: {f.what}: expected {f.expected}, found {f.found}" for f in result.failures[:5])
    # The lake does not change between attempts: a disagreement is reported, not retried.
    return TaskOutcome("failed", 0, result.verdict(), f"{result.verdict()}: {detail}", retryable=False)


def _rows_of(result) -> int:
    for name in ("rows_written", "rows_scored", "rows"):
        value = getattr(result, name, None)
        if isinstance(value, int):
            return value
    return 0


def _train(lake: Lake, call: MlTrainTask, run_id: str) -> TaskOutcome:
    # A scheduled run keeps the champion when its inputs and parameters did not change, so running a
    # job again with no new data writes nothing.
    from shoplake.ml import train_model

    result = train_model(lake, call.model, run_id=run_id, skip_unchanged=True)
    version = getattr(result, "model_version", None) or getattr(result, "version", None)
    if (getattr(result, "details", None) or {}).get("skipped"):
        detail = f"{call.model} unchanged (champion v{version} kept)"
    else:
        detail = f"trained {call.model}" + (f" (model version {version})" if version is not None else "")
    warnings = getattr(result, "warnings", None) or []
    if warnings:
        detail += "; warning: " + "; ".join(warnings)
    return TaskOutcome("succeeded", _rows_of(result), detail)


def _score(lake: Lake, call: MlScoreTask, run_id: str) -> TaskOutcome:
    """Score each kind (of `models`, default all) that has a champion; a kind without one (its training was
    skipped for want of data) is reported, and a task that scores none is skipped for want of inputs (a
    failed training skips it before: the runner never starts it)."""
    from shoplake.catalog.models import KINDS
    from shoplake.ml import score_models

    scored, missing, rows = [], [], 0
    for kind in call.models or KINDS:
        try:
            results = score_models(lake, run_id=run_id, kinds=[kind])
        except (ModelNotFoundError, InsufficientDataError) as exc:
            missing.append(f"{kind} ({exc})")
            continue
        scored.append(kind)
        rows += sum(_rows_of(r) for r in results)
    if not scored:
        raise InsufficientDataError("no model to score: " + "; ".join(missing))
    detail = f"{len(scored)} model(s) scored ({', '.join(scored)}), {rows:,} rows"
    if missing:
        detail += "; not scored: " + "; ".join(missing)
    return TaskOutcome("succeeded", rows, detail)


def _maintain(lake: Lake, call: MaintainTask, run_id: str) -> TaskOutcome:
    from shoplake.maintenance import maintain

    _require_source_data(lake, "nothing to maintain")
    report = maintain(lake, call.select, run_id=run_id)
    return TaskOutcome("succeeded", 0, report.describe())
