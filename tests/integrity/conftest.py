"""Fixtures of the integrity tests: small generated inputs, a CLI runner in real processes, lake snapshots.

Everything here runs the real `shoplake` command in subprocesses, because what is tested is what two
processes, or a killed one, leave in the lake.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoplake.catalog import default_catalog
from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.lake import Lake
from shoplake.quality.verify import verify_lake
from shoplake.synth import generate

# Columns that legitimately differ between two runs of the same work: times and run ids.
VOLATILE = {"run_id", "recorded_at", "checked_at", "_ingested_at", "_quarantined_at", "decided_at", "scored_at",
            "started_at", "ended_at", "trained_at", "model_version", "mlflow_run_id", "evaluated_at"}
# Tables whose content is the history of runs (one row per attempt or query), not data.
# (A training killed after its promotion is re-run and decides again: its decision log differs, rightly.)
HISTORY_TABLES = {"ops.job_runs", "ops.query_log", "ops.data_quality", "ops.model_decisions", "ops.model_monitoring"}


# Rounds of each two-processes-at-once test. The writer locks make the outcome deterministic, so a few
# rounds test it; raise it to hunt for a race (SHOPLAKE_TEST_ROUNDS=50 pytest tests/integrity).
ROUNDS = int(os.environ.get("SHOPLAKE_TEST_ROUNDS", "6"))


@dataclass(frozen=True)
class Inputs:
    clickstream: Path
    retail: Path
    products: Path


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    """A few thousand generated rows of each source, with realistic bad rows planted."""
    folder = tmp_path_factory.mktemp("inputs")
    generate("products", folder, seed=5)
    generate("clickstream", folder, rows=4000, seed=5, days=10, dirty_fraction=0.01)
    generate("retail", folder, rows=2000, seed=5, start=dt.date(2010, 12, 1), days=60, dirty_fraction=0.01)
    return Inputs(folder / "clickstream.csv.gz", folder / "retail.csv.gz", folder / "products.csv.gz")


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, inputs) -> Path:
    """A lake holding the three sources in bronze, not built. Read-only: tests copy it before writing."""
    lake = tmp_path_factory.mktemp("ingested") / "lake"
    cli(lake, "ingest", "products", str(inputs.products))
    cli(lake, "ingest", "clickstream", str(inputs.clickstream))
    cli(lake, "ingest", "retail", str(inputs.retail))
    return lake


@pytest.fixture(scope="session")
def built(tmp_path_factory, ingested) -> Path:
    """`ingested`, built. Read-only: tests copy it before writing."""
    lake = tmp_path_factory.mktemp("built") / "lake"
    shutil.copytree(ingested, lake)
    cli(lake, "build")
    return lake


def cli_args(lake: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(lake), *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLAKE_")}
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb", **extra)
    return env


def cli(lake: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run `shoplake --lake LAKE ARGS...` in its own process."""
    done = subprocess.run(cli_args(lake, *args), capture_output=True, text=True, env=cli_env(**env), timeout=600)
    if check:
        assert done.returncode == 0, f"shoplake {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def start(lake: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cli_args(lake, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(**env))


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def snapshot(lake: Path) -> dict[str, list[tuple]]:
    """Every table's rows (sorted, volatile columns left out): equal snapshots mean equal lakes."""
    store = DeltaStore(lake)
    found = {}
    for spec in default_catalog():
        if spec.name in HISTORY_TABLES or not store.exists(spec.name):
            continue
        table = store.open(spec.name).to_pyarrow_table()
        if spec.name == "ops.ledger":  # the ledger rows of a history table are history too
            table = table.filter(pc.invert(pc.is_in(table["table_name"], pa.array(sorted(HISTORY_TABLES)))))
        keep = [c for c in table.column_names if c not in VOLATILE]
        found[spec.name] = sorted(tuple(_plain(v) for v in row.values())
                                   for row in table.select(keep).to_pylist())
    return found


def _plain(value) -> str:
    # Sums of doubles depend on the order the engine adds them in (threads): compare 10 significant digits.
    return f"{value:.10g}" if isinstance(value, float) else repr(value)


def assert_same_lake(lake: Path, reference: Path | dict[str, list[tuple]]) -> None:
    """`lake` holds what `reference` holds: another lake, or its `snapshot` (taken once for many checks)."""
    got = snapshot(lake)
    want = reference if isinstance(reference, dict) else snapshot(reference)
    assert sorted(got) == sorted(want), f"tables differ: {sorted(set(got) ^ set(want))}"
    for name in want:
        assert len(got[name]) == len(want[name]), f"{name}: {len(got[name])} rows, a serial run has {len(want[name])}"
        assert got[name] == want[name], f"{name}: content differs from a serial run"


def assert_verified(lake: Path) -> None:
    """`shoplake verify` passes (run in this process: the CLI command is this function plus a table)."""
    result = verify_lake(Lake(Settings(lake=lake)))
    assert result.ok, [f for f in result.failures]
