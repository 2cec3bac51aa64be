"""Writer locks: one writer per table at a time, released by the kernel when the holder dies.

Every write unit (one file into `bronze.<source>` + its quarantine, one table build, one ledger append)
holds the locks of the tables it writes while it decides what to write and commits it. Two processes
that would both append the same batch therefore run one after the other, and the second sees the first
one's commit and writes nothing.

A lock is `fcntl.flock` on `<lake>/_locks/<table>.lock`: the kernel drops it when the process exits,
however it exits (`kill -9` included), so there is never a stale lock to break. Beside it,
`<table>.holder` names the last holder (PID, command, since), only to tell a waiting process whom it
waits for. Locks are re-entrant within a process (a build holding `silver.events` may call code that
takes it again) and serialise threads too. Several locks are always taken in sorted name order, so two
writers can never each hold what the other waits for.

The same locks, taken without waiting (`try_acquire`, `holding`), keep job runs apart: one run per job
(`job-<name>`), one scheduler per lake (`scheduler`), and a run's claim on the tables its running task
writes (`run-table-<table>`, held by the runner while its worker process takes the writer locks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shoplake.errors import LakeLockTimeout, LakeNotWritableError, LockedError

LOCK_FOLDER = "_locks"
# How long a writer waits for another by default: long enough for a build of the demo lake to finish.
DEFAULT_WAIT_SECONDS = 3600.0
_POLL_SECONDS = 0.05


@dataclass
class _Held:
    fd: int
    count: int
    thread_lock: threading.RLock


_registry_guard = threading.Lock()
_thread_locks: dict[Path, threading.RLock] = {}
_held: dict[Path, _Held] = {}
# Settings of this process: how long to wait and whom to tell (the CLI sets them from its flags).
_wait_seconds = DEFAULT_WAIT_SECONDS
_on_wait: Callable[[str], None] | None = None


def configure(*, wait_seconds: float | None = None, on_wait: Callable[[str], None] | None = None) -> None:
    """Set this process's wait timeout (None keeps the current one) and the waiting-message callback."""
    global _wait_seconds, _on_wait
    if wait_seconds is not None:
        _wait_seconds = wait_seconds
    _on_wait = on_wait


def lock_path(lake: Path, name: str) -> Path:
    return Path(lake) / LOCK_FOLDER / f"{name}.lock"


def _thread_lock(path: Path) -> threading.RLock:
    with _registry_guard:
        return _thread_locks.setdefault(path, threading.RLock())


def _open(lake: Path, path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise not_writable(lake, exc) from exc


def not_writable(lake: Path, exc: OSError) -> LakeNotWritableError:
    """The one-line error for a lake this process cannot write (read-only folder, file system, owner)."""
    reason = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
              errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device"}
    why = reason.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return LakeNotWritableError(f"cannot write to the lake {Path(lake).resolve()}: {why} "
                                f"({getattr(exc, 'filename', None) or lake}); the lake folder must be writable "
                                f"by this user (use --lake to choose another)")


def holder(lake: Path, name: str) -> str:
    """Who holds (or last held) the lock, as a short phrase; empty when unknown."""
    try:
        info = json.loads(lock_path(lake, name).with_suffix(".holder").read_text())
        return f"pid {info['pid']} ({info['command']}) since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _write_holder(path: Path) -> None:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    info = {"pid": os.getpid(), "command": command if len(command) <= 100 else command[:97] + "...",
            "since": datetime.now(UTC).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):  # only informative
        path.with_suffix(".holder").write_text(json.dumps(info))


def _acquire(lake: Path, name: str, deadline: float, waited: list[str]) -> None:
    path = lock_path(lake, name)
    thread_lock = _thread_lock(path)
    if not thread_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise _timeout(lake, name)
    with _registry_guard:
        held = _held.get(path)
    if held is not None:  # this process holds it already (the thread lock made it ours)
        held.count += 1
        return
    fd = _open(lake, path)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    waited.append(name)
                    who = holder(lake, name)
                    message = f"waiting for table {name}, being written by {who or 'another process'}"
                    if _on_wait:
                        _on_wait(message)
                if time.monotonic() >= deadline:
                    raise _timeout(lake, name) from None
                time.sleep(_POLL_SECONDS)
    except BaseException:
        os.close(fd)
        thread_lock.release()
        raise
    with _registry_guard:
        _held[path] = _Held(fd, 1, thread_lock)
    _write_holder(path)


def _release(lake: Path, name: str) -> None:
    path = lock_path(lake, name)
    with _registry_guard:
        held = _held[path]
        held.count -= 1
        if held.count == 0:
            del _held[path]
    if held.count == 0:
        fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)
    held.thread_lock.release()


def _timeout(lake: Path, name: str) -> LakeLockTimeout:
    who = holder(lake, name)
    return LakeLockTimeout(f"gave up waiting for table {name} after {_wait_seconds:g}s: it is being written by "
                           f"{who or 'another process'}; try again later or raise --wait-timeout")


@contextlib.contextmanager
def writing(lake: Path, tables: Iterable[str], *, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the writer locks of `tables` (taken in sorted order) for the duration of the block."""
    names = sorted(set(tables))
    deadline = time.monotonic() + (_wait_seconds if wait_seconds is None else wait_seconds)
    taken: list[str] = []
    waited: list[str] = []
    try:
        for name in names:
            _acquire(Path(lake), name, deadline, waited)
            taken.append(name)
        yield
    finally:
        for name in reversed(taken):
            _release(Path(lake), name)


def held_by_me(lake: Path, name: str) -> bool:
    with _registry_guard:
        return lock_path(lake, name) in _held


def try_acquire(lake: Path, name: str) -> bool:
    """Take the lock `name` if no other process or thread holds it; never waits. Re-entrant like `writing`."""
    path = lock_path(Path(lake), name)
    thread_lock = _thread_lock(path)
    if not thread_lock.acquire(blocking=False):
        return False
    with _registry_guard:
        held = _held.get(path)
        if held is not None:
            held.count += 1
            return True
    fd = _open(Path(lake), path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        thread_lock.release()
        return False
    with _registry_guard:
        _held[path] = _Held(fd, 1, thread_lock)
    _write_holder(path)
    return True


def release(lake: Path, name: str) -> None:
    """Release a lock taken with `try_acquire`."""
    _release(Path(lake), name)


@contextlib.contextmanager
def holding(lake: Path, name: str, *, what: str) -> Iterator[None]:
    """Hold the lock `name` for the block, or raise `LockedError` ("{what} is already running (holder)")
    at once when another process holds it."""
    if not try_acquire(lake, name):
        raise LockedError(f"{what} is already running ({holder(Path(lake), name) or 'another process'})")
    try:
        yield
    finally:
        release(lake, name)


def is_free(lake: Path, name: str) -> bool:
    """Whether nobody holds the lock `name` (this process included): probes it on a fresh descriptor."""
    path = lock_path(Path(lake), name)
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one
    return True
