"""Task workers forked from the warm server: each must be what its command line would have started (its
own arguments, environment, working folder, log file, session and exit code), and must not outlive the
server's runner."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from shoplake.jobs import workers

JOB = """version: 1
jobs:
  {name}:
    tasks:
      v: {{kind: verify}}
"""


def _shoplake(*args: str) -> list[str]:
    return [sys.executable, "-m", "shoplake", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLAKE_")}
    env.update(NO_COLOR="1", COLUMNS="200", **extra)
    return env


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "command"])
def test_a_worker_gets_its_own_folder_environment_and_log(tmp_path, monkeypatch, fork):
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    (here / "shoplake-jobs.yaml").write_text(JOB.format(name="from_the_folder"))
    (there / "jobs.yaml").write_text(JOB.format(name="from_the_environment"))
    monkeypatch.chdir(here)
    # The environment is the worker's own: a variable the runner's process does not have reaches it.
    assert "SHOPLAKE_JOBS_FILE" not in os.environ
    assert workers.server_ready(120)  # warmed up: from now on attempts are forked
    log_file = tmp_path / "list.log"
    log_file.write_text("left from an earlier attempt\n")
    worker = workers.start(_shoplake("jobs", "list"), env=_env(), log_file=log_file, fork=fork)
    assert isinstance(worker, workers.ForkedWorker) is fork
    assert worker.wait(60) == 0
    out = log_file.read_text()
    assert "from_the_folder" in out and "from_the_environment" not in out, out
    assert "left from an earlier attempt" not in out
    assert "\x1b[" not in out  # NO_COLOR of its environment, not the colours of the server's terminal

    worker = workers.start(_shoplake("jobs", "list"), env=_env(SHOPLAKE_JOBS_FILE=str(there / "jobs.yaml")),
                           log_file=log_file, fork=fork)
    assert worker.wait(60) == 0
    out = log_file.read_text()
    assert "from_the_environment" in out and "from_the_folder" not in out, out

    worker = workers.start(_shoplake("describe", "gold.no_such_table"), env=_env(), log_file=log_file, fork=fork)
    assert worker.wait(60) == 1
    assert log_file.read_text().startswith("error:")


def test_a_forked_worker_leads_its_own_group_and_shows_its_command(tmp_path):
    assert workers.server_ready(120)
    worker = workers.start(_shoplake("jobs", "task", "--task", "x", "--parent-pid", str(os.getpid()), "verify"),
                           env=_env(SHOPLAKE_LAKE=str(tmp_path / "lake")), log_file=tmp_path / "w.log")
    deadline = time.monotonic() + 30
    while worker.poll() is None and time.monotonic() < deadline:
        try:
            title = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode()
            group = os.getpgid(worker.pid)
        except (OSError, ProcessLookupError):
            break
        if title.startswith(f"{sys.executable} -m shoplake jobs task") and group == worker.pid:
            # Its parent is the fork server, whose PID replaced the runner's for --parent-pid.
            assert f"--parent-pid {os.getpid()} " not in title
            os.killpg(worker.pid, signal.SIGKILL)  # the group it leads
            assert worker.wait(10) == -signal.SIGKILL
            return
        time.sleep(0.01)
    pytest.fail(f"the worker never showed its command (exit {worker.poll()}): {(tmp_path / 'w.log').read_text()}")


def _start_method_after_reset(out) -> None:
    import multiprocessing

    workers.like_a_new_interpreter()
    out.send(multiprocessing.get_start_method())


def test_a_forked_worker_starts_processes_and_makes_locks_as_a_new_interpreter_would():
    """A fork server's children inherit its start method; a worker resets it to a new interpreter's, so the
    locks libraries make are not registered with the runner's resource tracker (which warned of leaks)."""
    import multiprocessing
    import subprocess

    fresh = subprocess.run([sys.executable, "-c", "import multiprocessing; print(multiprocessing.get_start_method())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    context = multiprocessing.get_context("forkserver")
    ours, theirs = context.Pipe()
    child = context.Process(target=_start_method_after_reset, args=(theirs,))
    child.start()
    child.join(120)
    assert child.exitcode == 0
    assert ours.recv() == fresh != "forkserver"


# Run in an interpreter of its own, as `shoplake run` is: a process has one fork server, started with the
# preloads of whoever forks first (a query-service test in the same pytest worker would start it without
# the jobs' preloads).
PACKAGE_MAP_PROBE = """
import multiprocessing, sys
from shoplake.jobs import workers

def built(conn):
    from mlflow.utils import requirements_utils
    from shoplake.ml import recommender
    conn.send((requirements_utils._MODULES_TO_PACKAGES is not None,
               all(len(kernel.signatures) > 0 for kernel in (recommender._add_rows_times, recommender._affinity_top))))

if __name__ == "__main__":
    context = workers._context() if sys.argv[1] == "server" else multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=built, args=(theirs,))
    child.start()
    child.join(120)
    assert child.exitcode == 0, child.exitcode
    print(ours.recv())
"""


@pytest.mark.parametrize(("start", "built"), [("server", "(True, True)"), ("new interpreter", "(False, False)")])
def test_a_forked_worker_inherits_mlflow_package_map_from_the_server(tmp_path, start, built):
    """The server builds what MLflow computes on a process's first model log or load, and loads the
    recommender's compiled kernel (`shoplake.jobs.preload`): a worker starts with both, where a new interpreter
    has neither."""
    import subprocess

    probe = tmp_path / "probe.py"
    probe.write_text(PACKAGE_MAP_PROBE)
    out = subprocess.run([sys.executable, str(probe), start.split()[0]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == built


BLAS_PROBE = """
import sys
import numpy  # loads OpenBLAS before the limit, as the fork server has
from threadpoolctl import threadpool_info
from shoplake.jobs import workers

if sys.argv[1] == "apply":
    workers.apply_thread_limits({"OPENBLAS_NUM_THREADS": "1"})
print(sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}))
"""


def test_a_forked_worker_takes_the_blas_threads_of_its_environment(tmp_path):
    """The server loaded OpenBLAS with a thread per core; a worker whose environment asks for one BLAS thread
    (the runner's default: `worker_env`) gets one, as a new interpreter with that environment would."""
    import subprocess

    probe = tmp_path / "probe.py"
    probe.write_text(BLAS_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(mode: str) -> str:
        out = subprocess.run([sys.executable, str(probe), mode], capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip()

    loaded = threads("loaded")
    if loaded == "[1]":
        pytest.skip("OpenBLAS starts with one thread on this machine: nothing to limit")
    assert threads("apply") == "[1]"


def test_workers_run_with_one_blas_thread_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    from shoplake.config import Settings
    from shoplake.jobs.runner import worker_env
    from shoplake.lake import Lake

    lake = Lake(Settings(lake=tmp_path / "lakehouse"))
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert worker_env(lake)["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert worker_env(lake)["OPENBLAS_NUM_THREADS"] == "4"
