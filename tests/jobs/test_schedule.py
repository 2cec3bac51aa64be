"""Schedules and locks: cron runs, never two runs of one job at once, and locks the kernel releases when
their holder dies (a live holder blocks; a killed one leaves nothing behind to take over)."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shoplake import locks
from shoplake.errors import ConfigError, LockedError
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.runner import run_job
from shoplake.jobs.schedule import next_fire, run_schedule


@pytest.fixture
def hold():
    """`hold(lake, *names)`: another process that takes these locks and keeps them until it is killed."""
    started = []

    def start(lake: Path, *names: str) -> subprocess.Popen:
        code = ("import time; from pathlib import Path; from shoplake import locks\n"
                f"assert all(locks.try_acquire(Path({str(lake)!r}), n) for n in {list(names)!r})\n"
                "print('ready', flush=True); time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_live_holder_blocks_and_a_killed_one_leaves_the_lock_free(tmp_path, hold):
    holder = hold(tmp_path, "job-daily")
    with pytest.raises(LockedError, match=rf"job daily is already running \(pid {holder.pid} "):
        with locks.holding(tmp_path, "job-daily", what="job daily"):
            pass
    assert not locks.is_free(tmp_path, "job-daily")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The kernel released it with its holder: nothing stale to detect or take over.
    assert locks.is_free(tmp_path, "job-daily")
    with locks.holding(tmp_path, "job-daily", what="job daily"):
        assert not locks.is_free(tmp_path, "job-daily")
    assert locks.is_free(tmp_path, "job-daily")


def test_a_second_run_of_a_running_job_is_refused(workspace, jobs_env, hold):
    workspace.job("t", {"b": jobs_env.task("build", select="silver.products")})
    holder = hold(workspace.lake_path, "job-t")
    result = workspace.cli("run", "t")
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: job t is already running (pid {holder.pid} "), result.stderr
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
    assert locks.is_free(workspace.lake_path, "scheduler") and locks.is_free(workspace.lake_path, "job-tick")


def test_scheduler_skips_a_job_that_is_already_running(workspace, jobs_env, hold):
    workspace.job("tick", {"ingest": jobs_env.task("ingest", source="products", landing="products")},
                  schedule="* * * * * */1")
    hold(workspace.lake_path, "job-tick")
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


def test_a_killed_scheduler_leaves_no_lock_behind(workspace, jobs_env, hold):
    workspace.job("tick", {"ingest": jobs_env.task("ingest", source="products", landing="products")},
                  schedule="* * * * * */1")
    crashed = hold(workspace.lake_path, "scheduler", "job-tick")  # a scheduler in the middle of a run
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    lake = workspace.lake()
    runs = run_schedule(lake, load_jobs(lake.settings, lake.catalog), max_runs=1, isolation="inline")
    assert [r.status for r in runs] == ["succeeded"]


def test_scheduler_refuses_jobs_without_a_schedule(workspace):
    lake = workspace.lake()
    with pytest.raises(ConfigError, match=r"job\(s\) refresh have no schedule"):
        run_schedule(lake, load_jobs(lake.settings, lake.catalog), jobs=["refresh"], max_runs=1)


def test_run_job_releases_its_lock_after_a_failure(workspace, jobs_env):
    workspace.job("t", {"b": jobs_env.task("build", select="silver.products", fail_times=5, retries=0)})
    lake = workspace.lake()
    result = run_job(lake, load_jobs(lake.settings, lake.catalog).get("t"), isolation="inline")
    assert result.status == "failed"
    assert locks.is_free(workspace.lake_path, "job-t")
