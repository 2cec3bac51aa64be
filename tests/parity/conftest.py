"""Fixtures of the engine parity tests: one Spark session for the whole test session, the same inputs
built into one lake per engine.

Spark needs Java 17 and the `spark` extra; without them these tests are skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shoplake.build import build_tables
from shoplake.config import Settings
from shoplake.ingest import ingest_files
from shoplake.lake import Lake, new_run_id
from shoplake.synth import generate

# ../shared/data/real relative to the repository root (as in tests/e2e).
REAL_DATA = (Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real").resolve()
RETAIL_FILE = REAL_DATA / "online_retail" / "online_retail_uci_2010-12_2011-12.csv.gz"
PARITY_EVENTS = 100_000


def ingest_all(lake: Lake, files: dict[str, list[Path]]) -> None:
    for source, paths in files.items():
        ingest_files(lake, source, [str(p) for p in paths], run_id=new_run_id())


def build_all(lake: Lake) -> list:
    results = build_tables(lake, run_id=new_run_id())
    failed = [f"{r.table}: {r.message}" for r in results if r.status in ("failed", "skipped")]
    assert not failed, failed
    return results


@pytest.fixture(scope="session")
def parity_inputs(tmp_path_factory) -> dict[str, list[Path]]:
    """The real UCI file and 100k generated events (with planted dirty rows) plus their products."""
    if not RETAIL_FILE.exists():
        pytest.skip(f"real data file {RETAIL_FILE} is absent (expected ../shared/data/real next to the repo)")
    root = tmp_path_factory.mktemp("parity-data")
    products = generate("products", root / "products", seed=5, dirty_fraction=0.01).files[0]
    events = generate("clickstream", root / "clickstream", rows=PARITY_EVENTS, seed=5, days=14,
                      start=dt.date(2019, 10, 1), dirty_fraction=0.01).files[0]
    return {"products": [products], "clickstream": [events], "retail": [RETAIL_FILE]}


@pytest.fixture(scope="session")
def parity_lakes(spark_available, parity_inputs, tmp_path_factory) -> dict[str, Lake]:
    """Every table built from the same inputs, once per engine."""
    lakes = {}
    for engine in ("duckdb", "spark"):
        lake = Lake(Settings(lake=tmp_path_factory.mktemp(f"parity-{engine}"), engine=engine))
        ingest_all(lake, parity_inputs)
        build_all(lake)
        lakes[engine] = lake
    return lakes
