"""The jobs commands: `shoplake run`, `shoplake schedule` and the `shoplake jobs` group.

A thin layer over `shoplake.jobs`: it loads job definitions, shows progress and turns results into exit
codes. `shoplake jobs task ...` runs one task attempt: the runner starts it as `python -m shoplake ...
jobs task ...` for each attempt, and a Databricks `python_wheel_task` calls it too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from shoplake.catalog.models import kinds_text
from shoplake.cli import app as cli
from shoplake.errors import ConfigError
from shoplake.sources.schemas import sources_text

_STYLE = {"succeeded": "green", "failed": "red", "skipped": "yellow", "waiting": "magenta", "retrying": "magenta",
          "running": "cyan", "reused": "dim", "pending": "dim"}


def _book(lake):
    from shoplake.jobs.definitions import load_jobs

    return load_jobs(lake.settings, lake.catalog)


def _styled(status: str) -> str:
    style = _STYLE.get(status)
    return f"[{style}]{status}[/]" if style else status


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _render(result) -> Table:
    """The live (and final) table of a run's tasks."""
    table = Table("task", "kind", "status", "attempt", "seconds", "cpu s", "rows", "detail",
                  title=f"{result.job} run {result.run_id} ({result.status})")
    now = time.monotonic()
    for state in result.tasks.values():
        seconds = state.seconds + (now - state.began if state.status == "running" else 0)
        status = "waiting" if state.status == "waiting" else state.status
        detail = state.error if state.status in ("failed", "waiting") and state.error else state.detail
        if state.status == "waiting":
            detail = f"retry in {max(0.0, state.ready_at - now):.0f}s after: {detail}"
        table.add_row(state.name, state.task.kind, _styled(status), str(state.attempt or ""),
                      f"{seconds:.1f}" if seconds else "",
                      f"{state.cpu_seconds:.1f}" if state.cpu_seconds is not None else "",
                      f"{state.rows_written:,}" if state.rows_written else "",
                      detail or "")
    return table


def _report(result) -> None:
    cli.console.print(_render(result))
    for line in result.summary_lines():
        cli.err_console.print(f"[red]{line}[/red]" if line.startswith("failed") else f"[yellow]{line}[/yellow]",
                               highlight=False, soft_wrap=True)
    cli.console.print(f"run {result.run_id}: {result.status} in {result.seconds:.1f}s"
                       + ("" if result.ok else f"; resume with `shoplake run --resume {result.run_id}`"),
                       highlight=False)


def _sigterm_as_interrupt() -> None:
    """`kill PID` stops a run like Ctrl-C does: running attempts are stopped and recorded."""
    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, handler)


def run(
    job: Annotated[str | None, typer.Argument(help="job name (default daily; with --resume, the run's job)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit; nothing runs")] = False,
    resume: Annotated[str | None, typer.Option(help="rerun the failed and not-yet-run tasks of this run id")] = None,
    watch: Annotated[bool, typer.Option(help="poll the landing folders and run on new files")] = False,
    poll_interval: Annotated[float, typer.Option(help="--watch: seconds between polls")] = 30.0,
    max_polls: Annotated[int | None, typer.Option(help="--watch: stop after N polls (default: never)")] = None,
    max_parallel: Annotated[int | None, typer.Option(help="at most N tasks at once (default: the job's)")] = None,
    landing: Annotated[str | None, typer.Option(help="landing root: a folder or s3:// prefix with one folder "
                                                     "per source (setting landing; default ./landing)")] = None,
    inline: Annotated[bool, typer.Option(help="run tasks in this process, one at a time, without timeouts "
                                              "(debugging)")] = False,
) -> None:
    """Run a job: its tasks in dependency order, with retries, timeouts and live progress."""
    from shoplake.jobs.history import run_history
    from shoplake.jobs.runner import plan, run_job, watch_job

    lake = cli.lake(landing=landing)
    book = _book(lake)
    if resume and job is None:
        job, _ = run_history(lake.store, resume)
    definition = book.get(job or "daily")
    if max_parallel is not None and max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1")
    if resume and watch:
        raise ConfigError("--resume and --watch do not go together")
    isolation = "inline" if inline else "process"
    if dry_run:
        _print_plan(lake, definition, plan(lake, definition, resume=resume), resume)
        return
    _sigterm_as_interrupt()
    if watch:
        _watch(lake, definition, watch_job, poll_interval, max_polls, max_parallel, isolation)
        return
    seen: list = []

    def show(result) -> None:
        seen[:] = [result]
        live.update(_render(result))

    with Live(console=cli.console, refresh_per_second=4, transient=True) as live:
        try:
            result = run_job(lake, definition, resume=resume, max_parallel=max_parallel, isolation=isolation,
                             on_update=show)
        except KeyboardInterrupt:
            live.stop()
            run_id = seen[0].run_id if seen else "RUN_ID"
            cli.err_console.print(f"interrupted: running tasks were stopped and recorded as failed; resume with "
                                   f"`shoplake run --resume {run_id}`", highlight=False)
            raise SystemExit(130) from None
    _report(result)
    if not result.ok:
        raise SystemExit(1)


def _print_plan(lake, definition, planned, resume) -> None:
    from shoplake.jobs.definitions import BuildTask, IngestTask, MaintainTask, MlScoreTask, MlTrainTask
    from shoplake.jobs.runner import landing_root
    from shoplake.landing import scan

    title = f"plan of job {definition.name}" + (f" (resuming run {resume})" if resume else "")
    table = Table("step", "task", "kind", "after", "action", "attempt", "retries", "timeout", "input",
                  title=title)
    root = landing_root(lake)
    for p in planned:
        task = p.task
        if isinstance(task, IngestTask) and task.landing and p.action == "run":
            what = scan(lake, task.source, str(task.landing_location(root))).describe()
        elif isinstance(task, IngestTask):
            what = ", ".join(task.paths) or str(task.landing)
        elif isinstance(task, BuildTask):
            what = f"{len(lake.catalog.select(task.select))} table(s): {task.select or 'all'}"
        elif isinstance(task, MaintainTask):
            what = task.select or "every table"
        elif isinstance(task, MlTrainTask):
            what = task.model
        elif isinstance(task, MlScoreTask):
            what = ", ".join(task.models) or "all models"
        else:
            what = "the whole lake"
        table.add_row(str(p.step + 1), task.name, task.kind, ", ".join(task.depends_on),
                      _styled("reused" if p.action == "reuse" else p.action),
                      str(p.first_attempt) if p.action == "run" else "", str(task.retries), f"{task.timeout:g}s",
                      what)
    cli.console.print(table)
    for p in planned:
        if p.action == "run":
            cli.console.print(f"  {p.task.name}: shoplake jobs task {' '.join(p.args)}", highlight=False,
                               soft_wrap=True)
    cli.console.print(f"{sum(p.action == 'run' for p in planned)} task(s) to run, at most "
                       f"{definition.max_parallel} at once; job defined in {definition.origin}; nothing ran "
                       f"(--dry-run)", highlight=False)


def _watch(lake, definition, watch_job, poll_interval, max_polls, max_parallel, isolation) -> None:
    failed = []

    def on_poll(poll) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        if poll.ran is not None:
            _report(poll.ran)
            if not poll.ran.ok:
                failed.append(poll.ran.run_id)
        note = f"; {poll.note}" if poll.note else ""
        cli.console.print(f"{stamp} poll {poll.number}: {poll.new_files} new file(s)"
                           + (f", run {poll.ran.run_id} {poll.ran.status}" if poll.ran else "") + note,
                           highlight=False)

    cli.console.print(f"watching the landing folders of job {definition.name} every {poll_interval:g}s"
                       + (f" ({max_polls} polls)" if max_polls else " (Ctrl-C to stop)"))
    try:
        watch_job(lake, definition, poll_seconds=poll_interval, max_polls=max_polls, on_poll=on_poll,
                  max_parallel=max_parallel, isolation=isolation)
    except KeyboardInterrupt:
        cli.err_console.print("stopped watching")
        raise SystemExit(130) from None
    if failed:
        raise SystemExit(1)


_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return datetime.now(UTC) + timedelta(**{unit: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--until {value!r}: expected an ISO time such as 2026-11-22T06:00:00 (UTC "
                                 f"unless it says otherwise) or a delay such as +90s, +30m, +2h") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def schedule(
    jobs: Annotated[list[str] | None, typer.Argument(help="jobs to schedule (default: every job with a "
                                                          "schedule)")] = None,
    max_runs: Annotated[int | None, typer.Option(help="stop after N runs")] = None,
    until: Annotated[str | None, typer.Option(help="stop at this time (ISO, UTC by default) or after a delay "
                                                   "such as +30m")] = None,
    max_parallel: Annotated[int | None, typer.Option(help="at most N tasks at once within a run")] = None,
    landing: Annotated[str | None, typer.Option(help="landing root (setting landing; default ./landing)")] = None,
    log_file: Annotated[Path | None, typer.Option(help="append each event here (default "
                                                       "<lake>/_jobs/schedule.log)")] = None,
) -> None:
    """Run jobs on their cron schedules (never two runs of one job at once), logging each run."""
    from shoplake.jobs.schedule import run_schedule

    lake = cli.lake(landing=landing)
    book = _book(lake)
    stop = _parse_until(until)
    log_path = log_file or lake.store.lake / "_jobs" / "schedule.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def on_event(event) -> None:
        line = f"{event.at.strftime('%Y-%m-%dT%H:%M:%SZ')} {event.job} {event.kind}: {event.message}"
        style = {"finished": "green" if event.result is None or event.result.ok else "red", "skipped": "yellow",
                 "missed": "yellow", "error": "red"}.get(event.kind)
        cli.console.print(f"[{style}]{line}[/]" if style else line, highlight=False, soft_wrap=True)
        with open(log_path, "a") as handle:
            handle.write(line + "\n")

    _sigterm_as_interrupt()
    try:
        runs = run_schedule(lake, book, jobs=jobs or None, max_runs=max_runs, until=stop, on_event=on_event,
                            max_parallel=max_parallel)
    except KeyboardInterrupt:
        cli.err_console.print("scheduler stopped")
        raise SystemExit(130) from None
    if any(not r.ok for r in runs):
        raise SystemExit(1)


def list_jobs() -> None:
    """Show the job definitions: tasks, schedule, next run and where each job is defined."""
    from shoplake.jobs.schedule import next_fire

    lake = cli.lake()
    book = _book(lake)
    table = Table("job", "tasks (in steps)", "schedule", "next run (UTC)", "defined in")
    for job in book:
        nxt = _when(next_fire(job, datetime.now(UTC))) if job.schedule else ""
        schedule_text = f"{job.schedule} ({job.timezone})" if job.schedule else "-"
        table.add_row(job.name, " → ".join(_task_line(job)), schedule_text, nxt, job.origin)
    cli.console.print(table)
    for job in book:
        cli.console.print(f"[bold]{job.name}[/bold]: {job.description or '(no description)'}", soft_wrap=True)


def _task_line(job) -> list[str]:
    by_step: dict[int, list[str]] = {}
    for name, step in job.levels().items():
        by_step.setdefault(step, []).append(name)
    return [", ".join(names) for _, names in sorted(by_step.items())]


def runs(
    job: Annotated[str | None, typer.Argument(help="only runs of this job")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="show every attempt of this run")] = None,
    limit: Annotated[int, typer.Option(help="newest N runs")] = 20,
) -> None:
    """Show run history from ops.job_runs: per run, or every attempt of one run."""
    from shoplake.jobs.history import read_attempts, summarize_runs

    lake = cli.lake()
    if run_id:
        attempts = read_attempts(lake.store, run_id=run_id)
        if not attempts:
            raise ConfigError(f"no run {run_id!r} in ops.job_runs")
        table = Table("task", "attempt", "status", "trigger", "started", "ended", "cpu s", "rows", "detail / error",
                      title=f"{attempts[0].job} run {run_id}")
        for a in attempts:
            table.add_row(a.task, str(a.attempt), _styled(a.status), a.trigger or "", _when(a.started_at),
                          _when(a.ended_at), f"{a.cpu_seconds:.1f}" if a.cpu_seconds is not None else "",
                          f"{a.rows_written or 0:,}", a.error or a.detail or "")
        cli.console.print(table)
        return
    summaries = summarize_runs(read_attempts(lake.store, job=job))[:limit]
    table = Table("run", "job", "status", "trigger", "started", "seconds", "tasks ok", "rows", "failed / skipped",
                  title="job runs" + (f" of {job}" if job else ""))
    for s in summaries:
        ok = sum(t.status == "succeeded" for t in s.tasks.values())
        seconds = (s.ended_at - s.started_at).total_seconds() if s.started_at and s.ended_at else 0
        problems = ", ".join([f"{t} (failed)" for t in s.failed] + [f"{t} (skipped)" for t in s.skipped])
        table.add_row(s.run_id, s.job, _styled(s.status), s.trigger, _when(s.started_at), f"{seconds:.1f}",
                      f"{ok}/{len(s.tasks)}", f"{sum(t.rows_written for t in s.tasks.values()):,}", problems)
    cli.console.print(table)
    if not summaries:
        cli.console.print("no runs recorded yet" + (f" for job {job}" if job else ""))


class ExportFormat(StrEnum):
    databricks = "databricks"


def export(
    job: Annotated[str, typer.Argument(help="job name")],
    format: Annotated[ExportFormat, typer.Option("--format", help="databricks (Jobs API 2.1)")] = (
        ExportFormat.databricks),
    out: Annotated[Path | None, typer.Option(help="write to this file (default: standard output)")] = None,
    lake_path: Annotated[str | None, typer.Option(help="the lake folder as the cluster sees it")] = None,
    landing_root: Annotated[str | None, typer.Option(help="the landing root as the cluster sees it (a volume "
                                                          "path or s3:// prefix)")] = None,
    wheel: Annotated[str | None, typer.Option(help="location of the uploaded shoplake wheel")] = None,
    existing_cluster_id: Annotated[str | None, typer.Option(help="run on this cluster instead of a "
                                                                 "single-node job cluster")] = None,
) -> None:
    """Export a job as Databricks Jobs API 2.1 JSON (each task a python_wheel_task calling shoplake)."""
    from shoplake.jobs import export as exporter

    lake = cli.lake()
    definition = _book(lake).get(job)
    body = exporter.databricks_job(definition, lake_path=lake_path or exporter.DEFAULT_LAKE,
                                   landing_root=landing_root or exporter.DEFAULT_LANDING, wheel=wheel,
                                   existing_cluster_id=existing_cluster_id)
    text = json.dumps(body, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        cli.console.print(f"wrote {out} ({len(body['tasks'])} tasks); create it with the Databricks CLI: "
                              f"databricks jobs create --json @{out}")


# -- `shoplake jobs task ...`: one task attempt (the runner's worker; a Databricks task) -------------
@dataclass
class _TaskOptions:
    job: str
    task: str | None
    run_id: str | None
    attempt: int | None
    result_file: Path | None
    record: bool
    parent_pid: int | None


def task_options(
    ctx: typer.Context,
    job: Annotated[str, typer.Option(help="job name (recorded with --record)")] = "adhoc",
    task: Annotated[str | None, typer.Option(help="task name (default: the kind)")] = None,
    run_id: Annotated[str | None, typer.Option(help="run id (default: a new one)")] = None,
    attempt: Annotated[int | None, typer.Option(help="attempt number (default: 1, or the next with --record)")
                       ] = None,
    result_file: Annotated[Path | None, typer.Option(help="write the outcome here as JSON")] = None,
    record: Annotated[bool, typer.Option(help="record the attempt in ops.job_runs (for runs outside "
                                              "`shoplake run`, e.g. on Databricks)")] = False,
    parent_pid: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Run one task attempt (what `shoplake run` starts for each task, and what a Databricks task runs)."""
    ctx.obj = _TaskOptions(job, task, run_id, attempt, result_file, record, parent_pid)


def _die_with_parent(pid: int) -> None:
    """End this worker when the runner that started it is gone, so no orphan keeps writing tables.

    On Linux the kernel SIGKILLs it when the parent dies (`PR_SET_PDEATHSIG`); a watcher thread covers
    other systems and a runner that died before the request was made.
    """
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # no prctl here: the watcher below covers it
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != pid:
                os._exit(137)
            time.sleep(0.5)

    if os.getppid() != pid:
        os._exit(137)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_task(ctx: typer.Context, kind: str, **options) -> None:
    """Build the task model from the command line (validated like a job file's task) and run one attempt."""
    from shoplake.jobs.definitions import task_from
    from shoplake.jobs.history import Attempt, read_attempts, record_attempt
    from shoplake.jobs.tasks import cpu_seconds, execute
    from shoplake.lake import new_run_id

    opts: _TaskOptions = ctx.obj
    if opts.parent_pid:
        _die_with_parent(opts.parent_pid)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a timeout) unwinds the stack, so spooled downloads and temp files are cleaned up.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    name = opts.task or kind
    call = task_from(kind, name=name, **options)
    lake = cli.lake()
    run_id = opts.run_id or new_run_id()
    attempt = opts.attempt
    if attempt is None:
        attempt = 1
        if opts.record:
            previous = [a.attempt for a in read_attempts(lake.store, run_id=run_id) if a.task == name]
            attempt = max(previous, default=0) + 1
    started = datetime.now(UTC)
    outcome = execute(lake, call, run_id=run_id, attempt=attempt)
    outcome.cpu_seconds = round(cpu_seconds(), 3)  # this process is the attempt (a new interpreter or a fork)
    if opts.result_file:
        temp = opts.result_file.with_suffix(".tmp")
        temp.write_text(json.dumps(asdict(outcome)))
        os.replace(temp, opts.result_file)
    if opts.record:
        lake.ensure_operational_tables()
        record_attempt(lake.store, Attempt(run_id, opts.job, name, attempt, outcome.status, started,
                                           datetime.now(UTC), outcome.rows_written, outcome.error, "external",
                                           outcome.detail, outcome.cpu_seconds))
    cli.console.print(f"{name} (run {run_id}, attempt {attempt}): {outcome.status}"
                       + (f": {outcome.detail}" if outcome.detail else ""), highlight=False, soft_wrap=True)
    if outcome.status == "failed":  # skipped (no inputs yet) is not a failure
        cli.err_console.print(f"[red]error:[/red] {outcome.error}", highlight=False, soft_wrap=True)
        raise SystemExit(1)


def task_ingest(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help=sources_text())],
    landing: Annotated[str | None, typer.Option(help="a landing folder or s3:// prefix: ingest its new files")
                       ] = None,
    path: Annotated[list[str] | None, typer.Option(help="a file, folder, glob or URL (repeatable)")] = None,
    encoding: Annotated[str, typer.Option(help="text encoding of CSV files: utf-8, latin-1 or cp1252")
                        ] = "utf-8",
) -> None:
    """Ingest the new files of a landing location, or the given paths."""
    _run_task(ctx, "ingest", source=source, landing=landing, paths=tuple(path or ()), encoding=encoding)


def task_build(
    ctx: typer.Context,
    selection: Annotated[str | None, typer.Argument(help="tables to build (`shoplake build` syntax)")] = None,
) -> None:
    """Build the selected Silver and Gold tables."""
    _run_task(ctx, "build", select=selection)


def task_ml_train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help=kinds_text())],
) -> None:
    """Train one model."""
    _run_task(ctx, "ml_train", model=model)


def task_ml_score(
    ctx: typer.Context,
    model: Annotated[list[str] | None, typer.Option(help="a model to score (repeatable; default all)")] = None,
) -> None:
    """Score the trained models."""
    _run_task(ctx, "ml_score", models=tuple(model or ()))


def task_verify(ctx: typer.Context) -> None:
    """Reconcile the lake across tables (`shoplake verify`)."""
    _run_task(ctx, "verify")


def task_maintain(
    ctx: typer.Context,
    selection: Annotated[str | None, typer.Argument(help="table or layer names; default every table")] = None,
) -> None:
    """Compact, vacuum and checkpoint tables (`shoplake maintain`)."""
    _run_task(ctx, "maintain", select=selection)


def _task_app() -> typer.Typer:
    task_app = typer.Typer(no_args_is_help=True, help="Run one task attempt (the runner's workers and Databricks "
                                                      "tasks run this).")
    task_app.callback()(task_options)
    task_app.command("ingest")(task_ingest)
    task_app.command("build")(task_build)
    task_app.command("ml-train")(task_ml_train)
    task_app.command("ml-score")(task_ml_score)
    task_app.command("maintain")(task_maintain)
    task_app.command("verify")(task_verify)
    return task_app


cli.app.command("run")(run)
cli.app.command("schedule")(schedule)
jobs_app = typer.Typer(no_args_is_help=True, help="Job definitions, run history and export.")
jobs_app.command("list")(list_jobs)
jobs_app.command("runs")(runs)
jobs_app.command("export")(export)
jobs_app.add_typer(_task_app(), name="task")
cli.app.add_typer(jobs_app, name="jobs")
