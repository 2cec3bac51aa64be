"""Fixtures for the jobs tests: small generated shop data in landing folders, a lake in a temp folder,
job files written by the tests, the real `shoplake` command as a subprocess, and table snapshots.

Helpers are handed out through the `jobs_env` fixture (not imported from this file) because other
test folders also have a `conftest` module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shoplake.catalog import default_catalog
from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.faults import TASK_HOOKS_ENV
from shoplake.jobs.history import Attempt, read_attempts
from shoplake.lake import Lake
from shoplake.synth import generate

SOURCES = ("products", "clickstream", "retail")
_HOOKS = ("fail_times", "pause_after", "pause_seconds")
GOLD = sorted(s.name for s in default_catalog() if s.layer == "gold" and s.build in ("full", "incremental"))


@pytest.fixture(scope="session")
def shop_files(tmp_path_factory) -> dict[str, Path]:
    """One small generated file per source (a few thousand rows, some dirty), made once per session."""
    root = tmp_path_factory.mktemp("generated")
    files = {
        "products": generate("products", root / "products", rows=400, seed=11).files[0],
        "clickstream": generate("clickstream", root / "clickstream", rows=6000, seed=11, days=10,
                                dirty_fraction=0.01).files[0],
        "retail": generate("retail", root / "retail", rows=3000, seed=11, start=dt.date(2010, 12, 1), days=30,
                           dirty_fraction=0.01).files[0],
    }
    # A second, later clickstream file: "a new file arrives in the landing folder".
    files["clickstream_2"] = generate("clickstream", root / "clickstream_2", rows=1500, seed=12,
                                      start=dt.date(2019, 10, 11), days=2).files[0]
    return files


def task(kind: str, **options: Any) -> dict[str, Any]:
    return {"kind": kind, **options}


def ingest_tasks(**options: Any) -> dict[str, dict]:
    """The three landing ingest tasks of the shipped jobs."""
    return {f"ingest_{s}": task("ingest", source=s, landing=s, **options) for s in SOURCES}


@dataclass
class Workspace:
    """A working directory with `landing/<source>/`, a lake and an optional `shoplake-jobs.yaml`."""

    root: Path
    files: dict[str, Path]
    # Test hooks of the tasks written with `job`/`write_jobs` (fail_times, pause_after, pause_seconds): not
    # options of the job schema, so they travel in SHOPLAKE_TASK_HOOKS (`shoplake.faults`) instead.
    hooks: dict[str, dict[str, Any]] = field(default_factory=dict)
    monkeypatch: Any = None

    @property
    def lake_path(self) -> Path:
        return self.root / "lakehouse"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def jobs_file(self) -> Path:
        return self.root / "shoplake-jobs.yaml"

    def land(self, source: str, key: str | None = None, name: str | None = None) -> Path:
        """Copy a generated file into `landing/<source>/`."""
        src = self.files[key or source]
        folder = self.landing / source
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / (name or src.name)
        shutil.copyfile(src, target)
        return target

    def land_all(self) -> None:
        for source in SOURCES:
            self.land(source)

    def write_jobs(self, jobs: dict[str, Any], **top: Any) -> Path:
        """Write the job file; the tasks' test hooks go to SHOPLAKE_TASK_HOOKS (for the runs of this test)."""
        self.hooks = {}
        for job in jobs.values():
            for name, task in job.get("tasks", {}).items():
                hooks = {key: task.pop(key) for key in _HOOKS if key in task}
                if hooks:
                    self.hooks[name] = hooks
        if self.monkeypatch is not None:  # in-process runs read the hooks from this process's environment
            if self.hooks:
                self.monkeypatch.setenv(TASK_HOOKS_ENV, json.dumps(self.hooks))
            else:
                self.monkeypatch.delenv(TASK_HOOKS_ENV, raising=False)
        self.jobs_file.write_text(yaml.safe_dump({"jobs": jobs, **top}, sort_keys=False))
        return self.jobs_file

    def job(self, name: str, tasks: dict[str, dict], **options: Any) -> Path:
        """Write a job file holding one job (the shipped jobs stay available)."""
        return self.write_jobs({name: {"tasks": tasks, **options}})

    def settings(self) -> Settings:
        return Settings(lake=self.lake_path, jobs_file=self.jobs_file if self.jobs_file.exists() else None,
                        landing=str(self.landing))

    def lake(self) -> Lake:
        return Lake(self.settings())

    def store(self) -> DeltaStore:
        return DeltaStore(self.lake_path)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLAKE_")}
        env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb", SHOPLAKE_LANDING=str(self.landing))
        if self.jobs_file.exists():
            env["SHOPLAKE_JOBS_FILE"] = str(self.jobs_file)
        if self.hooks:
            env[TASK_HOOKS_ENV] = json.dumps(self.hooks)
        return env

    def command(self, *args: str) -> list[str]:
        """`shoplake --lake LAKE ARGS` (the console entry point, like the installed script)."""
        return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(self.lake_path), *args]

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        """Run `shoplake ARGS` (the real command line) in this workspace."""
        return subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env(), cwd=self.root,
                              timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=self.env(), cwd=self.root, start_new_session=True)

    def versions(self) -> dict[str, int | None]:
        """Latest version of every catalog table (None when absent)."""
        store = self.store()
        return {spec.name: store.version(spec.name) for spec in default_catalog()}

    def attempts(self, run_id: str | None = None) -> list[Attempt]:
        return read_attempts(self.store(), run_id=run_id)

    def rows(self, table: str) -> list[tuple]:
        """A table's rows as sorted tuples (floats rounded: parallel sums may differ in the last bit)."""
        data = self.store().open(table).to_pyarrow_table()
        rows = [tuple(round(v, 6) if isinstance(v, float) else v for v in row.values())
                for row in data.to_pylist()]
        return sorted(rows, key=repr)

    def gold(self) -> dict[str, list[tuple]]:
        return {name: self.rows(name) for name in GOLD}


@pytest.fixture
def workspace(tmp_path, shop_files, monkeypatch) -> Workspace:
    """An empty working directory (no stray shoplake.toml or job file), made the current directory."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith("SHOPLAKE_")]:
        monkeypatch.delenv(name)
    return Workspace(tmp_path, shop_files, monkeypatch=monkeypatch)


@pytest.fixture(scope="session")
def make_workspace(tmp_path_factory, shop_files):
    """More workspaces in one test (not made the current directory)."""
    def make(name: str) -> Workspace:
        return Workspace(tmp_path_factory.mktemp(name), shop_files)
    return make


class Helpers:
    task = staticmethod(task)
    ingest_tasks = staticmethod(ingest_tasks)
    SOURCES = SOURCES
    GOLD = GOLD


@pytest.fixture(scope="session")
def jobs_env() -> type[Helpers]:
    return Helpers
