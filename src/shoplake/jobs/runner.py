"""The job runner: plans a job's DAG and runs its tasks with retries, timeouts and bounded parallelism.

How it works:

- **One process per task attempt.** Each attempt runs as `python -m shoplake ... jobs task ...` would (the
  same command a Databricks task runs), in its own process group, forked from a server that has already
  imported the heavy libraries (`workers.py`). The runner's main thread starts and polls
  these processes; nothing else runs in threads. A timeout is therefore enforceable: the attempt's process
  group gets SIGTERM, then SIGKILL after a grace period. The core is crash-safe (atomic Delta commits
  carrying idempotent write keys), so a killed attempt leaves nothing half-written for the retry.
- **Workers die with the runner.** A worker started with `--parent-pid` asks Linux to SIGKILL it when the
  runner dies (`PR_SET_PDEATHSIG`) and watches its parent PID as well (other systems, and the moment
  before the request). So a killed runner never leaves a worker writing tables behind the next run's
  back.
- **Bounded, safe parallelism.** At most `max_parallel` attempts run at once, and never two that write a
  common table (see `TaskDef.writes`): e.g. the three ingest tasks of `daily` run side by side, two
  builds of overlapping selections do not. Across processes (another job's run, a second scheduler)
  the same holds through one lock file per written table, taken all-or-none before an attempt starts;
  a task whose tables are held by another live run waits.
- **Run history.** Every attempt appends one row to `ops.job_runs` when it ends (succeeded, failed, or
  retrying when another attempt follows, or skipped when its inputs do not exist yet); a task skipped
  because an upstream task failed gets one row with attempt 0. A failed task skips its downstream tasks
  only; a task skipped for want of inputs does not (scoring still scores the models that have a champion).
- **Retries only for transient failures**, classified by exception type (`shoplake.errors.is_transient`:
  I/O, writer-lock timeouts, a lost Spark executor; a killed or timed-out worker). A failed check, a
  leakage refusal or a configuration error fails the same way again and is attempted once.
- **Resume.** `resume=RUN_ID` reruns the tasks of that run whose last attempt did not succeed, and the
  tasks with no attempt yet, under the same run id; attempt numbers continue; succeeded tasks are reused.
- **One run of a job at a time**, by a crash-safe lock file (see `locks.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from shoplake import locks
from shoplake.errors import ConfigError, LockedError, is_transient
from shoplake.jobs import workers
from shoplake.jobs.definitions import IngestTask, JobDef, TaskDef
from shoplake.jobs.history import Attempt, read_attempts, record_attempt, run_history
from shoplake.jobs.tasks import TaskOutcome, cpu_seconds, execute
from shoplake.lake import Lake, new_run_id

log = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 600.0
DONE = ("succeeded", "reused", "failed", "skipped")


def landing_root(lake: Lake, cwd: Path | None = None) -> str:
    """The landing root: the `landing` setting, else `landing/` in the working directory (absolute)."""
    root = lake.settings.landing or "landing"
    if "://" in root:
        return root
    return str(((cwd or Path.cwd()) / Path(root).expanduser()).resolve())


@dataclass
class TaskState:
    """A task within one run: what has happened to it so far."""

    task: TaskDef
    status: str = "pending"  # pending | waiting | running | succeeded | failed | skipped | reused
    attempt: int = 0  # the current (or last) attempt number
    attempts_run: int = 0  # attempts made by this invocation
    error: str | None = None
    detail: str = ""
    rows_written: int = 0
    seconds: float = 0.0
    cpu_seconds: float | None = None  # over the attempts of this invocation that reported it
    started_at: datetime | None = None
    ready_at: float = 0.0
    retryable: bool = False
    blocked: bool = False  # skipped because an upstream task failed (not for want of inputs)
    # Process bookkeeping of the running attempt.
    proc: workers.Worker | None = field(default=None, repr=False)
    began: float = 0.0
    deadline: float = 0.0
    terminated_at: float | None = None
    timed_out: bool = False
    result_file: Path | None = None
    log_file: Path | None = None

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def attempts_allowed(self) -> int:
        return self.task.retries + 1


@dataclass
class PlannedTask:
    task: TaskDef
    step: int
    action: str  # run | reuse
    first_attempt: int
    args: list[str]


@dataclass
class RunResult:
    """The outcome of one run (or one resumed run) of a job."""

    run_id: str
    job: str
    trigger: str
    tasks: dict[str, TaskState]
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if any(s.status == "failed" or s.blocked for s in self.tasks.values()):
            return "failed"
        if all(s.status in ("succeeded", "reused", "skipped") for s in self.tasks.values()):
            return "succeeded"  # a task skipped for want of inputs is not a failure
        return "running"

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def failed(self) -> list[TaskState]:
        return [s for s in self.tasks.values() if s.status == "failed"]

    def skipped(self) -> list[TaskState]:
        return [s for s in self.tasks.values() if s.status == "skipped"]

    def summary_lines(self) -> list[str]:
        """What failed and why, and what was skipped because of it."""
        lines = []
        for s in self.failed():
            lines.append(f"failed: {s.name} (attempt {s.attempt}{'' if s.retryable else ', not retryable'}): "
                         f"{s.error}")
        for s in self.skipped():
            lines.append(f"skipped: {s.name} ({s.detail})")
        return lines


def plan(lake: Lake, job: JobDef, *, resume: str | None = None, landing: str | None = None) -> list[PlannedTask]:
    """The tasks a run would execute, in order, with their step (DAG depth) and first attempt number."""
    landing = landing or landing_root(lake)
    histories: dict = {}
    if resume:
        recorded_job, histories = run_history(lake.store, resume)
        if recorded_job != job.name:
            raise ConfigError(f"run {resume} is a run of job {recorded_job!r}, not {job.name!r}")
    steps = job.levels()
    planned = []
    for task in job.ordered():
        history = histories.get(task.name)
        action = "reuse" if history is not None and history.status == "succeeded" else "run"
        planned.append(PlannedTask(task, steps[task.name], action, (history.attempts if history else 0) + 1,
                                   task.args(landing)))
    return planned


def run_job(lake: Lake, job: JobDef, *, resume: str | None = None, run_id: str | None = None,
            max_parallel: int | None = None, trigger: str | None = None, landing: str | None = None,
            isolation: str = "process", on_update: Callable[[RunResult], None] | None = None,
            poll_seconds: float = 0.1) -> RunResult:
    """Run a job (or resume one of its runs) and return what happened.

    Args:
        resume: a run id whose failed and not-yet-run tasks to run (same run id; succeeded tasks reused).
        run_id: the id of a new run (default: a fresh one).
        max_parallel: at most this many task attempts at once (default: the job's `max_parallel`).
        trigger: recorded in `ops.job_runs` (manual, resume, watch, schedule).
        landing: landing root (default: the `landing` setting, else `./landing`).
        isolation: `process` (one process per attempt; timeouts enforced) or `inline` (in this process,
            one task at a time, timeouts not enforced: for debugging and tests).
        on_update: called with the run's state whenever it changes (for progress displays).

    Raises:
        LockedError: another live process is running this job.
        ConfigError: the resumed run is unknown or belongs to another job.
    """
    if isolation not in ("process", "inline"):
        raise ConfigError(f"isolation must be 'process' or 'inline', got {isolation!r}")
    landing = landing or landing_root(lake)
    planned = plan(lake, job, resume=resume, landing=landing)
    run_id = resume or run_id or new_run_id()
    trigger = trigger or ("resume" if resume else "manual")
    # One run per job; the kernel releases the lock when this process ends, however it ends.
    with locks.holding(lake.store.lake, f"job-{job.name}", what=f"job {job.name}"):
        runner = _Runner(lake, job, run_id, trigger, landing, max_parallel or job.max_parallel, isolation,
                         on_update, poll_seconds)
        return runner.run(planned, resumed=bool(resume))


class _Runner:
    def __init__(self, lake: Lake, job: JobDef, run_id: str, trigger: str, landing: str, max_parallel: int,
                 isolation: str, on_update: Callable[[RunResult], None] | None, poll_seconds: float):
        self.lake = lake
        self.job = job
        self.run_id = run_id
        self.trigger = trigger
        self.landing = landing
        self.max_parallel = max(1, max_parallel if isolation == "process" else 1)
        self.isolation = isolation
        self.on_update = on_update
        self.poll_seconds = poll_seconds
        self.result = RunResult(run_id, job.name, trigger, {t.name: TaskState(t) for t in job.ordered()})
        self.workdir: Path | None = None
        self.writes = {t.name: t.writes(lake.catalog) for t in job.ordered()}
        self.skip_recorded: set[str] = set()
        self.table_locks: dict[str, list[str]] = {}

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, planned: list[PlannedTask], *, resumed: bool) -> RunResult:
        states = self.result.tasks
        for p in planned:
            state = states[p.task.name]
            state.attempt = p.first_attempt - 1
            if p.action == "reuse":
                state.status, state.detail = "reused", "succeeded earlier in this run"
            elif resumed and p.first_attempt == 1:
                state.detail = "not run yet"
        if resumed:
            self.skip_recorded = {a.task for a in read_attempts(self.lake.store, run_id=self.run_id)
                                  if a.attempt == 0}
        # The operational tables exist before parallel tasks append to them (no race to create them).
        self.lake.ensure_operational_tables()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"shoplake-run-{self.run_id}-"))
        try:
            self._loop()
        except KeyboardInterrupt:
            self.result.interrupted = True
            self._stop_all("interrupted")
            raise
        finally:
            self.result.seconds = time.monotonic() - self.result.started
            shutil.rmtree(self.workdir, ignore_errors=True)
            for state in list(self.result.tasks.values()):
                self._unlock_tables(state)
            self._update()
        return self.result

    def _loop(self) -> None:
        states = self.result.tasks
        while True:
            changed = self._skip_downstream_of_failures()
            for state in self._startable():
                self._start(state)
                changed = True
            running = [s for s in states.values() if s.status == "running"]
            for state in running:
                changed |= self._poll(state)
            if all(s.status in DONE for s in states.values()):
                break
            if changed:
                self._update()
                continue
            self._update()
            time.sleep(self.poll_seconds)

    def _update(self) -> None:
        if self.on_update:
            self.on_update(self.result)

    def _skip_downstream_of_failures(self) -> bool:
        changed = False
        for state in self.result.tasks.values():
            if state.status != "pending":
                continue
            # A task skipped for want of inputs does not block its downstream tasks (score what has a
            # champion); a failed one does, and so does a task blocked by one.
            bad = [d for d in state.task.depends_on
                   if self.result.tasks[d].status == "failed" or self.result.tasks[d].blocked]
            if bad:
                state.status, state.blocked = "skipped", True
                upstream = self.result.tasks[bad[0]]
                state.detail = (f"upstream task {bad[0]} failed" if upstream.status == "failed"
                                else f"upstream task {bad[0]} was skipped")
                if state.name not in self.skip_recorded:
                    now = datetime.now(UTC)
                    self._record(state, "skipped", attempt=0, started=now, ended=now)
                    self.skip_recorded.add(state.name)
                changed = True
        return changed

    def _startable(self) -> list[TaskState]:
        states = self.result.tasks
        running = [s for s in states.values() if s.status == "running"]
        busy = set().union(*(self.writes[s.name] for s in running)) if running else set()
        now = time.monotonic()
        picked: list[TaskState] = []
        for state in states.values():
            if len(running) + len(picked) >= self.max_parallel:
                break
            if state.status not in ("pending", "waiting") or (state.status == "waiting" and now < state.ready_at):
                continue
            if not all(states[d].status in ("succeeded", "reused", "skipped") and not states[d].blocked
                       for d in state.task.depends_on):
                continue
            if self.writes[state.name] & busy:
                continue
            if not self._lock_tables(state):
                continue
            busy |= self.writes[state.name]
            picked.append(state)
            if self.isolation == "inline":
                break
        return picked

    def _lock_tables(self, state: TaskState) -> bool:
        """Claim every table the task writes (`run-table-<table>` locks), all or none.

        Within a run the write sets already keep tasks apart; these locks do the same across processes
        (another job's run, another scheduler), so two incremental builds never consume the same
        batches at once. A task whose tables are held waits; its locks go when its attempt ends.
        """
        lake = self.lake.store.lake
        taken: list[str] = []
        for name in sorted(self.writes[state.name]):
            claim = f"run-table-{name}"
            if not locks.try_acquire(lake, claim):
                for held in taken:
                    locks.release(lake, held)
                if state.status == "pending" or state.error is None:
                    who = locks.holder(lake, claim) or "another process"
                    state.detail = f"waiting: table {name} is already running ({who})"
                return False
            taken.append(claim)
        self.table_locks[state.name] = taken
        return True

    def _unlock_tables(self, state: TaskState) -> None:
        for claim in self.table_locks.pop(state.name, []):
            locks.release(self.lake.store.lake, claim)

    # -- one attempt -------------------------------------------------------------------------------
    def _start(self, state: TaskState) -> None:
        state.attempt += 1
        state.attempts_run += 1
        state.status = "running"
        state.error = None
        state.started_at = datetime.now(UTC)
        state.began = time.monotonic()
        state.deadline = state.began + state.task.timeout
        state.terminated_at = None
        state.timed_out = False
        log.info("%s: attempt %d started", state.name, state.attempt)
        self._update()
        if self.isolation == "inline":
            self._finish(state, self._run_inline(state))
            return
        assert self.workdir is not None, "a run in worker processes has a work folder"
        if state.task.kind != "ingest":
            # The fork server imports in the background from the first task past the ingests (which gain
            # little from it: no MLflow, no scikit-learn), while that task runs as a command; the ingests,
            # which share the 2 cores three at a time, do not share them with it as well.
            workers.warm_up()
        state.result_file = self.workdir / f"{state.name}.{state.attempt}.json"
        state.log_file = self.workdir / f"{state.name}.{state.attempt}.log"
        command = worker_command(self.lake, self.job, state.task, run_id=self.run_id, attempt=state.attempt,
                                 landing=self.landing, result_file=state.result_file)
        # In a session of its own, so a timeout can stop the worker and anything it started.
        state.proc = workers.start(command, env=worker_env(self.lake), log_file=state.log_file)

    def _run_inline(self, state: TaskState) -> TaskOutcome:
        task = state.task
        before = cpu_seconds()  # inline attempts run one at a time: this process's time in between is theirs
        try:
            outcome = execute(self.lake, task.resolved(self.landing), run_id=self.run_id, attempt=state.attempt)
            outcome.cpu_seconds = round(cpu_seconds() - before, 3)
            return outcome
        except Exception as exc:  # an unexpected error in one task must not take the run down with it
            log.exception("%s: attempt %d crashed", state.name, state.attempt)
            return TaskOutcome("failed", error=f"{type(exc).__name__}: {exc}", retryable=is_transient(exc))

    def _poll(self, state: TaskState) -> bool:
        proc = state.proc
        assert proc is not None, "only a started attempt is polled"
        now = time.monotonic()
        code = proc.poll()
        if code is None:
            if now > state.deadline and state.terminated_at is None:
                log.info("%s: attempt %d timed out after %.0fs; stopping it", state.name, state.attempt,
                            state.task.timeout)
                state.timed_out = True
                _signal_group(proc, signal.SIGTERM)
                state.terminated_at = now
            elif state.terminated_at is not None and now > state.terminated_at + KILL_GRACE_SECONDS:
                _signal_group(proc, signal.SIGKILL)
            return False
        self._finish(state, self._outcome(state, code))
        return True

    def _outcome(self, state: TaskState, code: int) -> TaskOutcome:
        # A killed or vanished worker (timeout, OOM killer, a crash of the interpreter) is the machine's
        # doing more than the inputs': such an attempt is tried again.
        if state.timed_out:
            return TaskOutcome("failed", error=f"timed out after {state.task.timeout:g}s (the attempt was killed)",
                               retryable=True)
        try:
            if state.result_file is None:
                raise OSError("no result file")
            data = json.loads(state.result_file.read_text())
            return TaskOutcome(**data)
        except (OSError, ValueError, TypeError):
            pass
        tail = _last_line(state.log_file)
        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return TaskOutcome("failed", error=f"worker {how}" + (f": {tail}" if tail else ""), retryable=True)

    def _finish(self, state: TaskState, outcome: TaskOutcome) -> None:
        state.proc = None
        self._unlock_tables(state)
        ended = datetime.now(UTC)
        state.seconds += time.monotonic() - state.began
        if outcome.cpu_seconds is not None:
            state.cpu_seconds = (state.cpu_seconds or 0.0) + outcome.cpu_seconds
        state.rows_written += outcome.rows_written
        state.detail = outcome.detail
        state.retryable = outcome.retryable
        if outcome.status in ("succeeded", "skipped"):
            state.status = outcome.status
            self._record(state, outcome.status, rows=outcome.rows_written, detail=outcome.detail, ended=ended,
                         cpu=outcome.cpu_seconds)
            log.info("%s: attempt %d %s", state.name, state.attempt, outcome.status)
            return
        state.error = outcome.error or "failed"
        retry = outcome.retryable and state.attempts_run < state.attempts_allowed
        self._record(state, "retrying" if retry else "failed", rows=outcome.rows_written, detail=outcome.detail,
                     error=state.error, ended=ended, cpu=outcome.cpu_seconds)
        if retry:
            delay = min(state.task.retry_backoff * 2 ** (state.attempts_run - 1), MAX_BACKOFF_SECONDS)
            state.status, state.ready_at = "waiting", time.monotonic() + delay
            log.info("%s: attempt %d failed (%s); retrying in %.1fs", state.name, state.attempt, state.error,
                        delay)
        else:
            state.status = "failed"
            log.info("%s: attempt %d failed: %s", state.name, state.attempt, state.error)

    def _record(self, state: TaskState, status: str, *, attempt: int | None = None, rows: int = 0,
                detail: str | None = None, error: str | None = None, started: datetime | None = None,
                ended: datetime | None = None, cpu: float | None = None) -> None:
        record_attempt(self.lake.store, Attempt(
            run_id=self.run_id, job=self.job.name, task=state.name,
            attempt=state.attempt if attempt is None else attempt, status=status,
            started_at=started or state.started_at, ended_at=ended, rows_written=rows, error=error,
            trigger=self.trigger, detail=detail if detail is not None else state.detail, cpu_seconds=cpu))

    def _stop_all(self, reason: str) -> None:
        """Stop every running attempt (interrupt): SIGTERM, a grace period, then SIGKILL; record them."""
        running = [(s, s.proc) for s in self.result.tasks.values() if s.status == "running" and s.proc is not None]
        for _, proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        for state, proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            state.status, state.error = "failed", reason
            with contextlib.suppress(Exception):  # best effort while the user is interrupting
                self._record(state, "failed", error=reason, ended=datetime.now(UTC))


def worker_command(lake: Lake, job: JobDef, task: TaskDef, *, run_id: str, attempt: int, landing: str,
                   result_file: Path | None = None) -> list[str]:
    """The command line of one attempt: `python -m shoplake ... jobs task ... <task args>`."""
    command = [sys.executable, "-m", "shoplake", "--lake", str(Path(lake.settings.lake).resolve()),
               "--engine", lake.settings.engine, "jobs", "task", "--job", job.name, "--task", task.name,
               "--run-id", run_id, "--attempt", str(attempt), "--parent-pid", str(os.getpid())]
    if result_file is not None:
        command += ["--result-file", str(result_file)]
    return command + task.args(landing)


def worker_env(lake: Lake) -> dict[str, str]:
    """The environment of a worker: this one plus every setting, so the worker opens the same lake."""
    env = dict(os.environ)
    for f in fields(lake.settings):
        value = getattr(lake.settings, f.name)
        if value is not None:
            env[f"SHOPLAKE_{f.name.upper()}"] = str(Path(value).resolve()) if isinstance(value, Path) else str(value)
    # A worker's output goes to a log file: keep it plain.
    env.setdefault("NO_COLOR", "1")
    env["COLUMNS"] = "200"
    # One BLAS thread per worker (unless the environment says otherwise): a job's parallelism is its tasks
    # side by side, and OpenBLAS's second thread spins between calls, taking a core from the others. The
    # demo's user segments took 5.5-5.9 CPU-s with two threads against 2.8 with one, in less time
    # (bench/RESULTS.md). Forked workers apply it too (`workers.apply_thread_limits`).
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def _signal_group(proc: workers.Worker, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        # A forked worker that has not yet made its own group (the first instants of its life).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, sig)
    except PermissionError:
        pass


def _last_line(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""


# -- watch mode ------------------------------------------------------------------------------------
@dataclass
class Poll:
    number: int
    pending: Mapping[str, object]  # task name -> LandingScan
    new_files: int
    ran: RunResult | None = None
    note: str = ""


def watch_job(lake: Lake, job: JobDef, *, poll_seconds: float = 30.0, max_polls: int | None = None,
              landing: str | None = None, on_poll: Callable[[Poll], None] | None = None,
              sleep: Callable[[float], None] = time.sleep, **run_options) -> list[RunResult]:
    """Poll the job's landing locations and run the job when new files arrive.

    A run starts when a poll finds files not ingested yet. After a failed run the same pending files do
    not trigger again (that would fail the same way); a change in them does. Stops after `max_polls`.
    """
    from shoplake.landing import scan

    landing = landing or landing_root(lake)
    watched = [t for t in job.ordered() if isinstance(t, IngestTask) and t.landing]
    if not watched:
        raise ConfigError(f"job {job.name!r} has no ingest task with a landing location: nothing to watch")
    runs: list[RunResult] = []
    last_failed: frozenset | None = None
    number = 0
    while max_polls is None or number < max_polls:
        number += 1
        pending = {t.name: scan(lake, str(t.source), str(t.landing_location(landing))) for t in watched}
        new = frozenset((name, f.uri, f.size, f.mtime_ns) for name, s in pending.items() for f in s.new)
        poll = Poll(number, pending, len(new))
        if new and new != last_failed:
            try:
                poll.ran = run_job(lake, job, landing=landing, trigger="watch", **run_options)
                runs.append(poll.ran)
                last_failed = None if poll.ran.ok else new
            except LockedError as exc:
                poll.note = f"not started: {exc}"
        elif new:
            poll.note = "waiting for a change: the last run on these files failed"
        if on_poll:
            on_poll(poll)
        if max_polls is None or number < max_polls:
            sleep(poll_seconds)
    return runs
