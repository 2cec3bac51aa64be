"""The engine layer without a JVM: SQL translation, committing foreign Parquet files to Delta, per-file
statistics, delta-spark commit metadata and the engine choice."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore, _decode_commit, file_stats, user_metadata
from shoplake.engines.spark_sql import java_datetime_pattern, to_spark
from shoplake.errors import EngineUnavailableError, QueryError
from shoplake.lake import Lake

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("price", pa.float64()),
                    ("at", pa.timestamp("us", tz="UTC")), ("day", pa.date32())])


def _rows(ids: range) -> pa.Table:
    at = dt.datetime(2019, 10, 1, 8, 30, 15, 123456, tzinfo=dt.UTC)
    return pa.table({"id": list(ids), "name": [f"n{i}" if i % 3 else None for i in ids],
                     "price": [i * 1.5 for i in ids], "at": [at + dt.timedelta(hours=i) for i in ids],
                     "day": [dt.date(2019, 10, 1) + dt.timedelta(days=i) for i in ids]}, schema=SCHEMA)


def _place(store: DeltaStore, name: str, tables: list[pa.Table], tag: str):
    folder = store.path(name)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, table in enumerate(tables):
        pq.write_table(table, folder / f"{tag}-{i}.parquet")
        files.append(folder / f"{tag}-{i}.parquet")
    return files


def test_java_patterns_quote_letters_and_refuse_unknown_directives():
    assert java_datetime_pattern("%Y-%m-%d %H:%M:%S UTC") == "yyyy-M-d H:m:s 'UTC'"
    assert java_datetime_pattern("%Y-%m-%dT%H:%M:%S") == "yyyy-M-d'T'H:m:s"
    with pytest.raises(QueryError, match="%j"):
        java_datetime_pattern("%Y %j")


def test_catalog_names_become_aliased_views():
    spark = to_spark("SELECT events.user_id, p.brand FROM silver.events JOIN silver.products AS p USING (x)")
    assert "silver__events AS events" in spark and "silver__products AS p" in spark
    assert "silver.events" not in spark


def test_commit_files_is_one_version_with_the_metadata_and_rows(tmp_path):
    store = DeltaStore(tmp_path)
    files = _place(store, "silver.things", [_rows(range(0, 4)), _rows(range(4, 10))], "a")
    version = store.commit_files("silver.things", files, SCHEMA, mode="append", description="things",
                                 meta={"write_key": "k1", "run_id": "r1", "batches": ["b1"]})
    assert version == 0
    table = DeltaTable(str(store.path("silver.things")))
    assert table.to_pyarrow_table().sort_by("id").equals(_rows(range(10)))
    assert table.metadata().description == "things"
    commit = store.find_write("silver.things", "k1")
    assert (commit.version, commit.rows_added, commit.meta["batches"]) == (0, 10, ["b1"])
    assert store.row_count("silver.things") == 10  # from the committed statistics

    more = _place(store, "silver.things", [_rows(range(10, 12))], "b")
    assert store.commit_files("silver.things", more, SCHEMA, mode="append", meta={"write_key": "k2"}) == 1
    assert store.commit_files("silver.things", [], SCHEMA, mode="append", meta={"write_key": "k3"}) == 2
    assert store.find_write("silver.things", "k3").rows_added == 0
    assert store.row_count("silver.things") == 12

    replaced = _place(store, "silver.things", [_rows(range(100, 103))], "c")
    assert store.commit_files("silver.things", replaced, SCHEMA, mode="overwrite", meta={"write_key": "k4"}) == 3
    assert sorted(store.open("silver.things").to_pyarrow_table()["id"].to_pylist()) == [100, 101, 102]
    assert store.open("silver.things", 1).to_pyarrow_table().num_rows == 12  # time travel


def test_commit_files_refuses_a_file_whose_columns_or_types_are_not_the_declared_ones(tmp_path):
    # delta-rs checks the rows it writes itself; a file staged by an engine is checked from its footer.
    store = DeltaStore(tmp_path)
    store.commit_files("silver.things", _place(store, "silver.things", [_rows(range(3))], "a"), SCHEMA,
                       mode="append", meta={"write_key": "k1"})
    rows = _rows(range(3, 6))
    narrow = rows.set_column(0, pa.field("id", pa.int32()), rows.column("id").cast(pa.int32()))
    for bad, words in ((narrow, "has id as int32, the table declares int64"),
                       (rows.drop_columns(["day"]), "has the columns"),
                       (rows.append_column("extra", pa.array([1, 2, 3])), "has the columns")):
        files = _place(store, "silver.things", [rows, bad], "b")
        with pytest.raises(QueryError, match=words):
            store.commit_files("silver.things", files, SCHEMA, mode="append", meta={"write_key": "k2"})
        assert store.version("silver.things") == 0 and store.row_count("silver.things") == 3  # nothing added
    # Columns in another order are the same columns.
    reordered = _place(store, "silver.things", [rows.select(list(reversed(SCHEMA.names)))], "c")
    assert store.commit_files("silver.things", reordered, SCHEMA, mode="append", meta={"write_key": "k3"}) == 1


def test_the_cached_commit_log_sees_other_writers_and_a_recreated_table(tmp_path):
    reader, writer = DeltaStore(tmp_path), DeltaStore(tmp_path)  # two processes' stores on one lake
    writer.write("silver.things", _rows(range(3)), mode="append", meta={"write_key": "k1"})
    assert reader.find_write("silver.things", "k1").version == 0
    assert reader.find_write("silver.things", "k2") is None
    writer.write("silver.things", _rows(range(3, 5)), mode="append", meta={"write_key": "k2"})
    assert reader.find_write("silver.things", "k2").version == 1  # read since the last call
    assert list(reader.commits("silver.things")) == list(reversed(reader.history("silver.things")))

    shutil.rmtree(writer.path("silver.things"))  # recreated: the cached commits belong to another table
    writer.write("silver.things", _rows(range(2)), mode="append", meta={"write_key": "k9"})
    assert reader.find_write("silver.things", "k1") is None
    assert [c.meta["write_key"] for c in reader.commits("silver.things")] == ["k9"]


def test_file_stats_match_the_values_and_leave_out_what_could_mislead(tmp_path):
    rows = _rows(range(5))
    rows = rows.set_column(2, "price", pa.array([1.0, float("nan"), 2.0, 3.0, 4.0]))
    rows = rows.set_column(1, "name", pa.array(["b", "a" * 100, None, "c", "d"]))
    pq.write_table(rows, tmp_path / "f.parquet")
    stats = file_stats(tmp_path / "f.parquet")
    assert stats["numRecords"] == 5
    assert stats["nullCount"] == {"id": 0, "name": 1, "price": 0, "at": 0, "day": 0}
    assert (stats["minValues"]["id"], stats["maxValues"]["id"]) == (0, 4)
    assert (stats["minValues"]["day"], stats["maxValues"]["day"]) == ("2019-10-01", "2019-10-05")
    assert (stats["minValues"]["at"], stats["maxValues"]["at"]) == ("2019-10-01T08:30:15.123Z",
                                                                    "2019-10-01T12:30:15.123Z")
    assert "name" not in stats["minValues"]  # a 100-character value
    assert "price" not in stats["minValues"] or stats["minValues"]["price"] == 1.0


def test_delta_spark_commits_carry_the_keys_in_user_metadata():
    entry = {"version": 3, "timestamp": 1_700_000_000_000, "operation": "WRITE",
             "operationMetrics": {"numOutputRows": "42"},
             "userMetadata": user_metadata({"write_key": "silver.events:abc", "batches": ["b1", "b2"]})}
    commit = _decode_commit(entry)
    assert commit.meta["write_key"] == "silver.events:abc"
    assert commit.meta["batches"] == ["b1", "b2"]
    assert commit.rows_added == 42


class _FakeWriter:
    def __init__(self, log):
        self.log = log

    def format(self, name):
        self.log.append(("format", name))
        return self

    def mode(self, mode):
        self.log.append(("mode", mode))
        return self

    def option(self, key, value):
        self.log.append(("option", key, value))
        return self

    def save(self, path):
        self.log.append(("save", path))


def test_with_delta_jars_spark_writes_format_delta_with_the_keys(tmp_path, monkeypatch):
    """Unit test with a stand-in session: the delta-spark jars are not available here."""
    from shoplake.catalog import default_catalog
    from shoplake.engines import spark as spark_engine

    log: list = []

    class FakeSpark:
        def sql(self, sql, args=None):
            log.append(("sql", sql))
            return type("Frame", (), {"write": _FakeWriter(log)})()

    monkeypatch.setattr(spark_engine, "spark_session", lambda settings: FakeSpark())
    settings = Settings(lake=tmp_path, engine="spark", spark_delta_jars=True, spill_dir=tmp_path / "spill")
    store = DeltaStore(tmp_path)
    store.write("gold.daily_funnel", default_catalog().get("gold.daily_funnel").arrow_schema.empty_table(),
                mode="append", meta={"write_key": "seed"})  # what delta-spark would have committed
    engine = spark_engine.SparkEngine(settings, store)
    engine.write_table(store, default_catalog().get("gold.daily_funnel"), "SELECT * FROM candidate",
                       mode="overwrite", meta={"write_key": "gold.daily_funnel:r1", "run_id": "r1"})
    assert ("format", "delta") in log and ("mode", "overwrite") in log
    assert ("save", str(store.path("gold.daily_funnel"))) in log
    user = next(entry[2] for entry in log if entry[:2] == ("option", "userMetadata"))
    assert json.loads(user) == {"shoplake.write_key": "gold.daily_funnel:r1", "shoplake.run_id": "r1"}


def test_spark_without_pyspark_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(EngineUnavailableError, match="spark"):
        Lake(Settings(lake=tmp_path, engine="spark")).engine()


def _session_options(monkeypatch) -> dict:
    """Stop `spark_session` where it would start the JVM; the options it gave the builder land in the dict."""
    from pyspark.sql import SparkSession

    given: dict = {}

    def no_jvm(builder):
        given.update(builder._options)
        raise RuntimeError("the test stops before the JVM")

    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", no_jvm)
    return given


def test_unreachable_spark_master_is_one_line_error_before_spark_starts(tmp_path, monkeypatch):
    pytest.importorskip("pyspark")
    given = _session_options(monkeypatch)
    with socket.socket() as unused:  # a loopback port that nothing listens on once closed
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = Settings(lake=tmp_path, engine="spark", spark_master=f"spark://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(EngineUnavailableError,
                       match=rf"^spark master spark://127.0.0.1:{port} is not reachable \(127.0.0.1:{port}: "):
        Lake(settings).engine()
    assert given == {} and time.monotonic() - started < 5


def test_loopback_spark_master_keeps_the_driver_on_loopback(tmp_path, monkeypatch):
    """Executors of a master on 127.0.0.1 connect back to the driver: it must listen there too."""
    pytest.importorskip("pyspark")
    given = _session_options(monkeypatch)
    with socket.socket() as master:
        master.bind(("127.0.0.1", 0))
        master.listen()
        url = f"spark://127.0.0.1:{master.getsockname()[1]}"
        with pytest.raises(EngineUnavailableError, match="the test stops before the JVM"):
            Lake(Settings(lake=tmp_path, engine="spark", spark_master=url)).engine()
    assert given["spark.master"] == url
    assert (given["spark.driver.host"], given["spark.driver.bindAddress"]) == ("127.0.0.1", "127.0.0.1")


def test_interactive_sql_runs_embedded_with_the_spark_engine_configured(tmp_path):
    """`shoplake --engine spark sql ...` (and the dashboard/API) read on DuckDB: its sandbox, time travel
    and timeouts exist only there, and an ad-hoc query should not start a JVM."""
    from shoplake.engines.base import Capability
    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.engines.spark import SparkEngine
    from shoplake.query import run_query

    lake = Lake(Settings(lake=tmp_path, engine="spark"))
    lake.store.write("gold.daily_funnel", pa.table({"n": [1, 2]}), mode="append", meta={"write_key": "a"})
    lake.store.write("gold.daily_funnel", pa.table({"n": [3]}), mode="append", meta={"write_key": "b"})
    # Spark is configured, but lacks what interactive SQL needs: the session asked for is embedded.
    assert lake.engine_class() is SparkEngine
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        assert isinstance(engine, DuckDBEngine)
    now = run_query(lake, "SELECT sum(n) AS s FROM gold.daily_funnel").to_pylist()
    before = run_query(lake, "SELECT sum(n) AS s FROM gold.daily_funnel VERSION AS OF 0").to_pylist()
    assert (now, before) == ([{"s": 6}], [{"s": 3}])


def test_engines_implement_the_protocol_and_declare_capabilities(tmp_path):
    from shoplake.engines.base import ENGINES, Capability, Engine
    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.engines.spark import SparkEngine

    assert {name: Lake(Settings(lake=tmp_path, engine=name)).engine_class() for name in ENGINES} == {
        "duckdb": DuckDBEngine, "spark": SparkEngine}
    # Every method of the protocol exists on both classes, with the same keyword options for `bind`.
    members = [m for m in vars(Engine) if not m.startswith("_") and callable(getattr(Engine, m))]
    for engine_class in (DuckDBEngine, SparkEngine):
        assert all(callable(getattr(engine_class, m, None)) for m in members), engine_class
        assert all(isinstance(c, Capability) for c in engine_class.capabilities)
    # Source files: streamed to ingestion, or staged as Bronze files by the engine's workers, by capability.
    assert callable(getattr(DuckDBEngine, "read_source", None)) and not hasattr(DuckDBEngine, "stage_source")
    assert callable(getattr(SparkEngine, "stage_source", None)) and not hasattr(SparkEngine, "read_source")
    assert DuckDBEngine.capabilities == {Capability.EMBEDDED_SQL}
    assert SparkEngine.capabilities == {Capability.DISTRIBUTED_INFERENCE, Capability.DISTRIBUTED_INGEST}
    with Lake(Settings(lake=tmp_path)).engine() as engine:
        assert isinstance(engine, Engine)


def test_running_out_of_memory_is_one_line_naming_the_setting(tmp_path):
    """A query that cannot fit the engine's memory limit (a list aggregate does not spill) fails with an
    error a user can act on, which the build reports as a failed table instead of a traceback."""
    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.errors import EngineMemoryError

    lake = Lake(Settings(lake=tmp_path, memory_limit="32MB", threads=1))
    with DuckDBEngine(lake.settings, lake.store) as engine:
        for run in (lambda sql: engine.materialize("big", sql), engine.table, engine.rows):
            with pytest.raises(EngineMemoryError) as raised:
                run("SELECT list(i) AS l FROM range(20000000) AS t(i)")
            assert isinstance(raised.value, QueryError)
            message = str(raised.value)
            assert "\n" not in message and "memory_limit 32MB" in message and "SHOPLAKE_MEMORY_LIMIT" in message
        engine.materialize("small", "SELECT 1 AS one")  # the session still works
        assert engine.rows("SELECT one FROM small") == [(1,)]


def test_a_query_whose_shared_ctes_do_not_fit_runs_again_with_them_inlined(tmp_path):
    """DuckDB holds a CTE read twice in memory; when that runs out of memory, `materialize` runs the
    query again with every CTE inlined (recomputed where read, so it streams and spills). DuckDB's own
    out-of-memory error is simulated here (the real case needs 10M events: bench/RESULTS.md)."""
    import duckdb

    from shoplake.engines.duckdb import DuckDBEngine
    from shoplake.errors import EngineMemoryError

    class ShortOfMemory:
        """The connection, but every statement with a materialized CTE (or a stored shared one) runs out of
        memory."""

        def __init__(self, con):
            self.con, self.statements = con, []

        def execute(self, sql, params=None):
            self.statements.append(sql)
            stores_shared = sql.startswith('CREATE OR REPLACE TEMP TABLE "__shared_')
            if ("WITH " in sql and "NOT MATERIALIZED" not in sql) or "range(" in sql or stores_shared:
                raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
            return self.con.execute(sql, params or [])

    lake = Lake(Settings(lake=tmp_path))
    with DuckDBEngine(lake.settings, lake.store) as engine:
        short = ShortOfMemory(engine.con)
        engine.con = short
        try:
            engine.materialize("result", "WITH a AS (SELECT 2 AS x), b AS (SELECT x * 3 AS y FROM a) "
                                         "SELECT x, y FROM a, b")
            # tried: the query, its shared CTE `a` stored first (out of memory too here), then all inlined
            assert len(short.statements) == 4 and short.statements[-1].count("AS NOT MATERIALIZED (") == 2
            assert engine.rows("SELECT x, y FROM result") == [(2, 6)]
            with pytest.raises(EngineMemoryError, match="memory_limit"):  # no CTE: nothing else to try
                engine.materialize("plain", "SELECT count(*) AS n FROM range(3)")
        finally:
            engine.con = short.con


def test_shared_ctes_out_of_memory_are_stored_once_as_temporary_tables(tmp_path):
    """When a query's shared CTEs run out of memory, each CTE read more than once is stored first as a
    temporary table (which spills), the CTEs read once stay inline, the result is the query's own, and the
    temporary tables are dropped afterwards. DuckDB's out-of-memory error is simulated."""
    import duckdb

    from shoplake.engines.duckdb import DuckDBEngine

    class SharedCtesOutOfMemory:
        def __init__(self, con):
            self.con, self.statements = con, []

        def execute(self, sql, params=None):
            self.statements.append(sql)
            if "WITH " in sql and "NOT MATERIALIZED" not in sql:
                raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")
            return self.con.execute(sql, params or [])

    query = ("WITH base AS (SELECT range AS x FROM range(5)), once AS (SELECT x + 1 AS y FROM base), "
             "twice AS (SELECT y * 10 AS z FROM once WHERE y > 1) "
             "SELECT a.z AS a, b.z AS b FROM twice AS a JOIN twice AS b ON b.z = a.z + 10 "
             "UNION ALL SELECT x, NULL FROM base WHERE x = 0")
    lake = Lake(Settings(lake=tmp_path))
    with DuckDBEngine(lake.settings, lake.store) as engine:
        expected = sorted(engine.rows(query), key=str)
        short = SharedCtesOutOfMemory(engine.con)
        engine.con = short
        try:
            engine.materialize("result", f"SELECT CAST(a AS BIGINT) AS a, b FROM ({query}) AS typed")  # as a build
        finally:
            engine.con = short.con
        stored = [s for s in short.statements if s.startswith("CREATE OR REPLACE TEMP TABLE \"__shared_")]
        assert [s.split('"')[1] for s in stored] == ["__shared_base", "__shared_twice"]  # `once` is read once
        assert "once AS NOT MATERIALIZED" in stored[1]
        assert sorted(engine.rows("SELECT a, b FROM result"), key=str) == expected and len(expected) == 4
        assert engine.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '__shared_%'") == [(0,)]


_SPILLING_CHILD = """
import sys
from pathlib import Path
from shoplake.config import Settings
from shoplake.engines.duckdb import DuckDBEngine
from shoplake.lake import Lake

lake = Lake(Settings(lake=Path(sys.argv[1]), spill_dir=Path(sys.argv[2]), memory_limit="64MB", threads=1))
with DuckDBEngine(lake.settings, lake.store) as engine:
    spill = engine.rows("SELECT current_setting('temp_directory')")[0][0]
    print(spill, flush=True)
    for _ in range(3):
        # Sorting 4M rows of text under a 64MB limit spills; the checksum proves no spilled block was lost.
        engine.materialize("sorted", "SELECT i, md5(CAST(i AS VARCHAR)) AS h FROM range(4000000) AS t(i) ORDER BY h")
        rows = engine.rows("SELECT count(*), sum(i), count(DISTINCT h) FROM sorted")
        assert rows == [(4000000, 4000000 * 3999999 // 2, 4000000)], rows
print("ok", flush=True)
"""


def test_two_processes_spilling_into_one_spill_dir_keep_their_own_files(tmp_path):
    """DuckDB names spill files by block size and number only: two processes spilling into one folder
    deleted each other's files ("Could not remove file ..."). Each engine session spills into a folder of
    its own, removed when it closes; a folder left by a dead process is removed by the next session."""
    import subprocess

    from shoplake.engines.duckdb import DuckDBEngine

    spill_root = tmp_path / "spill"
    stale = spill_root / "duckdb-999999999-x"  # no process has this id
    stale.mkdir(parents=True)
    children = [subprocess.Popen([sys.executable, "-c", _SPILLING_CHILD, str(tmp_path / f"lake{i}"),
                                  str(spill_root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(2)]
    outputs = [child.communicate(timeout=600) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-2000:]
        assert out.splitlines()[-1] == "ok"
    folders = [out.splitlines()[0] for out, _ in outputs]
    assert folders[0] != folders[1] and all(folder.startswith(str(spill_root)) for folder in folders)
    assert not stale.exists()
    assert list(spill_root.iterdir()) == []  # each session removed its folder on close
    lake = Lake(Settings(lake=tmp_path / "lake", spill_dir=spill_root))
    with DuckDBEngine(lake.settings, lake.store):
        assert len(list(spill_root.iterdir())) == 1
    assert list(spill_root.iterdir()) == []


def test_parts_for_a_split_build_grow_with_the_rows_and_shrink_with_the_memory_limit(tmp_path):
    from shoplake.engines.duckdb import SPLIT_ROWS_PER_GB, DuckDBEngine, _size_bytes

    assert [_size_bytes(t) for t in ("1.8 GiB", "2GB", "500 MB", "512KiB")] == [
        int(1.8 * 2**30), 2 * 10**9, 500 * 10**6, 512 * 1024]
    with pytest.raises(ValueError, match="not a size"):
        _size_bytes("lots")
    counts = {}
    for limit in ("1GB", "4GB"):
        lake = Lake(Settings(lake=tmp_path, memory_limit=limit))
        with DuckDBEngine(lake.settings, lake.store) as engine:
            per_part = int(SPLIT_ROWS_PER_GB * int(limit[0]) * 10**9 / 2**30)  # the configured limit, exactly
            # the nearest count: one part up to 1.5 parts' rows, two from there
            half = per_part // 2
            assert [engine.parts_for(n) for n in (0, 1, per_part, per_part + half - 1, per_part + half + 1,
                                                  2 * per_part)] == [1, 1, 1, 1, 2, 2]
            counts[limit] = engine.parts_for(42_000_000)
    assert counts["1GB"] > counts["4GB"] > 1
    # the demo's 1,998,064 events build whole at the 2GB default (DuckDB shows it as '1.8 GiB', which split them)
    lake = Lake(Settings(lake=tmp_path, memory_limit="2GB"))
    with DuckDBEngine(lake.settings, lake.store) as engine:
        assert engine.parts_for(1_998_064) == 1
        assert engine.parts_for(10_000_000) == 5
    # no limit configured: DuckDB's own default (a share of the RAM) is read instead
    lake = Lake(Settings(lake=tmp_path, memory_limit=None))
    with DuckDBEngine(lake.settings, lake.store) as engine:
        shown = _size_bytes(engine.rows("SELECT current_setting('memory_limit')")[0][0])
        per_part = int(SPLIT_ROWS_PER_GB * shown / 2**30)
        assert [engine.parts_for(n) for n in (1, per_part, 3 * per_part)] == [1, 1, 3]


def test_a_write_of_stored_rows_leaves_part_of_the_memory_limit_to_the_delta_writer(tmp_path):
    from shoplake.catalog import default_catalog
    from shoplake.engines.duckdb import WRITE_MEMORY_SHARE, DuckDBEngine, _size_bytes

    store = DeltaStore(tmp_path)
    spec = default_catalog().get("gold.daily_funnel")  # only its name is used: the rows are the query's
    limit_now = "SELECT current_setting('memory_limit') AS limit_in_query"
    seen = {}
    with DuckDBEngine(Settings(lake=tmp_path, memory_limit="1GB", spill_dir=tmp_path / "spill"), store) as engine:
        before = engine.rows(limit_now)[0][0]
        for scans_stored in (True, False):
            engine.write_table(store, spec, limit_now, mode="overwrite", meta={"write_key": str(scans_stored)},
                               scans_stored=scans_stored)
            seen[scans_stored] = DeltaTable(str(store.path(spec.name))).to_pyarrow_table()["limit_in_query"][0].as_py()
            assert engine.rows(limit_now)[0][0] == before  # the configured limit is back after the write
    assert _size_bytes(seen[False]) == _size_bytes(before)
    assert _size_bytes(seen[True]) == pytest.approx(WRITE_MEMORY_SHARE * 1e9, rel=0.06)  # shown rounded


def test_spark_ingest_counts_rows_per_split_from_footers_and_refuses_a_file_of_several_splits(tmp_path):
    """Spark's ingest numbers rows from each split's count, read from the footers of the scratch files its
    tasks wrote; a file holding rows of two splits would make those counts wrong, so it is refused."""
    from shoplake.engines.spark import _rows_per_split

    folder = tmp_path / "scratch"
    folder.mkdir()
    pq.write_table(pa.table({"_split": pa.array([0, 0, 0], pa.int32())}), folder / "part-00000-a.parquet")
    pq.write_table(pa.table({"_split": pa.array([2, 2], pa.int32())}), folder / "part-00002-a.parquet",
                   row_group_size=1)  # two row groups of the same split
    pq.write_table(pa.table({"_split": pa.array([], pa.int32())}), folder / "part-00003-a.parquet")
    assert _rows_per_split(folder) == {0: 3, 2: 2}
    pq.write_table(pa.table({"_split": pa.array([4, 5], pa.int32())}), folder / "part-00004-a.parquet")
    with pytest.raises(QueryError, match="several splits"):
        _rows_per_split(folder)


def test_a_session_folder_removes_the_folders_of_dead_processes_of_its_own_prefix_only(tmp_path):
    """Spark's ingest scratch (and DuckDB's spill) live in per-process folders; a process killed before it
    cleaned up leaves one, which the next session under the same root removes. The prefix names the machine
    for Spark (the root may be shared between machines), so another machine's folders are left alone."""
    import os
    import subprocess

    from shoplake.engines.scratch import session_folder

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    prefix = "spark-engine-thishost-"
    left = tmp_path / f"{prefix}{dead}-abc"
    (left / "source-1").mkdir(parents=True)
    (left / "source-1" / "part-0.parquet").write_bytes(b"parsed lines of a killed ingest")
    running = tmp_path / f"{prefix}{os.getpid()}-def"
    other_machine = tmp_path / f"spark-engine-otherhost-{dead}-ghi"
    duckdb_spill = tmp_path / f"duckdb-{dead}-jkl"
    for folder in (running, other_machine, duckdb_spill):
        folder.mkdir()

    mine = session_folder(tmp_path, prefix)
    assert mine.name.startswith(f"{prefix}{os.getpid()}-") and mine.is_dir()
    assert not left.exists()
    assert running.exists() and other_machine.exists() and duckdb_spill.exists()


def test_a_part_of_a_snapshot_holds_exactly_its_rows_and_columns_from_buckets_written_once(tmp_path):
    """`bind_part` (DuckDB) writes the snapshot's rows once into buckets by part and binds each part to its
    bucket: every part has exactly the rows of `part_filter` (negative values by their modulo, NULLs in part
    0), with the snapshot's columns and types; an empty part reads as the empty filtered snapshot; a part of
    the same snapshot again reads the same buckets; the session removes them when it closes."""
    from shoplake.catalog.spec import TableSpec, col
    from shoplake.engines.base import part_filter
    from shoplake.engines.duckdb import DuckDBEngine

    spec = TableSpec(name="silver.things", description="One row per id.", grain=("id",),
                     columns=(col("id", "BIGINT"), col("name", "VARCHAR"), col("price", "DOUBLE"),
                              col("at", "TIMESTAMPTZ"), col("day", "DATE")), build="ingest")
    store = DeltaStore(tmp_path / "lake")
    rows = _rows(range(-7, 30))
    rows = rows.set_column(0, "id", pa.array([None if i == 3 else i for i in range(-7, 30)], pa.int64()))
    store.write(spec.name, rows, mode="overwrite", description=spec.description, meta={})
    # a later version: the parts read the version asked for
    store.write(spec.name, _rows(range(100, 107)), mode="append", description=spec.description, meta={})
    copies = []
    with DuckDBEngine(Settings(lake=tmp_path / "lake", spill_dir=tmp_path / "spill"), store) as engine:
        engine.con = _Recording(engine.con, copies)
        for count in (4, 50):
            seen = []
            for index in range(count):
                engine.bind_part(spec, version=0, column="id", count=count, index=index)
                part = engine.table("SELECT * FROM silver.things ORDER BY id NULLS FIRST")
                engine.bind(spec, version=0, where=part_filter("id", count, index))
                expected = engine.table("SELECT * FROM silver.things ORDER BY id NULLS FIRST")
                assert part.schema == expected.schema and part.to_pylist() == expected.to_pylist()
                seen += part.column("id").to_pylist()
            assert sorted(seen, key=lambda i: (i is not None, i)) == [None, *sorted(set(range(-7, 30)) - {3})]
        engine.bind_part(spec, version=0, column="id", count=4, index=1)  # the same buckets again
        assert len([c for c in copies if c.startswith("COPY")]) == 2  # one write per (snapshot, count)
        with pytest.raises(QueryError, match="nothing"):  # a failed write: one line, and nothing kept
            engine.bind_part(spec, version=1, column="nothing", count=4, index=0)
        engine.bind_part(spec, version=1, column="id", count=4, index=0)  # the next write works
        assert 100 in engine.table("SELECT id FROM silver.things").column("id").to_pylist()
        assert len(list((tmp_path / "spill").rglob("*.parquet"))) > 0
    assert not list((tmp_path / "spill").rglob("*.parquet"))


def test_staged_rows_are_one_file_in_the_given_order_committed_as_written_and_failures_leave_nothing(tmp_path):
    """`stage` (DuckDB) writes a query's rows as one uncommitted Parquet file in the table folder, in the
    query's order and with its types, however many row groups they fill; an empty result stages no file; a
    query that fails while writing is one line and leaves no file; the staged file, committed, reads back as
    the same rows."""
    from shoplake.catalog.spec import TableSpec, col
    from shoplake.engines.duckdb import DuckDBEngine

    spec = TableSpec(name="gold.things", description="One row per id.", grain=("id",),
                     columns=(col("id", "BIGINT"), col("name", "VARCHAR"), col("price", "DOUBLE"),
                              col("at", "TIMESTAMPTZ"), col("day", "DATE")), build="ingest")
    store = DeltaStore(tmp_path / "lake")
    with DuckDBEngine(Settings(lake=tmp_path / "lake", spill_dir=tmp_path / "spill"), store) as engine:
        engine.con.register("things", _rows(range(-50, 250)))
        ordered = "SELECT * FROM things ORDER BY name DESC NULLS FIRST, id DESC"
        files = engine.stage(store, spec, ordered)
        assert len(files) == 1 and files[0].parent == store.path(spec.name) and files[0].suffix == ".parquet"
        written = pq.read_table(files[0])
        assert written.schema == SCHEMA  # the same types as the table's declared columns
        assert written.to_pylist() == engine.table(ordered).to_pylist()
        assert engine.stage(store, spec, "SELECT * FROM things WHERE id > 10000") == []
        with pytest.raises(QueryError) as failed:  # fails on a row past the first ones written
            engine.stage(store, spec, "SELECT id, name, price, at, day, CAST(CASE WHEN id = 200 THEN 'x' "
                                      "ELSE id END AS INTEGER) AS boom FROM things")
        assert "\n" not in str(failed.value)
        assert sorted(store.path(spec.name).glob("*.parquet")) == files  # nothing left by either
        store.commit_files(spec.name, files, SCHEMA, mode="overwrite", meta={})
        assert DeltaTable(str(store.path(spec.name))).to_pyarrow_table().to_pylist() == written.to_pylist()
        # Many row groups, written by both threads, still in the query's order.
        many = engine.stage(store, spec, "SELECT (i * 7919) % 600000 AS id, md5(CAST(i AS VARCHAR)) AS name "
                                         "FROM range(600000) AS r (i) ORDER BY name DESC")
        assert len(many) == 1 and pq.ParquetFile(many[0]).num_row_groups > 2
        names = pq.read_table(many[0]).column("name").to_pylist()
        assert len(names) == 600000 and names == sorted(names, reverse=True)


class _Recording:
    """A DuckDB connection that records the statements run through it."""

    def __init__(self, con, statements: list[str]):
        self._con, self._statements = con, statements

    def execute(self, statement, *args, **kwargs):
        self._statements.append(statement)
        return self._con.execute(statement, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)
