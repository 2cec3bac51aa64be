"""Fault injection for the crash tests: die right after a named commit point, as `kill -9` would.

Production code calls `crash_point(name)` right after each commit (every Delta commit, with the table
name; MLflow registrations, with `mlflow:<what>`). Nothing happens unless the environment variable
`SHOPLAKE_CRASH_AFTER` names that point (`silver.events`, or `silver.events#2` for its second commit in
this process): the crash tests set it, run a command, and check what a re-run makes of the lake.
`SHOPLAKE_TRACE_COMMITS=FILE` appends every point passed (`name#n`) to FILE, so a test can list them.

The job tests also make task attempts fail or pause on purpose: `SHOPLAKE_TASK_HOOKS` holds JSON such as
`{"build": {"fail_times": 1, "pause_after": "silver.sales", "pause_seconds": 120}}`, keyed by task name.
It is read where an attempt runs (a worker inherits the runner's environment), and is not part of the
job schema: a job file cannot ask for it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

CRASH_AFTER_ENV = "SHOPLAKE_CRASH_AFTER"
TRACE_ENV = "SHOPLAKE_TRACE_COMMITS"
TASK_HOOKS_ENV = "SHOPLAKE_TASK_HOOKS"
CRASH_EXIT_CODE = 86
_seen: dict[str, int] = {}


def crash_point(name: str, kind: str = "commit") -> None:
    """A commit point: `name` is the table (or `mlflow:<what>`), `kind` what was committed (for traces)."""
    wanted, trace = os.environ.get(CRASH_AFTER_ENV), os.environ.get(TRACE_ENV)
    if not wanted and not trace:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if trace:
        with open(trace, "a") as handle:
            handle.write(f"{name}#{_seen[name]} {kind}\n")
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point == name and (not nth or int(nth) == _seen[name]):
        os._exit(CRASH_EXIT_CODE)  # no cleanup, no flush, no lock release but the kernel's


@dataclass(frozen=True)
class TaskHooks:
    """Fail attempts 1..`fail_times` of a task, or pause `pause_seconds` at `start` or after it wrote the
    table `pause_after` (where a test can kill the process)."""

    fail_times: int = 0
    pause_after: str | None = None
    pause_seconds: float = 60.0


def task_hooks(task: str) -> TaskHooks:
    """The hooks `SHOPLAKE_TASK_HOOKS` sets for `task` (none when unset)."""
    text = os.environ.get(TASK_HOOKS_ENV)
    if not text:
        return TaskHooks()
    return TaskHooks(**json.loads(text).get(task, {}))
