"""Tables written by Spark are plain Delta tables: deltalake, DuckDB and Polars read them identically
(time travel included), and a lake built by one engine is continued incrementally by the other."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from shoplake.catalog import default_catalog
from shoplake.config import Settings
from shoplake.lake import Lake

from .compare import differences
from .conftest import build_all, ingest_all

BUILT = [s for s in default_catalog() if s.build in ("incremental", "full")]


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> list[dict[str, list[Path]]]:
    """Two batches of every source (the second has new events and sales and an updated catalog)."""
    from shoplake.synth import generate

    root = tmp_path_factory.mktemp("interop-data")
    out = []
    for n, seed in enumerate((21, 22)):
        day = dt.date(2019, 10, 1) + dt.timedelta(days=7 * n)
        out.append({
            "products": [generate("products", root / f"p{n}", rows=1500, seed=seed).files[0]],
            "clickstream": [generate("clickstream", root / f"c{n}", rows=4000, seed=seed, start=day, days=7,
                                     dirty_fraction=0.02).files[0]],
            "retail": [generate("retail", root / f"r{n}", rows=3000, seed=seed, days=20,
                                start=dt.date(2010, 12, 1) + dt.timedelta(days=30 * n),
                                dirty_fraction=0.02).files[0]],
        })
    return out


@pytest.fixture(scope="module")
def lakes(spark_available, batches, tmp_path_factory) -> dict[str, Lake]:
    """`duckdb`: both batches on DuckDB; `duckdb+spark` and `spark+duckdb`: one batch on each engine."""
    built = {}
    for order in (("duckdb", "duckdb"), ("duckdb", "spark"), ("spark", "duckdb")):
        path = tmp_path_factory.mktemp("+".join(order))
        for engine, batch in zip(order, batches, strict=True):
            lake = Lake(Settings(lake=path, engine=engine))
            ingest_all(lake, batch)
            build_all(lake)
        built["+".join(dict.fromkeys(order))] = lake
    return built


@pytest.mark.parametrize("mixed", ["duckdb+spark", "spark+duckdb"])
def test_a_lake_continued_by_the_other_engine_equals_a_single_engine_lake(lakes, mixed):
    reference, continued = lakes["duckdb"].store, lakes[mixed].store
    for spec in BUILT + [default_catalog().get(n) for n in ("ops.ledger", "quarantine.clickstream")]:
        assert differences(reference.open(spec.name).to_pyarrow_table(),
                           continued.open(spec.name).to_pyarrow_table()) == [], spec.name


def test_a_second_ingest_of_the_same_files_by_the_other_engine_is_skipped(lakes, batches):
    from shoplake.ingest import ingest_files
    from shoplake.lake import new_run_id

    lake = Lake(Settings(lake=lakes["spark+duckdb"].settings.lake, engine="spark"))
    versions = {s.name: lake.store.version(s.name) for s in default_catalog()}
    results = ingest_files(lake, "clickstream", [str(batches[1]["clickstream"][0])], run_id=new_run_id())
    assert [r.status for r in results] == ["skipped"]
    assert {s.name: lake.store.version(s.name) for s in default_catalog()} == versions


def _readers(lake: Lake, name: str, version: int):
    from shoplake.engines.duckdb import DuckDBEngine

    spec = lake.catalog.get(name)
    path = str(lake.store.path(name))
    via_delta = lake.store.open(name, version).to_pyarrow_table()
    with DuckDBEngine(lake.settings, lake.store) as duck:
        duck.bind(spec, version=version)
        via_duckdb = duck.table(f"SELECT * FROM {name}")
    via_polars = pl.read_delta(path, version=version).to_arrow()
    return via_delta, via_duckdb, via_polars


@pytest.mark.parametrize("mixed, name", [("spark+duckdb", "silver.events"), ("duckdb+spark", "gold.user_features"),
                                         ("duckdb+spark", "silver.sales")])
def test_spark_written_versions_read_identically_everywhere(lakes, mixed, name):
    """Current and previous version of a table with one version written by each engine."""
    lake = lakes[mixed]
    latest = lake.store.version(name)
    commits = list(lake.store.commits(name))
    assert any(c.meta.get("rows_added") is not None for c in commits), "no version of it was written by Spark"
    for version in (latest - 1, latest):
        via_delta, via_duckdb, via_polars = _readers(lake, name, version)
        assert via_delta.num_rows > 0
        assert differences(via_delta, via_duckdb, drop=set()) == []
        assert differences(via_delta, via_polars.cast(via_delta.schema), drop=set()) == []


def test_a_parquet_source_ingests_identically_on_both_engines(spark_available, batches, tmp_path):
    """Parquet sources (typed timestamps and numbers) are read as text the same way by both engines."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from shoplake.ingest import ingest_files
    from shoplake.lake import new_run_id

    source = batches[0]["clickstream"][0]
    text = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(column_types={
        "event_time": pa.string(), "price": pa.string()}), parse_options=pacsv.ParseOptions(
        invalid_row_handler=lambda row: "skip"))
    # A typed event_time where it parses (bad ones stay out), prices typed: the file a shop might export.
    good = pc.is_valid(pc.strptime(text["event_time"], "%Y-%m-%d %H:%M:%S UTC", "us", error_is_null=True))
    text = text.filter(good)
    typed = text.set_column(0, "event_time", pc.strptime(text["event_time"], "%Y-%m-%d %H:%M:%S UTC", "us")
                            .cast(pa.timestamp("us", tz="UTC")))
    pq.write_table(typed, tmp_path / "events.parquet")
    tables = {}
    for engine in ("duckdb", "spark"):
        lake = Lake(Settings(lake=tmp_path / engine, engine=engine))
        ingest_files(lake, "clickstream", [str(tmp_path / "events.parquet")], run_id=new_run_id())
        tables[engine] = {n: lake.store.open(n).to_pyarrow_table() for n in ("bronze.clickstream",
                                                                             "quarantine.clickstream")}
    assert tables["duckdb"]["bronze.clickstream"].num_rows > 3000
    assert tables["duckdb"]["quarantine.clickstream"].num_rows > 0  # the bad prices
    for name in tables["duckdb"]:
        assert differences(tables["duckdb"][name], tables["spark"][name]) == [], name
