"""Each place where sqlglot's DuckDB -> Spark translation is overridden (engines/spark_sql.py), run on
both engines over the same input and checked against Python's own answer."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest

from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.engines.duckdb import DuckDBEngine
from shoplake.sources.schemas import CLICKSTREAM, RETAIL

UTC = dt.UTC


@pytest.fixture(scope="module")
def engines(spark_available, tmp_path_factory):
    from shoplake.engines.spark import SparkEngine

    lake = tmp_path_factory.mktemp("overrides")
    settings = Settings(lake=lake)
    with DuckDBEngine(settings, DeltaStore(lake)) as duck, SparkEngine(settings, DeltaStore(lake)) as spark:
        yield {"duckdb": duck, "spark": spark}


def run_both(engines, name: str, data: pa.Table, sql: str) -> list[list]:
    """The rows of `sql` over `data` bound as `name`, on each engine (must agree), in input order."""
    results = []
    for engine in engines.values():
        engine.bind_arrow(name, data)
        results.append(engine.table(sql).to_pylist())
    assert results[0] == results[1]
    return results[0]


def test_isodow_is_iso_on_both_engines(engines):
    days = [dt.datetime(2019, 9, 29, 12, tzinfo=UTC) + dt.timedelta(days=i) for i in range(9)]
    data = pa.table({"i": range(len(days)), "t": pa.array(days, pa.timestamp("us", tz="UTC"))})
    rows = run_both(engines, "days", data, "SELECT i, CAST(isodow(t) AS INTEGER) AS d FROM days ORDER BY i")
    assert [r["d"] for r in rows] == [d.isoweekday() for d in days]


def test_epoch_of_an_interval_and_of_a_timestamp(engines):
    start = dt.datetime(2019, 10, 1, tzinfo=UTC)
    ends = [start + dt.timedelta(days=d, seconds=s, microseconds=m) for d, s, m in
            [(0, 0, 0), (0, 86399, 999999), (1, 0, 0), (3, 7200, 500000), (40, 1, 250000)]]
    data = pa.table({"i": range(len(ends)), "a": pa.array([start] * len(ends), pa.timestamp("us", tz="UTC")),
                     "b": pa.array(ends, pa.timestamp("us", tz="UTC"))})
    rows = run_both(engines, "spans", data,
                    "SELECT i, CAST(floor(epoch(b - a) / 86400) AS BIGINT) AS days, epoch(b) AS seconds "
                    "FROM spans ORDER BY i")
    assert [r["days"] for r in rows] == [math.floor((e - start).total_seconds() / 86400) for e in ends]
    assert [r["seconds"] for r in rows] == pytest.approx([e.timestamp() for e in ends], rel=1e-15)


@pytest.mark.parametrize("source, column", [(CLICKSTREAM, "event_time"), (RETAIL, "InvoiceDate")])
def test_strptime_with_a_list_of_formats(engines, source, column):
    parse = next(c.parse for c in source.columns if c.name == column)
    texts = ["2019-10-01 00:00:00 UTC", "2019-10-01 08:26:00", "2019-10-01T08:26:07", "12/1/2010 8:26",
             "12/01/2010 08:26:05", "2010-12-01 8:26", "2019-13-45 99:00:00 UTC", "not a date", "2019-10-01"]
    data = pa.table({"i": range(len(texts)), "raw": texts})
    rows = run_both(engines, "texts", data, f"SELECT i, {parse.format(raw='raw')} AS t FROM texts ORDER BY i")
    formats = [f.strip("'") for f in parse[parse.index("[") + 1:parse.index("]")].split(", ")]
    expected = []
    for text in texts:
        parsed = None
        for fmt in formats:
            try:
                parsed = dt.datetime.strptime(text, fmt).replace(tzinfo=UTC)
                break
            except ValueError:
                continue
        expected.append(parsed)
    assert [r["t"] for r in rows] == expected
    assert any(expected) and not all(expected), "the inputs must both parse and fail"


def test_catalog_names_resolve_as_views(engines):
    """`layer.table` (a schema in DuckDB) is a renamed temporary view on Spark, aliased or not."""
    data = pa.table({"k": [1, 2, 3], "v": ["a", "b", None]})
    rows = run_both(engines, "silver.things", data,
                    "SELECT things.k, t2.v FROM silver.things JOIN silver.things AS t2 USING (k) ORDER BY k")
    assert rows == [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}, {"k": 3, "v": None}]


def test_product_performance_breaks_category_and_brand_ties_the_same_way(engines):
    """The shipped SQL of gold.product_performance on both engines: a tie goes to the value that sorts first
    (mode() would take whichever tied value the engine read first), whatever order the rows arrive in."""
    from shoplake.catalog import default_catalog

    spec = next(s for s in default_catalog() if s.name == "gold.product_performance")
    # product 1: tied categories and brands, the later-sorting ones first; product 2: a clear winner.
    events = [(1, "view", "sport.bike", "zeta"), (1, "view", "sport.alpine", "alpha"), (1, "cart", None, None),
              (2, "view", "kids.toys", "lego"), (2, "view", "kids.toys", "lego"), (2, "view", "kids", "duplo")]
    data = pa.table({"product_id": pa.array([e[0] for e in events], pa.int64()),
                     "event_type": [e[1] for e in events], "category_code": [e[2] for e in events],
                     "brand": [e[3] for e in events], "user_id": pa.array([7] * len(events), pa.int64()),
                     "price": pa.array([1.0] * len(events), pa.float64())})
    rows = run_both(engines, "silver.events", data,
                    f"SELECT product_id, category_code, brand FROM ({spec.sql()}) AS p ORDER BY product_id")
    assert [(r["product_id"], r["category_code"], r["brand"]) for r in rows] == [
        (1, "sport.alpine", "alpha"), (2, "kids.toys", "lego")]


def test_a_local_session_keeps_the_driver_on_loopback(engines):
    conf = engines["spark"].spark.conf
    assert (conf.get("spark.driver.host"), conf.get("spark.driver.bindAddress")) == ("127.0.0.1", "127.0.0.1")


# The CSV field count of the Spark parser, against the lookahead split it replaced (same meaning, run by
# Python's re): a comma separates fields when an even number of quotes follows it on the line.
LOOKAHEAD_SEPARATOR = ',(?=(?:[^"]*"[^"]*")*[^"]*$)'
CSV_LINES = [
    "", "a", "a,b,c", ",,", "a,", '"a,b",c', '"a ""quoted"", b",c,d', '"",""', 'a,"b,c', 'a,b"c,d',
    '"a,b,"c', 'x,"y",z,"w,v"', '"""",1', 'a,"b""c,d",e,"f', '2019-10-01 00:00:00 UTC,view,1,2,"a,b",x,1.5,3,s',
]


def test_field_count_of_a_csv_line_matches_the_lookahead_split(engines):
    import re

    from pyspark.sql import functions as F

    from shoplake.engines.spark import field_count

    spark = engines["spark"].spark
    frame = spark.createDataFrame([(i, line) for i, line in enumerate(CSV_LINES)], "i INT, value STRING")
    got = [r["n"] for r in frame.select("i", field_count(F.col("value")).alias("n")).orderBy("i").collect()]
    assert got == [len(re.split(LOOKAHEAD_SEPARATOR, line)) for line in CSV_LINES]
