"""`shoplake profile`: column profiles checked by hand on literal rows, and against plain SQL on generated data."""

from __future__ import annotations

import json
import math
import sys
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from shoplake import cli
from shoplake.engines.base import Capability
from shoplake.errors import ConfigError
from shoplake.ingest import ingest_files
from shoplake.maintenance import maintain
from shoplake.profile import _profile_columns, profile_table
from shoplake.synth import generate

from .shop import CLICKSTREAM_HEADER, Shop

ROWS = (
    "2019-10-01 00:00:04 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,501,s-a",
    "2019-10-01 00:00:04 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,501,s-a",  # dup
    "2019-10-05 23:59:59 UTC,cart,1002,2053013563810775923,appliances.kitchen.washer,lg,120.5,502,s-b",
    "2019-10-06 12:30:00 UTC,purchase,1003,2053013552326770905,,,33.0,503,",
    "2019-10-07 08:15:00 UTC,view,1004,2053013558920217191,computers,,10.0,501,s-c",
    "2019-10-07 09:00:00 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,504,s-d",
)


@pytest.fixture(scope="module")
def small(module_shop) -> Shop:
    shop = module_shop("profile-small")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.build("silver.events")
    return shop


def test_hand_worked_profile(small: Shop):
    found = profile_table(small.lake, "silver.events", use_cache=False)
    assert found.rows == 5  # six lines, one exact duplicate removed
    price = found.column("price")
    assert (price.nulls, price.nans, price.distinct) == (0, 0, 4)
    assert (price.minimum, price.maximum) == (10.0, 489.07)
    # sorted: 10, 33, 120.5, 489.07, 489.07; the q-quantile is the value at 1-based position ceil(5 q)
    assert price.quantiles["p25"] == 33.0 and price.quantiles["p50"] == 120.5 and price.quantiles["p75"] == 489.07
    assert price.quantiles["p05"] == 10.0 and price.quantiles["p95"] == 489.07
    assert price.quantiles["p01"] == 10.0 and price.quantiles["p99"] == 489.07
    assert price.top[0] == (489.07, 2) and price.share(price.top[0][1]) == pytest.approx(0.4)
    # four distinct values, fewer than the bins: one bar per value
    assert price.histogram == [(10.0, 10.0, 1), (33.0, 33.0, 1), (120.5, 120.5, 1), (489.07, 489.07, 2)]
    brand = found.column("brand")
    assert (brand.nulls, brand.distinct, brand.null_share) == (2, 2, pytest.approx(0.4))
    assert brand.top == [("apple", 2), ("lg", 1)] and (brand.minimum, brand.maximum) == ("apple", "lg")
    assert found.column("session_id").nulls == 1
    event_type = found.column("event_type")
    assert event_type.top == [("view", 3), ("cart", 1), ("purchase", 1)]  # ties broken by the value
    assert event_type.histogram == [] and event_type.quantiles == {}
    event_date = found.column("event_date")
    assert (event_date.minimum, event_date.maximum, event_date.distinct) == ("2019-10-01", "2019-10-07", 4)
    declared = [c.name for c in small.lake.catalog.get("silver.events").columns]
    assert [column.name for column in found.columns] == declared


def test_equal_width_bins_and_times(small: Shop):
    found = profile_table(small.lake, "silver.events", columns=["price", "event_at"], bins=2, use_cache=False)
    # [10, 249.535) and [249.535, 489.07]: the last bin is closed
    assert found.column("price").histogram == [(10.0, 249.535, 3), (249.535, 489.07, 2)]
    event_at = found.column("event_at")
    assert [count for _, _, count in event_at.histogram] == [1, 4]  # midpoint 2019-10-04 04:30:02
    assert event_at.histogram[0][0] == "2019-10-01T00:00:04+00:00"
    assert event_at.histogram[-1][1] == "2019-10-07T09:00:00+00:00"


def test_nan_null_and_nested_values(small: Shop):
    data = pa.table({
        "x": pa.array([1.0, float("nan"), None, 3.0, float("nan"), math.inf], pa.float64()),
        "tags": pa.array([["a"], ["a"], None, [], ["b", "c"], ["a"]], pa.list_(pa.string())),
    })
    with small.lake.engine(Capability.EMBEDDED_SQL) as engine:
        engine.bind_arrow("scratch.t", data)
        rows, (x, tags) = _profile_columns(engine, "scratch.t", [("x", data["x"].type), ("tags", data["tags"].type)],
                                           top=3, bins=4)
    assert rows == 6
    assert (x.nulls, x.nans, x.distinct) == (1, 2, 4)  # 1, 3, inf and NaN
    assert (x.minimum, x.maximum) == (1.0, "inf")  # NaN is left out of the order statistics
    assert sum(count for _, _, count in x.histogram) == 3
    assert (tags.kind, tags.nulls, tags.distinct) == ("other", 1, 3)
    assert tags.top[0] == ("[a]", 3)


def test_table_never_written_profiles_as_empty(small: Shop):
    found = profile_table(small.lake, "gold.daily_funnel", use_cache=False)
    assert found.rows == 0 and found.version is None
    assert all(c.distinct == 0 and c.nulls == 0 and c.top == [] for c in found.columns)


def test_unknown_column_and_bad_options(small: Shop):
    with pytest.raises(ConfigError, match="has no column 'nope'"):
        profile_table(small.lake, "silver.events", columns=["nope"])
    with pytest.raises(ConfigError, match="at least 1"):
        profile_table(small.lake, "silver.events", bins=0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Shop:
    root = tmp_path_factory.mktemp("profile-generated")
    shop = Shop(root)
    generate("clickstream", root / "click", rows=20_000, dirty_fraction=0.02, seed=7)
    ingest_files(shop.lake, "clickstream", [str(p) for p in sorted((root / "click").glob("*.csv*"))], run_id="i1")
    shop.build("silver.events")
    return shop


def test_agrees_with_plain_sql_over_the_rows(generated: Shop):
    """Every statistic of every column equals what plain SQL over the rows themselves answers."""
    found = profile_table(generated.lake, "silver.events", top=5, bins=7, use_cache=False)
    assert found.rows == generated.count("silver.events") > 15_000
    for c in found.columns:
        col = f'"{c.name}"'
        expected = generated.query(f"SELECT count(*) - count({col}) AS nulls, count(DISTINCT {col}) AS distinct_ "
                                   f"FROM silver.events")[0]
        assert (c.nulls, c.distinct) == (expected["nulls"], expected["distinct_"]), c.name
        top = generated.query(f"SELECT {col} AS v, count(*) AS n FROM silver.events WHERE {col} IS NOT NULL "
                              f"GROUP BY 1 ORDER BY n DESC, v LIMIT 5")
        assert [n for _, n in c.top] == [r["n"] for r in top], c.name
        assert c.top == [(_plain_value(r["v"]), r["n"]) for r in top], c.name
        if c.kind in ("number", "time"):
            wanted = generated.query(
                f"SELECT min({col}) AS lo, max({col}) AS hi, "
                + ", ".join(f"quantile_disc({col}, {q}) AS {name}" for name, q in
                            (("p01", 0.01), ("p05", 0.05), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p95", 0.95),
                             ("p99", 0.99)))
                + " FROM silver.events")[0]
            assert (c.minimum, c.maximum) == (_plain_value(wanted["lo"]), _plain_value(wanted["hi"])), c.name
            assert c.quantiles == {k: _plain_value(wanted[k]) for k in c.quantiles}, c.name
            assert sum(count for _, _, count in c.histogram) == found.rows - c.nulls, c.name


def _plain_value(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def test_cached_per_data_version(generated: Shop, tmp_path: Path):
    lake = generated.lake
    first = profile_table(lake, "silver.events", columns=["price"])
    again = profile_table(lake, "silver.events", columns=["price"])
    assert (first.cached, again.cached) == (False, True) and again.column("price") == first.column("price")
    # a compaction commits a new version with the same rows: still the cached profile
    maintain(lake, "silver.events", vacuum=False)
    after_maintenance = profile_table(lake, "silver.events", columns=["price"])
    assert after_maintenance.cached and after_maintenance.rows == first.rows
    # new rows: a new data version, computed afresh
    generate("clickstream", tmp_path / "more", rows=2_000, seed=99, start=date(2019, 11, 1), days=2)
    ingest_files(lake, "clickstream", [str(p) for p in sorted((tmp_path / "more").glob("*.csv*"))], run_id="i2")
    generated.build("silver.events", run_id="b2")
    fresh = profile_table(lake, "silver.events", columns=["price"])
    assert not fresh.cached and fresh.rows == generated.count("silver.events") > first.rows
    # an earlier version is still profiled as it was
    assert profile_table(lake, "silver.events", columns=["price"], version=first.version).rows == first.rows


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`shoplake ARGS` through the console script's entry point, in process: (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["shoplake", *args])
    monkeypatch.setenv("COLUMNS", "250")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_json_and_errors(small: Shop, monkeypatch, capsys):
    lake = str(small.lake.store.lake)
    code, out, _ = _cli(monkeypatch, capsys, "--lake", lake, "profile", "silver.events", "-c", "brand", "-f", "json")
    shown = json.loads(out)
    assert code == 0 and shown["rows"] == 5 and [c["name"] for c in shown["columns"]] == ["brand"]
    assert shown["columns"][0]["top"] == [["apple", 2], ["lg", 1]]
    code, out, _ = _cli(monkeypatch, capsys, "--lake", lake, "profile", "silver.events", "--column", "price")
    assert code == 0 and "price: quantiles" in out and "489.07" in out and "price: histogram" in out
    for args, named in ((("silver.events", "-c", "nope"), "'nope'"), (("gold.nope",), "gold.nope")):
        code, out, err = _cli(monkeypatch, capsys, "--lake", lake, "profile", *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and named in lines[0] and "Traceback" not in err + out
