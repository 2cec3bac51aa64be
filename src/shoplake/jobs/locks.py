"""Lock files that keep runs apart (one run per job, one scheduler per lake, one writer per table) and
survive a crash.

A lock is the file `<lake>/_jobs/locks/<name>.lock` holding the owner's host, PID, process start time
and a token. It is created atomically (written to a temporary file, then hard-linked into place, which
fails when the lock exists), so a reader never sees half a lock. A lock is stale when its owner is on
this host and that process is gone (exited, a zombie, or the PID now belongs to a process started
later, so a reused PID is not mistaken for the owner). A stale lock is taken over under a short `flock`
on the folder's `.guard` file, after checking again that it is still the same stale lock. A lock from
another host is never broken automatically: its holder cannot be checked from here (remove the file by
hand when that host is gone).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shoplake.errors import ShoplakeError


class LockedError(ShoplakeError):
    """Another live process holds the lock."""


@dataclass(frozen=True)
class LockInfo:
    name: str
    host: str
    pid: int
    started: int | None  # process start time (clock ticks since boot), when the OS tells it
    token: str
    since: str
    detail: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}" + (f" ({self.detail})" if self.detail else "")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3... of /proc/<pid>/stat (Linux), or None when unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing ')'.
    return stat[stat.rindex(")") + 2:].split()


def process_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), or None when unknown."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None


def is_alive(pid: int, started: int | None = None) -> bool:
    """Whether process `pid` runs on this host (and, when `started` is known, is the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False  # exited, not yet reaped by its parent
        if started is not None and int(fields[19]) != started:
            return False  # the PID was reused by a newer process
    return True


class JobLock:
    """An exclusive, crash-safe lock file. Use as a context manager or call acquire/release."""

    def __init__(self, directory: Path, name: str, *, label: str | None = None, detail: str = ""):
        self.path = Path(directory) / f"{name}.lock"
        self.name = name
        self.label = label or name
        self.detail = detail
        self.info: LockInfo | None = None
        self.took_over: LockInfo | None = None

    def read(self) -> LockInfo | None:
        """The current holder, or None when unlocked."""
        try:
            data = json.loads(self.path.read_text())
            return LockInfo(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            # Unreadable: treat as held by an unknown live process rather than break it.
            return LockInfo(self.name, "?", -1, None, "?", "?", "unreadable lock file")

    def stale(self, info: LockInfo) -> bool:
        return info.host == socket.gethostname() and info.pid > 0 and not is_alive(info.pid, info.started)

    def acquire(self) -> LockInfo:
        """Take the lock, taking over a stale one. Raises `LockedError` when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = LockInfo(self.name, socket.gethostname(), os.getpid(), process_start(os.getpid()),
                        uuid.uuid4().hex, datetime.now(UTC).isoformat(timespec="seconds"), self.detail)
        for _ in range(3):
            if self._create(mine):
                self.info = mine
                return mine
            holder = self.read()
            if holder is None:
                continue  # released in between: try again
            if not self.stale(holder):
                raise LockedError(f"{self.label} is already running ({holder.describe()}); lock file "
                                  f"{self.path}")
            with self._guard():
                # Only the process holding the guard removes a lock, and only the stale one it checked.
                if self.read() == holder:
                    self.path.unlink(missing_ok=True)
                    self.took_over = holder
        raise LockedError(f"could not take the lock {self.path}: other processes keep taking it")

    def _create(self, info: LockInfo) -> bool:
        temp = self.path.with_name(f".{self.path.name}.{info.token}")
        temp.write_text(json.dumps(info.__dict__))
        try:
            os.link(temp, self.path)  # atomic, and fails if the lock exists
            return True
        except FileExistsError:
            return False
        finally:
            temp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _guard(self):
        # One guard per lock folder: takeovers and releases are rare and quick.
        with open(self.path.parent / ".guard", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def release(self) -> None:
        """Remove the lock if this object still holds it."""
        if self.info is None:
            return
        with self._guard():
            current = self.read()
            if current is not None and current.token == self.info.token:
                self.path.unlink(missing_ok=True)
        self.info = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_dir(lake_path: Path) -> Path:
    return Path(lake_path) / "_jobs" / "locks"
