"""The shipped `daily` job on lakes holding only some sources, or none: tasks without inputs end `skipped`
with the reason, the rest still run, and the run succeeds. Plus the retry policy and table maintenance."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake.config import load_settings
from shoplake.errors import LakeLockTimeout, QualityCheckError, is_transient
from shoplake.jobs.history import read_attempts
from shoplake.lake import Lake
from shoplake.maintenance import maintain
from shoplake.synth import generate


def _daily(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shoplake", "--lake", "lake", "run", "daily"], cwd=root,
                          capture_output=True, text=True, timeout=900)


def _last_status(root: Path) -> dict[str, tuple[str, str]]:
    lake = Lake(load_settings(lake=root / "lake"))
    return {a.task: (a.status, a.detail or "") for a in read_attempts(lake.store)}


@pytest.mark.slow  # the daily job in worker processes
def test_an_empty_lake_skips_every_task_with_its_reason(tmp_path):
    result = _daily(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = _last_status(tmp_path)
    assert {status for status, _ in statuses.values()} == {"skipped"}, statuses
    assert len(statuses) == 14
    assert "no landing location" in statuses["ingest_retail"][1]
    assert "no source data ingested yet" in statuses["build"][1]
    assert "no data has been ingested into bronze.retail" in statuses["train_rfm"][1]
    assert "no data has been ingested into bronze.clickstream" in statuses["train_recommender"][1]
    assert "no data has been ingested into bronze.retail" in statuses["train_clv"][1]
    assert statuses["score"][1].startswith("no model to score")
    assert statuses["score_propensity"][1].startswith("no model to score: propensity (")
    assert statuses["score_recommender"][1].startswith("no model to score: recommender (")


@pytest.mark.slow
def test_a_clickstream_only_lake_trains_what_it_can_and_scores_it(tmp_path):
    landing = tmp_path / "landing" / "clickstream"
    generated = generate("clickstream", tmp_path / "gen", rows=20000, seed=5)
    landing.mkdir(parents=True)
    shutil.copy(generated.files[0], landing)
    result = _daily(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = _last_status(tmp_path)
    assert statuses["train_rfm"][0] == "skipped" and "gold.customer_rfm" in statuses["train_rfm"][1]
    assert statuses["train_clv"][0] == "skipped" and "silver.sales" in statuses["train_clv"][1]
    assert statuses["train_segments"][0] == "succeeded"
    assert statuses["score"][0] == "succeeded" and "not scored: rfm" in statuses["score"][1]
    assert "clv (" in statuses["score"][1]
    assert statuses["score_propensity"][0] == "succeeded" and statuses["score_recommender"][0] == "succeeded"
    assert statuses["maintain"][0] == "succeeded" and statuses["verify"][0] == "succeeded"
    assert "succeeded" in result.stdout


@pytest.mark.slow
def test_a_retail_only_lake_trains_rfm_and_skips_the_clickstream_models(tmp_path):
    landing = tmp_path / "landing" / "retail"
    generated = generate("retail", tmp_path / "gen", rows=20000, seed=5, start=dt.date(2010, 12, 1), days=365)
    landing.mkdir(parents=True)
    shutil.copy(generated.files[0], landing)
    result = _daily(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    statuses = _last_status(tmp_path)
    assert statuses["ingest_clickstream"][0] == "skipped" and statuses["ingest_retail"][0] == "succeeded"
    for model in ("train_segments", "train_propensity", "train_recommender"):
        assert statuses[model][0] == "skipped" and "clickstream" in statuses[model][1], statuses[model]
    assert statuses["train_rfm"][0] == "succeeded" and statuses["train_clv"][0] == "succeeded", statuses["train_clv"]
    assert statuses["score"][0] == "succeeded" and "not scored: " in statuses["score"][1]
    assert "(rfm, clv)" in statuses["score"][1]
    for task in ("score_propensity", "score_recommender"):
        assert statuses[task][0] == "skipped" and "no model to score" in statuses[task][1]
    assert statuses["maintain"][0] == "succeeded" and statuses["verify"][0] == "succeeded"


def test_only_transient_failures_are_retried():
    assert is_transient(OSError("disk full")) and is_transient(LakeLockTimeout("held"))
    assert not is_transient(QualityCheckError("check failed")) and not is_transient(ValueError("bug"))


def _small_appends(lake: Lake, name: str, count: int) -> None:
    for i in range(count):
        lake.store.write(name, pa.table({"n": pa.array([i], pa.int64())}), mode="append",
                         meta={"write_key": f"t:{i}"})


def test_maintenance_bounds_the_files_and_keeps_time_travel(tmp_path):
    lake = Lake(load_settings(lake=tmp_path / "lake"))
    name = "ops.batch_exclusions"  # any catalog table: the file count is what is measured
    table_dir = lake.store.path(name)
    # Without maintenance every append adds a file.
    _small_appends(lake, name, 30)
    assert len(list(table_dir.glob("*.parquet"))) == 30
    before = lake.store.open(name, 10).to_pyarrow_table().num_rows

    # Compaction within the default retention: one live file, old versions still readable.
    report = maintain(lake, name)
    assert report.tables[0].compacted and report.tables[0].files_after == 1
    assert lake.store.open(name, 10).to_pyarrow_table().num_rows == before == 11
    assert lake.store.open(name).to_pyarrow_table().num_rows == 30
    assert lake.store.data_version(name, lake.store.version(name)) == 29  # the optimize changed no row

    # Thirty more rounds of appends, each followed by maintenance with no retention: files stay bounded.
    for round_ in range(30):
        _small_appends(lake, name, 3)
        maintain(lake, name, retain_hours=0, allow_short_retention=True)
        assert len(list(table_dir.glob("*.parquet"))) < 8, round_  # compacted once 8 small files exist
    assert lake.store.open(name).to_pyarrow_table().num_rows == 120
