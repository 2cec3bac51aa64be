"""Engine parity: every Bronze, Silver, Gold and quarantine table, and the row accounting, built by
DuckDB and by Spark from the same inputs (the real UCI file, 200k generated events), row by row."""

from __future__ import annotations

import pytest

from shoplake.catalog import default_catalog

from .compare import differences

# Declared once in the catalog: the tables the build and ingestion write (ML tables are not built here).
BUILT = [s.name for s in default_catalog()
         if s.build in ("ingest", "incremental", "full") or s.name.startswith("quarantine.")]
ACCOUNTING = ["ops.ledger", "ops.data_quality"]


@pytest.mark.parametrize("name", BUILT + ACCOUNTING)
def test_table_identical_on_both_engines(parity_lakes, name):
    duck, spark = (parity_lakes[e].store for e in ("duckdb", "spark"))
    left, right = duck.open(name).to_pyarrow_table(), spark.open(name).to_pyarrow_table()
    assert left.num_rows > 0 or name == "quarantine.products", f"{name} is empty: the comparison proves nothing"
    assert differences(left, right) == []


def test_tables_have_the_same_commits_and_write_keys(parity_lakes):
    """Exactly-once metadata: the same commits, in the same order, with the same write keys and rows."""
    stores = [parity_lakes[e].store for e in ("duckdb", "spark")]
    for spec in default_catalog():
        if spec.name not in BUILT:
            continue
        history = []
        for store in stores:
            commits = list(store.commits(spec.name))
            # A full rebuild's write key names its run, which differs between the two runs.
            keys = [(c.meta.get("write_key") or "").replace(c.meta.get("run_id") or "<none>", "<run>")
                    for c in commits]
            history.append([(c.version, key, c.rows_added, c.meta.get("batches"))
                            for c, key in zip(commits, keys, strict=True)])
        assert history[0] == history[1], spec.name


@pytest.mark.parametrize("name", ["gold.funnel_product_view_to_purchase_entries", "gold.user_features"])
@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_a_table_built_in_staged_parts_is_identical_on_both_engines(parity_lakes, engine, name, tmp_path,
                                                                   monkeypatch):
    """A split build (`TableSpec.split_by`) writes each part to staged files as soon as it is computed and
    commits them at once; on either engine its rows equal the other engine's table built in one part (for
    user_features, with its shared relation, the latest event of all users, computed before the parts)."""
    import shutil

    from shoplake.build import build_tables
    from shoplake.config import Settings
    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.engines.spark import SparkEngine
    from shoplake.lake import Lake

    monkeypatch.setattr(DuckDBEngine if engine == "duckdb" else SparkEngine, "parts_for", lambda self, rows: 3)
    copy = tmp_path / "lake"
    shutil.copytree(parity_lakes[engine].settings.lake, copy)
    lake = Lake(Settings(lake=copy, engine=engine))
    shutil.rmtree(lake.store.path(name))  # built again, in parts
    (result,) = build_tables(lake, name, run_id="parts")
    assert result.status == "built", result.message
    assert len(lake.store.open(name).file_uris()) >= 3  # the parts' own files
    other = parity_lakes["spark" if engine == "duckdb" else "duckdb"].store.open(name).to_pyarrow_table()
    ours = lake.store.open(name).to_pyarrow_table()
    assert ours.num_rows > 0 and differences(ours, other) == []


def test_spark_ingest_in_many_splits_numbers_rows_and_lines_as_one_pass_would(parity_lakes, parity_inputs,
                                                                               tmp_path, monkeypatch):
    """Spark's executors parse a file's splits side by side and write Bronze themselves: each task numbers
    its split's lines, and the splits' counts and the lines that are not rows (counted per block of lines)
    give each row its number. With the file cut into many small splits of many small blocks, Bronze and
    quarantine (row numbers, line numbers of refused lines) still equal the embedded engine's, which reads
    the file in one ordered pass."""
    import pyarrow.compute as pc
    from pyspark.sql import SparkSession

    from shoplake.config import Settings
    from shoplake.engines import spark as spark_engine
    from shoplake.engines.delta import DeltaStore

    monkeypatch.setattr(spark_engine, "_BLOCK_BITS", 6)  # blocks of 64 lines: ~30 per split, most without a refusal

    def written_here(*args, **kwargs):
        raise AssertionError("the rows passed through this process: it wrote Bronze files itself")

    monkeypatch.setattr(DeltaStore, "stage", written_here)
    from shoplake.ingest import ingest_files
    from shoplake.lake import Lake, new_run_id

    spark = SparkSession.getActiveSession()
    assert spark is not None
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(256 * 1024))  # ~13 MB of text: ~50 splits
    try:
        lake = Lake(Settings(lake=tmp_path / "lake", engine="spark"))
        (result,) = ingest_files(lake, "clickstream", [str(p) for p in parity_inputs["clickstream"]],
                                 run_id=new_run_id())
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.status == "ingested"
    assert len(lake.store.open("bronze.clickstream").file_uris()) >= 10  # written by many tasks
    reasons = set(lake.store.open("quarantine.clickstream").to_pyarrow_table().column("reason").to_pylist())
    # Both kinds of refusal are numbered: lines refused whole (line offsets) and rows with a bad value (row
    # offsets, then mapped to lines).
    assert "wrong_column_count" in reasons and any(r.startswith("invalid_") for r in reasons), reasons
    for name in ("bronze.clickstream", "quarantine.clickstream"):
        ours, embedded = (store.open(name).to_pyarrow_table() for store in (lake.store, parity_lakes["duckdb"].store))
        if name.startswith("quarantine."):  # the embedded lake was built further: its Silver refusals too
            embedded = embedded.filter(pc.equal(embedded.column("_stage"), "ingest"))
        assert ours.num_rows > 0 and differences(ours, embedded) == [], name
