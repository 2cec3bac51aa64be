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


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_a_table_built_in_staged_parts_is_identical_on_both_engines(parity_lakes, engine, tmp_path, monkeypatch):
    """A split build (`TableSpec.split_by`) writes each part to staged files as soon as it is computed and
    commits them at once; on either engine its rows equal the other engine's table built in one part."""
    import shutil

    from shoplake.build import build_tables
    from shoplake.config import Settings
    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.engines.spark import SparkEngine
    from shoplake.lake import Lake

    name = "gold.funnel_product_view_to_purchase_entries"
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
