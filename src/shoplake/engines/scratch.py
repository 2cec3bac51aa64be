"""Per-process scratch folders of the engines (DuckDB's spill, Spark ingest's parsed lines).

Each engine session works in a folder of its own, named after its process, and removes it when it closes.
A process killed before it could clean up leaves its folder behind; the next session under the same root
removes the folders of processes that no longer run, so a crash never fills the disk for good.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path


def session_folder(root: Path, prefix: str) -> Path:
    """A new folder `<prefix><pid>-<random>` under `root`; on the way, remove the `<prefix><pid>-*` folders
    whose process no longer runs on this machine. A prefix for a root shared between machines must name
    the machine (a process id means nothing on another one)."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{glob.escape(prefix)}*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not process_runs(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))


def process_runs(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
