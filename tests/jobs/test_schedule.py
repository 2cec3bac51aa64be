"""Schedules and locks: cron runs, never two runs of one job at once, and a lock that survives a crash
(a stale lock from a dead process is taken over, a live one blocks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from shoplake.errors import ConfigError
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.locks import JobLock, LockedError, lock_dir, process_start
from shoplake.jobs.runner import run_job
from shoplake.jobs.schedule import next_fire, run_schedule


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this PID (until it is reused)


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _plant_lock(directory, name: str, pid: int, host: str | None = None, started: int | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.lock").write_text(json.dumps({
        "name": name, "host": host or socket.gethostname(), "pid": pid, "started": started, "token": "planted",
        "since": "2026-01-01T00:00:00+00:00", "detail": "planted by a test"}))


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = _dead_pid()
    _plant_lock(tmp_path, "job-daily", dead)
    lock = JobLock(tmp_path, "job-daily")
    info = lock.acquire()
    assert info.pid == os.getpid()
    assert lock.took_over is not None and lock.took_over.pid == dead
    assert json.loads((tmp_path / "job-daily.lock").read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "job-daily.lock").exists()


def test_live_lock_blocks(tmp_path, sleeper):
    _plant_lock(tmp_path, "job-daily", sleeper.pid, started=process_start(sleeper.pid))
    with pytest.raises(LockedError, match=rf"job-daily is already running \(pid {sleeper.pid} on "):
        JobLock(tmp_path, "job-daily").acquire()
    assert json.loads((tmp_path / "job-daily.lock").read_text())["pid"] == sleeper.pid  # untouched


def test_reused_pid_is_not_mistaken_for_the_owner(tmp_path, sleeper):
    # The PID is alive, but belongs to a process started after the lock's owner: the owner is gone.
    _plant_lock(tmp_path, "job-daily", sleeper.pid, started=(process_start(sleeper.pid) or 10) - 5)
    lock = JobLock(tmp_path, "job-daily")
    lock.acquire()
    assert lock.took_over.pid == sleeper.pid
    lock.release()


def test_lock_of_another_host_is_never_broken(tmp_path):
    _plant_lock(tmp_path, "job-daily", _dead_pid(), host="some-other-host")
    with pytest.raises(LockedError, match="on some-other-host"):
        JobLock(tmp_path, "job-daily").acquire()


def test_a_second_run_of_a_running_job_is_refused(workspace, jobs_env, sleeper):
    workspace.job("t", {"b": jobs_env.task("build", select="silver.products")})
    _plant_lock(lock_dir(workspace.lake_path), "job-t", sleeper.pid, started=process_start(sleeper.pid))
    result = workspace.cli("run", "t")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: job t is already running (pid {sleeper.pid} on")
    assert workspace.attempts() == []


def test_next_fire_follows_the_cron_expression_and_timezone(workspace, jobs_env):
    workspace.write_jobs({
        "utc": {"schedule": "30 2 * * *", "tasks": {"b": jobs_env.task("build")}},
        "paris": {"schedule": "0 9 * * MON-FRI", "timezone": "Europe/Paris", "tasks": {"b": jobs_env.task("build")}},
    })
    book = load_jobs(workspace.settings(), workspace.lake().catalog)
    saturday = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert next_fire(book.get("utc"), saturday) == datetime(2026, 11, 22, 2, 30, tzinfo=UTC)
    assert next_fire(book.get("paris"), saturday) == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 CET


def test_scheduler_runs_jobs_on_their_cron_and_logs_each_run(workspace, jobs_env):
    # Every second (six fields: seconds last); the landing folder is absent, so each run has nothing to do.
    workspace.job("tick", {"ingest": jobs_env.task("ingest", source="products", landing="products")},
                  schedule="* * * * * */1")
    result = workspace.cli("schedule", "--max-runs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    log = (workspace.lake_path / "_jobs" / "schedule.log").read_text()
    assert log.count("tick started: run for") == 2
    assert log.count("tick finished: run ") == 2 and log.count(" succeeded in ") == 2
    assert "stopped: reached --max-runs 2" in log
    runs = {a.run_id for a in workspace.attempts()}
    assert len(runs) == 2
    assert {a.trigger for a in workspace.attempts()} == {"schedule"}
    assert not list(lock_dir(workspace.lake_path).glob("*.lock"))  # both locks released


def test_scheduler_skips_a_job_that_is_already_running(workspace, jobs_env, sleeper):
    workspace.job("tick", {"ingest": jobs_env.task("ingest", source="products", landing="products")},
                  schedule="* * * * * */1")
    _plant_lock(lock_dir(workspace.lake_path), "job-tick", sleeper.pid, started=process_start(sleeper.pid))
    lake = workspace.lake()
    events = []
    runs = run_schedule(lake, load_jobs(lake.settings, lake.catalog), until=datetime.now(UTC) + timedelta(seconds=2.5),
                        on_event=events.append)
    assert runs == []
    kinds = [e.kind for e in events]
    assert kinds[0] == "scheduled" and kinds[-1] == "stopped"
    skipped = [e for e in events if e.kind == "skipped"]
    assert len(skipped) >= 2 and "job tick is already running" in skipped[0].message
    assert workspace.attempts() == []


def test_scheduler_takes_over_a_crashed_schedulers_lock(workspace, jobs_env):
    workspace.job("tick", {"ingest": jobs_env.task("ingest", source="products", landing="products")},
                  schedule="* * * * * */1")
    _plant_lock(lock_dir(workspace.lake_path), "scheduler", _dead_pid())
    _plant_lock(lock_dir(workspace.lake_path), "job-tick", _dead_pid())
    lake = workspace.lake()
    events = []
    runs = run_schedule(lake, load_jobs(lake.settings, lake.catalog), max_runs=1, on_event=events.append,
                        isolation="inline")
    assert [r.status for r in runs] == ["succeeded"]
    assert runs[0].took_over_lock is not None
    assert "took over the lock of a dead scheduler" in events[0].message


def test_scheduler_refuses_jobs_without_a_schedule(workspace):
    lake = workspace.lake()
    with pytest.raises(ConfigError, match=r"job\(s\) refresh have no schedule"):
        run_schedule(lake, load_jobs(lake.settings, lake.catalog), jobs=["refresh"], max_runs=1)


def test_run_job_releases_its_lock_after_a_failure(workspace, jobs_env):
    workspace.job("t", {"b": jobs_env.task("build", select="silver.products", fail_times=5, retries=0)})
    lake = workspace.lake()
    result = run_job(lake, load_jobs(lake.settings, lake.catalog).get("t"), isolation="inline")
    assert result.status == "failed"
    assert not (lock_dir(workspace.lake_path) / "job-t.lock").exists()
