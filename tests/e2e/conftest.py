"""Shared fixtures for the end-to-end tests: the real data folder, the CLI runner and lake snapshots.

Helpers are handed out as (session-scoped) fixtures rather than imported from this file, because
`tests/unit/conftest.py` shares the module name `conftest`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoplake.catalog import default_catalog
from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.lake import Lake
from shoplake.query import run_query

# ../shared/data/real relative to the repository root.
# Resolved, as the CLI reports resolved local paths (../shared may be a symlink).
REAL_DATA = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real").resolve()

CLICKSTREAM_HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
                      "user_session")


def real_file(*parts: str) -> Path:
    """A file under the real-data folder, or skip the test with the reason."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (expected ../shared/data/real next to the repo)")
    return path


def open_lake(path: Path, **settings) -> Lake:
    """A Lake on `path` with explicit settings (no config file, no environment)."""
    return Lake(Settings(lake=Path(path), **settings))


def rows(lake: Lake, sql: str) -> list[dict]:
    """Run a read-only query through the public query API."""
    return run_query(lake, sql).to_pylist()


def scalar(lake: Lake, sql: str):
    result = rows(lake, sql)
    return next(iter(result[0].values()))


def table_versions(lake_path: Path) -> dict[str, int | None]:
    """Latest version of every catalog table (None when absent): proof that nothing was written."""
    store = DeltaStore(Path(lake_path))
    return {spec.name: store.version(spec.name) for spec in default_catalog()}


def delta_logs(lake_path: Path) -> list[Path]:
    return sorted(Path(lake_path).rglob("_delta_log")) if Path(lake_path).exists() else []


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("shoplake")
    return [str(script)] if script.exists() else [sys.executable, "-m", "shoplake.cli"]


def run_cli(*args: str, lake: Path | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script; wide, colourless output so lines do not wrap."""
    full_env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
    full_env.pop("SHOPLAKE_CONFIG", None)
    command = [*_cli_command(), *(["--lake", str(lake)] if lake is not None else []), *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def cli_ok(*args: str, lake: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    result = run_cli(*args, lake=lake, **kwargs)
    assert result.returncode == 0, f"shoplake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def cli_json(sql: str, *, lake: Path) -> list[dict]:
    return json.loads(cli_ok("sql", sql, "--format", "json", lake=lake).stdout)


def assert_one_line_error(result: subprocess.CompletedProcess, *, names: str) -> str:
    """Exit 1, exactly one non-empty stderr line that names `names`, no traceback anywhere."""
    assert result.returncode == 1, (f"exit {result.returncode}\nstdout:\n{result.stdout}\n"
                                    f"stderr:\n{result.stderr}")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one stderr line, got:\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert names in lines[0], f"{names!r} not named in {lines[0]!r}"
    return lines[0]


class E2E:
    """The helpers above, as one object handed out by the `e2e` fixture."""

    REAL_DATA = REAL_DATA
    CLICKSTREAM_HEADER = CLICKSTREAM_HEADER
    real_file = staticmethod(real_file)
    open_lake = staticmethod(open_lake)
    rows = staticmethod(rows)
    scalar = staticmethod(scalar)
    table_versions = staticmethod(table_versions)
    delta_logs = staticmethod(delta_logs)
    run_cli = staticmethod(run_cli)
    cli_ok = staticmethod(cli_ok)
    cli_json = staticmethod(cli_json)
    assert_one_line_error = staticmethod(assert_one_line_error)


@pytest.fixture(scope="session")
def e2e() -> type[E2E]:
    return E2E
