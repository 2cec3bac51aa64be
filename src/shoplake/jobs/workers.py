"""Worker processes of the job runner, forked from a warm server instead of started from nothing.

Every task attempt runs in a process of its own (a crash or an out-of-memory kill takes only the attempt
down, a timeout stops its whole process group) that does what `python -m shoplake ... jobs task ...`
would. A new interpreter first spends about 2.5 s of CPU importing MLflow, scikit-learn, pandas, Arrow
and the engines: 14 times in the `daily` job, a sixth of its CPU on a 2-core machine (bench/RESULTS.md).
So attempts are forked from multiprocessing's fork server, which has imported those libraries once
(`PRELOAD`); each fork then takes its own session, working folder, environment, arguments and log file,
exactly as the command line would have given them.

The server imports only libraries and shoplake's non-CLI modules: it must hold no open engine, file or
connection, and the CLI (its consoles decide colours and widths at import) is imported in each worker,
cheaply, as the command line would. Where the platform has no fork server, attempts start as commands.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing import forkserver
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

# What a task imports that takes time; imported once by the server (each is optional: a library that
# fails to import is left for the worker to import and report, as a new interpreter would).
PRELOAD = (
    "numpy", "pandas", "pyarrow", "duckdb", "deltalake", "sklearn.ensemble", "sklearn.linear_model",
    "sklearn.cluster", "sklearn.metrics", "matplotlib.figure", "mlflow", "mlflow.sklearn", "mlflow.pyfunc",
    "mlflow.models", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
    "skops.io", "implicit.cpu.als", "scipy.optimize", "arviz", "pymc", "pymc_marketing.clv", "pymc_extras.prior",
    "typer", "rich.console", "rich.table",
    "shoplake.jobs.tasks", "shoplake.build", "shoplake.ingest", "shoplake.landing", "shoplake.maintenance",
    "shoplake.quality.verify", "shoplake.ml.training", "shoplake.ml.scoring", "shoplake.jobs.preload",
)


class Worker(Protocol):
    """What the runner needs of a started attempt (a `subprocess.Popen` has it)."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class ForkedWorker:
    """An attempt forked from the fork server, with the part of `subprocess.Popen` the runner uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess, argv: Sequence[str]):
        self._process = process
        self._argv = list(argv)
        self.pid: int = process.pid or 0
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            code = self._process.exitcode
            if code is not None:
                self.returncode = code
                self._process.close()  # its pipe to the server
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._process.join(timeout)
            if self.poll() is None:
                raise subprocess.TimeoutExpired(self._argv, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


def _context() -> multiprocessing.context.ForkServerContext | None:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    context.set_forkserver_preload(list(PRELOAD))
    return context


_server_ready = threading.Event()
_warm_up: threading.Thread | None = None
_warm_up_lock = threading.Lock()


def warm_up() -> None:
    """Start the fork server and its imports in the background (once per process). Until they are done,
    `start` runs attempts as commands: the first tasks of a run (the ingests) do not wait for imports they
    mostly do not need, and the server warms up on the other core meanwhile."""
    global _warm_up
    with _warm_up_lock:
        if _warm_up is not None:
            return
        context = _context()
        if context is None:
            return

        def first_fork() -> None:
            try:
                # The first fork returns once the server has imported PRELOAD.
                probe = context.Process(target=_nothing, name="shoplake-worker warm-up")
                probe.start()
                probe.join()
                _server_ready.set()
            except Exception as exc:  # no server: attempts keep running as commands
                log.warning("job workers: the fork server did not start (%s); running tasks as commands", exc)

        _warm_up = threading.Thread(target=first_fork, name="fork-server-warm-up", daemon=True)
        _warm_up.start()


def server_ready(timeout: float | None = None) -> bool:
    """Warm the fork server up, and wait up to `timeout` seconds for it; whether attempts are now forked."""
    warm_up()
    return _server_ready.wait(timeout)


def _nothing() -> None:
    pass


def start(command: Sequence[str], *, env: Mapping[str, str], log_file: Path, fork: bool = True) -> Worker:
    """Start an attempt: `command` (`python -m shoplake ...`, from `runner.worker_command`) with `env`, its
    output (both streams) into `log_file`, in a new session; forked from the warm server when `fork`, the
    command is the shoplake CLI and the server is ready (see `warm_up`), else run as the command."""
    forked = fork and list(command[1:3]) == ["-m", "shoplake"] and server_ready(0)
    context = _context() if forked else None
    if context is None:
        with open(log_file, "wb") as out:
            return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=dict(env), start_new_session=True)
    process = context.Process(target=_run_forked, name=f"shoplake-worker {' '.join(command[3:])[:80]}",
                              args=(list(command), dict(env), os.getcwd(), str(log_file)))
    process.start()
    return ForkedWorker(process, command)


def _run_forked(command: list[str], env: dict[str, str], cwd: str, log_file: str) -> None:
    """In the forked worker: become what `command` (`python -m shoplake <args>`) would have started, then
    run the CLI (which leaves with the attempt's exit code, skipping interpreter teardown)."""
    import setproctitle

    # The worker dies with its parent (`--parent-pid`, PR_SET_PDEATHSIG): here the fork server, which ends
    # when the runner does, once no worker holds its "alive" pipe open (closed below), so the chain holds.
    args = command[3:]
    if "--parent-pid" in args:
        args[args.index("--parent-pid") + 1] = str(os.getppid())
    # What `ps` shows, and what tools looking for a lake's workers find: the command it stands for. Set
    # before the environment changes, which setproctitle needs untouched to find room for the title.
    setproctitle.setproctitle(" ".join([*command[:3], *args]))
    server = forkserver._forkserver  # the module's one server (its attributes are private)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)  # the runner's end of the pipe: held here, it would keep the server alive
        server._forkserver_alive_fd = None  # type: ignore[attr-defined]
    os.setsid()  # its own process group, so a timeout stops the worker and anything it started
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    for fd in (1, 2):
        os.dup2(out, fd)
    os.dup2(devnull, 0)
    os.close(out)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the process's own stdin, for its lifetime)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    apply_thread_limits(env)
    sys.argv = [str(Path(sys.executable).with_name("shoplake")), *args]
    like_a_new_interpreter()
    from shoplake.cli.app import run

    run()


def apply_thread_limits(env: Mapping[str, str]) -> None:
    """Give the worker the BLAS threads `env` asks for (`OPENBLAS_NUM_THREADS`), as a new interpreter would
    take them: the server loaded OpenBLAS before the variable was set, so it is applied here."""
    threads = env.get("OPENBLAS_NUM_THREADS", "")
    if not threads.isdigit() or int(threads) < 1:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(threads), user_api="blas")  # not a `with`: for the worker's lifetime


def like_a_new_interpreter() -> None:
    """Undo in a forked worker what the fork server's children inherit and a new interpreter lacks."""
    logging.getLogger().handlers.clear()  # the server's, if any: the CLI configures its own
    # A fork server's child has "forkserver" as its start method. With it, every multiprocessing lock a
    # library makes is a named semaphore registered with the runner's resource tracker, and the worker,
    # which leaves without interpreter teardown, never unregisters it: the runner then warned of "leaked
    # semaphore objects" at exit. The platform's default (as in a new interpreter) does not name them.
    multiprocessing.set_start_method(None, force=True)
