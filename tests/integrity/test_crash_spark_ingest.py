"""Spark ingest killed where only Spark's route can be: its executors have written Bronze files and the
driver has not committed them, or Spark's own write has not finished moving them out of its staging folder.

On Spark the executors write a file's Bronze files themselves (`SparkEngine.stage_source`); the driver
commits them under the same writer locks as on DuckDB. A process killed in between leaves files that no
commit references: no reader may see them, the next run must make the lake a clean run makes, and
maintenance must remove them (with Spark's staging folders, which Delta's vacuum does not look into).
Each run is a real process with its own Spark session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.faults import CRASH_EXIT_CODE
from shoplake.lake import Lake
from shoplake.maintenance import maintain

from .conftest import assert_same_lake, assert_verified, cli, cli_env, snapshot

pytestmark = pytest.mark.slow  # a Spark session per process

BRONZE = "bronze.clickstream"

# Ingest on Spark in a process that dies (`os._exit`, as under kill -9) at `where`:
#   commit  - the executors wrote the Bronze files; the driver dies as it would commit them;
#   staging - Spark's write finished inside its staging folder; the driver dies before moving the files out.
_KILLED = """
import os, sys
from shoplake.config import load_settings
from shoplake.engines.delta import DeltaStore
from shoplake.ingest import ingest_files
from shoplake.lake import Lake

lake_path, source_file, where = sys.argv[1:4]
if where == "commit":
    DeltaStore.commit_files = lambda *args, **kwargs: os._exit(9)
else:
    from pathlib import Path
    Path.rename = lambda *args, **kwargs: os._exit(9)  # the move of Spark's first file out of its staging folder
ingest_files(Lake(load_settings(env={}, lake=lake_path, engine="spark")), "clickstream", [source_file], run_id="killed")
"""


@pytest.fixture(scope="module")
def spark_clean(tmp_path_factory, inputs) -> dict:
    """The snapshot of a clean Spark ingest of the generated clickstream file."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 on PATH")
    pytest.importorskip("pyspark")
    lake = tmp_path_factory.mktemp("spark-clean") / "lake"
    cli(lake, "ingest", "clickstream", str(inputs.clickstream), SHOPLAKE_ENGINE="spark")
    return snapshot(lake)


def _parquet_files(folder: Path) -> set[Path]:
    return set(folder.rglob("*.parquet"))


@pytest.mark.parametrize("where", ["commit", "staging"])
def test_spark_ingest_killed_before_its_commit_leaves_files_no_reader_sees(tmp_path, inputs, spark_clean, where):
    lake = tmp_path / "lake"
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(lake), str(inputs.clickstream), where],
                            capture_output=True, text=True, env=cli_env(), timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    store = DeltaStore(lake)
    folder = store.path(BRONZE)
    orphans = _parquet_files(folder)
    assert orphans, "the executors wrote no Bronze file before the kill"
    if where == "staging":  # still inside Spark's staging folder
        assert all(p.parent.name.startswith("_spark_staging_") for p in orphans), orphans
    assert store.version(BRONZE) is None  # nothing committed: no reader sees them

    cli(lake, "ingest", "clickstream", str(inputs.clickstream), SHOPLAKE_ENGINE="spark")
    assert_same_lake(lake, spark_clean)
    assert_verified(lake)
    committed = {Path(uri.removeprefix("file://")).name for uri in store.open(BRONZE).file_uris()}
    assert not committed & {p.name for p in orphans}

    maintain(Lake(Settings(lake=lake)), BRONZE, compact=False, retain_hours=0, allow_short_retention=True)
    assert {p.name for p in _parquet_files(folder)} == committed
    assert not list(folder.glob("_spark_staging_*"))
    assert_same_lake(lake, spark_clean)


def test_spark_ingest_killed_after_its_bronze_commit_is_completed_by_the_next_run(tmp_path, inputs, spark_clean):
    lake = tmp_path / "lake"
    crashed = cli(lake, "ingest", "clickstream", str(inputs.clickstream), check=False, SHOPLAKE_ENGINE="spark",
                  SHOPLAKE_CRASH_AFTER=BRONZE)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr[-3000:]
    assert DeltaStore(lake).version(BRONZE) is not None  # Bronze committed, its quarantine and ledger not
    again = cli(lake, "ingest", "clickstream", str(inputs.clickstream), SHOPLAKE_ENGINE="spark")
    assert "completed" in again.stdout
    assert_same_lake(lake, spark_clean)
    assert_verified(lake)
