"""Thirty daily runs on small inputs, with and without the `maintain` task: maintenance keeps every table's
live file count and log tail bounded, and time travel within the retention keeps working."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from shoplake.catalog import default_catalog
from shoplake.jobs.definitions import load_jobs, shipped_text
from shoplake.jobs.runner import run_job
from shoplake.maintenance import CHECKPOINT_AFTER_COMMITS, maintain
from shoplake.synth import generate

pytestmark = pytest.mark.slow  # forty-five job runs

DAYS = 30
# The arm without maintenance only has to show linear growth: half the month already holds more live files
# than the maintained lake ever does in the whole month (and costs half the runs).
DAYS_WITHOUT = 15
MIN_SMALL_FILES = {spec.name: spec.maintenance.min_small_files for spec in default_catalog()}


@pytest.fixture(scope="module")
def daily_files(tmp_path_factory) -> list[Path]:
    """A month of generated clickstream split into one file per day (what a shop's export drops daily)."""
    root = tmp_path_factory.mktemp("month")
    month = generate("clickstream", root / "generated", rows=3000, seed=5, days=DAYS).files[0]
    with gzip.open(month, "rt") as handle:
        header, *lines = handle.read().splitlines()
    by_day: dict[str, list[str]] = {}
    for line in lines:
        by_day.setdefault(line[:10], []).append(line)
    assert len(by_day) == DAYS
    files = []
    for day, rows in sorted(by_day.items()):
        path = root / f"events_{day}.csv"
        path.write_text("\n".join([header, *rows]) + "\n")
        files.append(path)
    return files


def _daily(ws, *, maintain: bool) -> None:
    """The shipped `daily` without its ML tasks (trained elsewhere; here they would only add minutes). With
    `maintain`, its maintain and verify tasks after the build; without, ingest and build only (the tasks that
    write the lake's data: verify would only add its own records and time)."""
    daily = yaml.safe_load(shipped_text())["jobs"]["daily"]
    kept = {"ingest", "build"} | ({"maintain", "verify"} if maintain else set())
    daily["tasks"] = {name: t for name, t in daily["tasks"].items() if t["kind"] in kept}
    if maintain:
        daily["tasks"]["maintain"]["depends_on"] = ["build"]
    ws.write_jobs({"daily": daily})


def _month_of_runs(ws, daily_files: list[Path], *, maintain: bool) -> list[dict[str, int]]:
    """Land one day's file and run `daily` (inline), once per file; the live file count of every table after
    each run (without maintenance: after the last)."""
    _daily(ws, maintain=maintain)
    ws.land("products")
    lake = ws.lake()
    job = load_jobs(lake.settings, lake.catalog).get("daily")
    assert ("maintain" in job.tasks) == maintain
    live = []
    for day, path in enumerate(daily_files):
        _land(ws, path)
        result = run_job(lake, job, isolation="inline")
        assert result.ok, (day, result.summary_lines())
        if maintain or day == len(daily_files) - 1:  # without maintenance only the end state is compared
            live.append(_live_files(lake))
    return live


def _live_files(lake) -> dict[str, int]:
    """Data files in the current snapshot of every table."""
    return {spec.name: len(DeltaTable(str(lake.store.path(spec.name))).file_uris())
            for spec in default_catalog() if lake.store.exists(spec.name)}


def _files_on_disk(lake) -> dict[str, int]:
    """Data files in every table's folder (not the log's checkpoint files)."""
    return {spec.name: sum(1 for path in lake.store.path(spec.name).rglob("*.parquet")
                           if "_delta_log" not in path.parts)
            for spec in default_catalog() if lake.store.exists(spec.name)}


def _land(ws, path: Path) -> None:
    folder = ws.landing / "clickstream"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / path.name).write_bytes(path.read_bytes())


def _commits_after_last_checkpoint(table_dir: Path) -> int:
    log = table_dir / "_delta_log"
    checkpoints = [int(p.name.split(".")[0]) for p in log.glob("*.checkpoint.parquet")]
    last = max(checkpoints, default=-1)
    return sum(1 for p in log.glob("*.json") if int(p.name.split(".")[0]) > last)


def test_thirty_daily_runs_keep_files_bounded_with_maintain_and_grow_without(workspace, make_workspace,
                                                                              daily_files):
    # Without maintenance: every append is one more live file in the tables written daily.
    bare = make_workspace("without_maintain")
    grown = _month_of_runs(bare, daily_files[:DAYS_WITHOUT], maintain=False)[-1]
    for appended in ("bronze.clickstream", "silver.events", "ops.job_runs"):
        assert grown[appended] >= DAYS_WITHOUT, (appended, grown[appended])

    # With maintenance, over the whole month, the bound: a table never holds more live files than its
    # declared `min_small_files` (maintenance compacts once that many small files exist, leaving 1) plus the
    # files the same run writes after its maintain task (verify's ledger rows and the run history: at most
    # 4 appends); fewer than half the month without maintenance left.
    lake_runs = _month_of_runs(workspace, daily_files, maintain=True)
    lake = workspace.lake()
    worst = {name: max(run.get(name, 0) for run in lake_runs) for name in lake_runs[-1]}
    for name, files in worst.items():
        assert files <= MIN_SMALL_FILES[name] + 4, (name, files)
    assert worst["ops.job_runs"] < grown["ops.job_runs"] and worst["silver.events"] < grown["silver.events"]

    # Checkpoints keep the log a reader replays short.
    for name in worst:
        tail = _commits_after_last_checkpoint(lake.store.path(name))
        assert tail <= CHECKPOINT_AFTER_COMMITS + 8, (name, tail)

    # Time travel within the retention (7 days; these runs took minutes) still reads every version:
    # silver.events as of each of its versions holds a non-decreasing number of rows, the last all of them.
    store = lake.store
    counts = [store.open("silver.events", v).to_pyarrow_table().num_rows
              for v in range(store.version("silver.events") + 1)]
    assert counts == sorted(counts) and counts[-1] == store.open("silver.events").to_pyarrow_table().num_rows
    assert counts[-1] == sum(len(path.read_text().splitlines()) - 1 for path in daily_files)

    # Within the retention the replaced files stay on disk (they are those versions); once outside it,
    # vacuum removes them: with a zero retention, what is left on disk is exactly the live files.
    assert sum(_files_on_disk(lake).values()) > sum(_live_files(lake).values())
    on_disk = _files_on_disk(lake)
    report = maintain(lake, compact=False, retain_hours=0, allow_short_retention=True)
    assert _files_on_disk(lake) == _live_files(lake)
    assert report.files_vacuumed == sum(on_disk.values()) - sum(_live_files(lake).values())
    assert maintain(lake, retain_hours=0, allow_short_retention=True).files_vacuumed == 0  # nothing left
