"""bench/lean_duckdb.py and bench/lean_polars.py: the lean reference jobs compute shoplake's figures.

A dozen literal rows, dirty ones included, with daily_funnel and product_performance worked out by hand;
both jobs must give exactly these, and so must shoplake's own ingest + build of the same file.
"""

from __future__ import annotations

import importlib.util
import math
from datetime import date
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest

from shoplake.build import build_tables
from shoplake.config import load_settings
from shoplake.ingest import ingest_files
from shoplake.lake import Lake
from shoplake.query import run_query

BENCH = Path(__file__).resolve().parents[2] / "bench"

CSV = """\
event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
2019-10-01 08:00:00 UTC,view,1,10,a.b.c,x,10.0,1,s1
2019-10-01 08:01:00 UTC,cart,1,10,a.b.c,x,10.0,1,s1
2019-10-01 08:02:00 UTC,purchase,1,10,a.b.c,x,10.0,1,s1
2019-10-01 08:02:00 UTC,purchase,1,10,a.b.c,x,10.0,1,s1
2019-10-01 09:00:00 UTC,view,1,10,a.b.c,y,12.5,2,
2019-10-02 10:00:00 UTC,view,2,20,d.e,,5.0,3,s3
2019-10-02 10:05:00 UTC,purchase,2,20,d.e,,5.0,3,s3
2019-10-02 11:00:00 UTC,view,2,20,d.e,z,abc,3,s3
2019-10-02 11:00:00 UTC,click,2,20,d.e,z,1.0,3,s3
2019-10-02 12:00:00 UTC,purchase,2,20,d.e,z,-1.0,4,s4
2019-10-02 12:30:00 UTC,view,2,20,d.e,z,1.0,4
2019-10-02 12:30:00 UTC,view,2,20,d.e,z,1.0,4,s4,extra
not a date,view,2,20,d.e,z,1.0,4,s4
2019-10-02 13:00:00 UTC,view,3,,,q,2.0,5,s5
2019-10-02 13:01:00 UTC,view,3,30,k,p,2.0,5,s5
"""
# Left out: the repeated purchase (an exact duplicate), the price `abc`, the event type `click`, the
# negative price, the line that lost its last field, the line with an extra one, the timestamp `not a date`.
SILVER_ROWS = 8

FUNNEL_COLUMNS = ("count_views", "count_carts", "count_remove_from_cart", "count_purchases", "count_users",
                  "count_sessions", "count_purchasing_sessions", "revenue", "view_to_cart_rate",
                  "cart_to_purchase_rate", "view_to_purchase_rate", "session_conversion_rate", "count_events")
FUNNEL = {
    # User 2's view has no session: a user, not a session.
    date(2019, 10, 1): (2, 1, 0, 1, 2, 1, 1, 10.0, 0.5, 1.0, 0.5, 1.0, 4),
    # No carts: cart_to_purchase_rate is NULL.
    date(2019, 10, 2): (3, 0, 0, 1, 2, 2, 1, 5.0, 0.0, None, 1 / 3, 0.5, 4),
}
PRODUCT_COLUMNS = ("category_code", "brand", "count_views", "count_carts", "count_purchases", "count_users",
                   "revenue", "view_to_purchase_rate", "count_events")
PRODUCTS = {
    1: ("a.b.c", "x", 2, 1, 1, 2, 10.0, 0.5, 4),  # brand x three times, y once
    2: ("d.e", None, 1, 0, 1, 1, 5.0, 1.0, 2),  # its only brand (z) is on rows that are left out
    3: ("k", "p", 2, 0, 0, 1, 0.0, 0.0, 2),  # brands p and q once each: the tie goes to p
}


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(rows: list[dict], key: str, columns: tuple[str, ...]) -> dict:
    return {row[key]: tuple(row[c] for c in columns) for row in rows}


def _same(got: dict, expected: dict) -> bool:
    """Equal, with floats compared to 1e-9 relative (sums may add in another order)."""
    if got.keys() != expected.keys():
        return False
    return all(
        (a is None and b is None) or (a is not None and b is not None and (
            a == b if not isinstance(b, float) else math.isclose(a, b, rel_tol=1e-9)))
        for key in expected for a, b in zip(got[key], expected[key], strict=True))


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lean") / "clickstream.csv"
    path.write_text(CSV)
    return path


@pytest.fixture(scope="module", params=["lean_duckdb", "lean_polars"])
def lean(request, csv_file, tmp_path_factory) -> dict:
    """A lean job's outputs: rows per table and the Gold tables as row dicts."""
    out = tmp_path_factory.mktemp(request.param)
    counts = _load(request.param).run(csv_file, out)
    return {"counts": counts,
            "daily_funnel": pq.read_table(out / "daily_funnel.parquet").to_pylist(),
            "product_performance": pq.read_table(out / "product_performance.parquet").to_pylist()}


def test_bench_lean_keeps_only_clean_distinct_events(lean):
    assert lean["counts"] == {"silver.events": SILVER_ROWS, "gold.daily_funnel": 2, "gold.product_performance": 3}


def test_bench_lean_daily_funnel_matches_the_hand_worked_figures(lean):
    got = _figures(lean["daily_funnel"], "event_date", FUNNEL_COLUMNS)
    assert _same(got, FUNNEL), got


def test_bench_lean_product_performance_matches_the_hand_worked_figures(lean):
    got = _figures(lean["product_performance"], "product_id", PRODUCT_COLUMNS)
    assert _same(got, PRODUCTS), got


def test_bench_lean_figures_are_shoplakes(csv_file, tmp_path):
    """shoplake's own ingest + build of the same file gives the same two tables (so the references agree)."""
    lake = Lake(load_settings(env={}, lake=str(tmp_path / "lake"), engine="duckdb"))
    ingest_files(lake, "clickstream", [str(csv_file)], run_id="lean-ingest")
    build_tables(lake, "silver.events gold.daily_funnel gold.product_performance", run_id="lean-build")
    funnel = run_query(lake, "SELECT * FROM gold.daily_funnel").to_pylist()
    products = run_query(lake, "SELECT * FROM gold.product_performance").to_pylist()
    assert _same(_figures(funnel, "event_date", FUNNEL_COLUMNS), FUNNEL)
    assert _same(_figures(products, "product_id", PRODUCT_COLUMNS), PRODUCTS)
