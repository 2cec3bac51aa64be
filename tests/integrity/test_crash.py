"""A process killed right after any commit leaves a lake that the next run completes exactly.

For each command (ingest, build, train, score) the commit points are listed by a clean run (every Delta
commit and MLflow registration, traced by `SHOPLAKE_TRACE_COMMITS`); then, for each point, the command is
killed right after that commit (`SHOPLAKE_CRASH_AFTER`, the process ends with `os._exit` as under
`kill -9`), run again, and the lake must equal the clean run's, table by table, with `verify` passing.

Tables written by the same code (every Gold table of a full build, every Silver table of an incremental one)
share a commit path, and so do the repeated commits of one table (the ledger after each table): by default
the first and the last point of each (layer, build kind), and of each other table, stand for the ones in
between; every other point is crashed. `SHOPLAKE_CRASH_POINTS=all` crashes every point.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shoplake.catalog import default_catalog
from shoplake.faults import CRASH_EXIT_CODE

from .conftest import assert_same_lake, assert_verified, cli, snapshot

pytestmark = pytest.mark.slow  # every commit point of a command, crashed and re-run in real processes


def _points(lake: Path, trace: Path, *args: str) -> list[str]:
    """The commit points of a clean run. Empty tables created on the way are one code path, and so are the
    check records appended to ops.data_quality before each table: the first of each stands for all
    (each point costs a crash and a re-run)."""
    cli(lake, *args, SHOPLAKE_TRACE_COMMITS=str(trace))
    points, creations = [], []
    for line in trace.read_text().splitlines():
        point, kind = line.split()
        if point.startswith("ops.data_quality#") and point != "ops.data_quality#1":
            continue
        (creations if kind == "create" else points).append(point)
    return _sampled(points) + creations[:1]


def _sampled(points: list[str]) -> list[str]:
    """The first and last commit point of each (layer, build kind) of Silver and Gold tables and of each
    other table; every MLflow point."""
    if os.environ.get("SHOPLAKE_CRASH_POINTS") == "all":
        return points
    catalog = {spec.name: spec for spec in default_catalog()}
    paths: dict[tuple[str, str], list[str]] = {}
    for point in points:
        spec = catalog.get(point.split("#")[0])
        if spec is None:  # MLflow registrations
            continue
        same_code = (spec.layer, spec.build) if spec.layer in ("silver", "gold") else (spec.name, "")
        paths.setdefault(same_code, []).append(point)
    skipped = {point for same in paths.values() for point in same[1:-1]}
    return [point for point in points if point not in skipped]


def _crash_each(tmp_path: Path, before: Path, args: tuple[str, ...]) -> list[str]:
    """Crash `args` after each of its commit points on a copy of `before`; re-run; compare with a clean run.

    (A crash during training registers a model version that the re-run supersedes: versions differ, and
    are volatile columns of the comparison; the data and predictions must not differ.)"""
    tmp_path.mkdir(parents=True, exist_ok=True)
    clean = tmp_path / "clean"
    shutil.copytree(before, clean)
    points = _points(clean, tmp_path / "trace.txt", *args)
    assert points, "the command committed nothing"
    clean_rows = snapshot(clean)
    for point in points:
        lake = tmp_path / f"crash-{point.replace('#', '-')}"
        shutil.copytree(before, lake)
        crashed = cli(lake, *args, check=False, SHOPLAKE_CRASH_AFTER=point)
        assert crashed.returncode == CRASH_EXIT_CODE, (point, crashed.stdout, crashed.stderr)
        cli(lake, *args)
        assert_same_lake(lake, clean_rows)
        assert_verified(lake)
        shutil.rmtree(lake)
    return points


def test_crash_at_each_commit_of_ingest(tmp_path, inputs):
    empty = tmp_path / "empty"
    empty.mkdir()
    points = _crash_each(tmp_path, empty, ("ingest", "clickstream", str(inputs.clickstream)))
    # bronze, its quarantine (with the ledger entry), the ledger copy, and the ops tables created empty
    assert {"bronze.clickstream#1", "quarantine.clickstream#1", "ops.ledger#2"} <= set(points), points


def test_crash_at_each_commit_of_build(tmp_path, ingested):
    points = _crash_each(tmp_path, ingested, ("build",))
    assert {"silver.events#1", "quarantine.clickstream#1", "ops.ledger#1"} <= set(points), points
    assert sum(p.startswith("gold.") for p in points) >= 2, points  # the first and the last Gold table


def test_crash_at_each_commit_of_an_incremental_build(tmp_path, built, inputs):
    # A second file arrives: the build appends to Silver and rewrites Gold.
    more = tmp_path / "more.csv"
    more.write_text("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                    "2019-10-30 10:00:00 UTC,view,1,2,a.b,x,1.5,7,s1\n"
                    "2019-10-30 10:00:00 UTC,view,1,2,a.b,x,1.5,7,s1\n"
                    "2019-10-30 10:01:00 UTC,purchase,1,2,a.b,x,-1.5,7,s1\n")
    before = tmp_path / "before"
    shutil.copytree(built, before)
    cli(before, "ingest", "clickstream", str(more))
    _crash_each(tmp_path / "incremental", before, ("build",))


def test_crash_at_each_commit_of_train_and_score(tmp_path, built):
    points = _crash_each(tmp_path, built, ("ml", "train", "rfm"))
    assert {"mlflow:register#1", "mlflow:promote#1"} <= set(points)
    trained = tmp_path / "trained"
    shutil.copytree(built, trained)
    cli(trained, "ml", "train", "rfm")
    points = _crash_each(tmp_path / "score", trained, ("ml", "score", "--kind", "rfm"))
    assert any(p.startswith("gold.") for p in points), points
