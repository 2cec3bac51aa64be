"""SIGKILL of `shoplake run` in the middle of a build, at several points, then a second run: every gold
table equals the one a clean, uninterrupted run produces, nothing is counted twice, and no worker of
the killed run is left behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from shoplake import locks
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.runner import run_job

pytestmark = pytest.mark.slow  # real worker processes killed mid-build

DEADLINE = 60.0


def _write_job(ws, jobs_env, **hooks) -> None:
    upstream = list(jobs_env.ingest_tasks())
    ws.job("t", {**jobs_env.ingest_tasks(retries=0),
                 "build": jobs_env.task("build", depends_on=upstream, retries=0, **hooks)}, max_parallel=3)


def _held_locks(lake) -> list[str]:
    """The lake's locks someone still holds, each with its last holder."""
    return [f"{path.stem}: {locks.holder(lake, path.stem)}" for path in (lake / locks.LOCK_FOLDER).glob("*.lock")
            if not locks.is_free(lake, path.stem)]


def _snapshot(ws) -> dict:
    store = ws.store()
    return {
        "gold": ws.gold(),
        "rows": {name: store.row_count(name) for name in (
            "bronze.products", "bronze.clickstream", "bronze.retail", "silver.products", "silver.events",
            "silver.sales", "silver.returns", "quarantine.clickstream", "quarantine.retail")},
        "unbalanced": [r for r in store.open("ops.ledger").to_pyarrow_table().to_pylist() if not r["is_balanced"]],
    }


@pytest.fixture(scope="module")
def clean(make_workspace, jobs_env):
    """The reference: one uninterrupted run of the same job on the same files."""
    ws = make_workspace("clean")
    ws.land_all()
    _write_job(ws, jobs_env)
    assert _run_inline(ws).ok
    snapshot = _snapshot(ws)
    assert all(snapshot["gold"][name] for name in jobs_env.GOLD), "every gold table has rows"
    return snapshot


def _run_inline(ws, **options):
    lake = ws.lake()
    return run_job(lake, load_jobs(lake.settings, lake.catalog).get("t"), isolation="inline", **options)


def _wait(condition, what: str, seconds: float = DEADLINE) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _workers(lake: Path) -> list[int]:
    """PIDs of task workers still running on this lake (what `ps` shows of them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # NUL-separated arguments, or one title with spaces (a worker forked from the warm server)
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if str(lake).encode() in argv and b"task" in argv and b"jobs" in argv:
            found.append(int(entry.name))
    return found


def _committed(ws, table: str):
    log = ws.lake_path.joinpath(*table.split(".")) / "_delta_log" / f"{0:020d}.json"
    return log.exists


def _ingests_done(ws):
    def done() -> bool:
        try:
            return sum(a.status == "succeeded" for a in ws.attempts()) == 3
        except Exception:  # the table is being created
            return False
    return done


# (kill point, hooks on the build task, what to wait for before the kill, how to run again)
KILL_POINTS = [
    ("after_ingest", {"pause_after": "start"}, "ingests", "cli resume"),
    ("mid_silver", {"pause_after": "silver.sales"}, "silver.sales", "cli run"),
    ("mid_gold", {"pause_after": "gold.daily_sales_by_country"}, "gold.daily_sales_by_country", "api resume"),
    # No pause: killed the moment silver.events commits, while the build goes on at full speed.
    ("unpaused", {}, "silver.events", "api run"),
]


@pytest.mark.parametrize(("point", "hooks", "wait_for", "again"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_sigkill_mid_build_then_rerun_equals_a_clean_run(make_workspace, jobs_env, clean, point, hooks, wait_for,
                                                         again):
    ws = make_workspace(point)
    ws.land_all()
    _write_job(ws, jobs_env, **hooks, pause_seconds=120)
    runner = ws.popen("run", "t")
    try:
        condition = _ingests_done(ws) if wait_for == "ingests" else _committed(ws, wait_for)
        _wait(condition, wait_for)
        if hooks:
            time.sleep(0.5)  # let the worker reach its pause
        os.kill(runner.pid, signal.SIGKILL)
        assert runner.wait(10) == -signal.SIGKILL
    finally:
        if runner.poll() is None:
            runner.kill()
    # The build attempt never ended, and its worker died with the runner.
    attempts = ws.attempts()
    assert [a.task for a in attempts if a.task == "build"] == []
    _wait(lambda: not _workers(ws.lake_path), "the killed run's worker to exit", seconds=10)
    killed_run = attempts[0].run_id
    assert locks.is_free(ws.lake_path, "job-t")  # the kernel released the killed runner's lock: nothing stale

    _write_job(ws, jobs_env)  # the pause was a testing aid; the job itself is unchanged
    resume = again.endswith("resume")
    if again.startswith("cli"):
        result = ws.cli(*(("run", "--resume", killed_run) if resume else ("run", "t")))
        assert result.returncode == 0, result.stdout + result.stderr
    else:  # the same runner through the Python API, tasks in this process (faster)
        result = _run_inline(ws, resume=killed_run if resume else None)
        assert result.ok
    assert _held_locks(ws.lake_path) == []

    after = _snapshot(ws)
    assert after["gold"] == clean["gold"]
    assert after["rows"] == clean["rows"]  # no file ingested twice, no silver row duplicated
    assert after["unbalanced"] == []
    if resume:
        tasks = [a.task for a in ws.attempts(killed_run)]
        assert tasks.count("ingest_products") == 1  # the upstream results were reused
        assert tasks.count("build") == 1


def test_sigterm_stops_the_running_attempts_and_records_them(workspace, jobs_env):
    workspace.job("t", {"build": jobs_env.task("build", select="silver.products", pause_after="start",
                                               pause_seconds=120)})
    runner = workspace.popen("run", "t")
    try:
        _wait(lambda: bool(_workers(workspace.lake_path)), "the worker to start")
        time.sleep(0.5)
        runner.terminate()  # SIGTERM, like `kill PID` or a service manager stopping the runner
        assert runner.wait(30) == 130
    finally:
        if runner.poll() is None:
            runner.kill()
    assert not _workers(workspace.lake_path)
    (attempt,) = workspace.attempts()
    assert (attempt.task, attempt.attempt, attempt.status, attempt.error) == ("build", 1, "failed", "interrupted")
    assert _held_locks(workspace.lake_path) == []
