"""silver.events: typed, derived and deduplicated clickstream events; bad rows go to quarantine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime

import pytest

from .shop import CLICKSTREAM_HEADER, COSMETICS_HEADER, PRODUCTS_HEADER, by

ROWS = (
    # 1: Tuesday; two-level category code
    "2019-10-01 00:00:04 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,501,s-a",
    # 2: an exact duplicate of row 1 (same file)
    "2019-10-01 00:00:04 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,501,s-a",
    # 3: Saturday, last second of the day; three-level code
    "2019-10-05 23:59:59 UTC,cart,1002,2053013563810775923,appliances.kitchen.washer,lg,120.5,502,s-b",
    # 4: Sunday; empty category_code, brand and user_session
    "2019-10-06 12:30:00 UTC,purchase,1003,2053013552326770905,,,33.0,503,",
    # 5: Monday; one-level code
    "2019-10-07 08:15:00 UTC,remove_from_cart,1004,2053013558920217191,computers,,10.0,501,s-c",
    # 6: unknown event type -> quarantine
    "2019-10-01 02:00:00 UTC,click,1001,2053013555631882655,electronics.smartphone,apple,489.07,504,s-d",
    # 7: empty user_id -> quarantine
    "2019-10-01 03:00:00 UTC,view,1001,2053013555631882655,electronics.smartphone,apple,489.07,,s-e",
)


@pytest.fixture(scope="module")
def events_shop(module_shop):
    shop = module_shop("events")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.results = shop.build("silver.events")
    return shop


@pytest.fixture(scope="module")
def events(events_shop):
    return by(events_shop.query("SELECT * FROM silver.events"), "product_id")


def test_events_keeps_one_row_per_distinct_valid_event(events_shop, events):
    assert events_shop.count("silver.events") == 4
    assert sorted(events) == [1001, 1002, 1003, 1004]
    assert events_shop.results["silver.events"].status == "built"
    assert events_shop.results["silver.events"].rows_written == 4


def test_events_derives_time_columns_in_utc(events):
    got = {pid: (e["event_at"], e["event_date"], e["event_hour"], e["day_of_week"])
           for pid, e in events.items()}
    assert got == {
        1001: (datetime(2019, 10, 1, 0, 0, 4, tzinfo=UTC), date(2019, 10, 1), 0, 2),
        1002: (datetime(2019, 10, 5, 23, 59, 59, tzinfo=UTC), date(2019, 10, 5), 23, 6),
        1003: (datetime(2019, 10, 6, 12, 30, tzinfo=UTC), date(2019, 10, 6), 12, 7),
        1004: (datetime(2019, 10, 7, 8, 15, tzinfo=UTC), date(2019, 10, 7), 8, 1),
    }


def test_events_splits_category_code_into_levels(events):
    got = {pid: (e["category_code"], e["category_l1"], e["category_l2"], e["category_l3"])
           for pid, e in events.items()}
    assert got == {
        1001: ("electronics.smartphone", "electronics", "smartphone", None),
        1002: ("appliances.kitchen.washer", "appliances", "kitchen", "washer"),
        1003: (None, None, None, None),
        1004: ("computers", "computers", None, None),
    }


def test_events_keeps_source_columns(events):
    got = {pid: (e["event_type"], e["category_id"], e["brand"], e["price"], e["user_id"], e["session_id"])
           for pid, e in events.items()}
    assert got == {
        1001: ("view", 2053013555631882655, "apple", 489.07, 501, "s-a"),
        1002: ("cart", 2053013563810775923, "lg", 120.5, 502, "s-b"),
        1003: ("purchase", 2053013552326770905, None, 33.0, 503, None),
        1004: ("remove_from_cart", 2053013558920217191, None, 10.0, 501, "s-c"),
    }


def test_events_quarantines_unknown_event_type_and_missing_user(events_shop):
    rows = events_shop.query(
        "SELECT reason, _stage, event_time, event_type, product_id, user_id, user_session, _source_row, "
        "_batch_id FROM quarantine.clickstream ORDER BY _source_row")
    batch = events_shop.query("SELECT DISTINCT _batch_id FROM bronze.clickstream")[0]["_batch_id"]
    assert [(r["reason"], r["_stage"], r["event_type"], r["product_id"], r["user_id"], r["user_session"],
             r["_source_row"], r["_batch_id"]) for r in rows] == [
        ("accepted_values_event_type", "silver", "click", "1001", "504", "s-d", 6, batch),
        ("not_null_user_id", "silver", "view", "1001", None, "s-e", 7, batch),
    ]
    assert rows[0]["event_time"].startswith("2019-10-01 02:00:00")


def test_events_ledger_accounts_for_every_bronze_row(events_shop):
    (entry,) = events_shop.ledger("silver.events")
    assert (entry["rows_in"], entry["rows_out"], entry["rows_diverted"]) == (7, 4, 3)
    assert entry["diverted"] == {"duplicate": 1, "quarantine:accepted_values_event_type": 1,
                                 "quarantine:not_null_user_id": 1}
    assert entry["is_balanced"] is True


def test_events_records_every_check_in_data_quality(events_shop):
    rows = events_shop.query("SELECT rule, action, rows_checked, rows_failed, passed FROM ops.data_quality "
                             "WHERE table_name = 'silver.events'")
    assert {r["rule"]: (r["action"], r["rows_checked"], r["rows_failed"], r["passed"]) for r in rows} == {
        "not_null_event_at": ("quarantine", 7, 0, True),
        "not_null_event_type": ("quarantine", 7, 0, True),
        "accepted_values_event_type": ("quarantine", 7, 1, False),
        "not_null_product_id": ("quarantine", 7, 0, True),
        "not_null_user_id": ("quarantine", 7, 1, False),
        "negative_price": ("quarantine", 7, 0, True),
        "not_null_price": ("warn", 7, 0, True),
        "not_null_session_id": ("warn", 7, 1, False),
    }


def test_events_dedupes_across_batches(shop):
    first = (ROWS[0], ROWS[3])  # the first row and the row with empty (NULL) values
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *first)
    assert shop.build("silver.events", run_id="b1")["silver.events"].rows_written == 2

    # A second file repeats the first file's first row and adds one new row.
    shop.ingest("clickstream", CLICKSTREAM_HEADER, first[0],
                "2019-10-08 09:00:00 UTC,view,1005,2053013555631882655,,,5.5,505,s-f")
    result = shop.build("silver.events", run_id="b2")["silver.events"]
    assert (result.status, result.rows_written) == ("built", 1)
    rows = shop.query("SELECT product_id, user_id FROM silver.events ORDER BY event_at")
    assert [(r["product_id"], r["user_id"]) for r in rows] == [(1001, 501), (1003, 503), (1005, 505)]
    (entry,) = shop.ledger("silver.events", run_id="b2")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (2, 1, {"duplicate": 1})

    # A row with empty (NULL) values is an exact duplicate too: NULLs compare equal for de-duplication.
    shop.ingest("clickstream", CLICKSTREAM_HEADER, first[1])
    result = shop.build("silver.events", run_id="b3")["silver.events"]
    assert (result.status, result.rows_written) == ("built", 0)
    assert shop.count("silver.events") == 3
    (entry,) = shop.ledger("silver.events", run_id="b3")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (1, 0, {"duplicate": 1})
    assert shop.count("bronze.clickstream") == 5  # bronze keeps every row


def test_events_cosmetics_variant_takes_category_and_brand_from_products(shop):
    shop.ingest("products", PRODUCTS_HEADER,
                "5802432,1487580005092295511,old.code,oldbrand",
                "5844397,1487580006317032337,,",
                "5802432,1487580005134238553,beauty.skin.cream,nivea",  # repeated product_id: later row wins
                "5809910,1487580005595611920,beauty.nail,runail")
    # a later products file wins over an earlier one
    shop.ingest("products", PRODUCTS_HEADER, "5809910,1487580005595611920,beauty.nail.polish,irisk")
    shop.ingest("clickstream", COSMETICS_HEADER,
                "2019-12-01 00:00:00 UTC,view,5802432,3.97,463240011,26dd6e6e-4dac-4778-8d2c-92e149dab885",
                "2019-12-01 00:00:02 UTC,cart,5844397,2.3,463240011,26dd6e6e-4dac-4778-8d2c-92e149dab885",
                "2019-12-01 00:00:05 UTC,view,9999999,1.0,463240011,26dd6e6e-4dac-4778-8d2c-92e149dab885",
                "2019-12-01 00:00:09 UTC,view,5809910,0.32,463240011,26dd6e6e-4dac-4778-8d2c-92e149dab885")
    results = shop.build("+silver.events")  # silver.products first, then the events that read it
    assert list(results) == ["silver.products", "silver.events"]
    rows = by(shop.query("SELECT * FROM silver.events"), "product_id")
    got = {pid: (r["category_id"], r["category_code"], r["category_l1"], r["category_l2"], r["category_l3"],
                 r["brand"], r["price"], r["session_id"]) for pid, r in rows.items()}
    session = "26dd6e6e-4dac-4778-8d2c-92e149dab885"
    assert got == {
        5802432: (1487580005134238553, "beauty.skin.cream", "beauty", "skin", "cream", "nivea", 3.97,
                  session),
        5844397: (1487580006317032337, None, None, None, None, None, 2.3, session),
        9999999: (None, None, None, None, None, None, 1.0, session),  # not in the catalog
        5809910: (1487580005595611920, "beauty.nail.polish", "beauty", "nail", "polish", "irisk", 0.32,
                  session),
    }


_LOCAL_TIME_ZONE_SCRIPT = """
import json, sys
from pathlib import Path
from shoplake.build import build_tables
from shoplake.config import load_settings
from shoplake.ingest import ingest_files
from shoplake.lake import Lake
from shoplake.query import run_query

root = Path(sys.argv[1])
lake = Lake(load_settings(env={}, lake=root / "lake"))
ingest_files(lake, "clickstream", [sys.argv[2]], run_id="r1")
build_tables(lake, "silver.events", run_id="r2")
rows = run_query(lake, "SELECT event_at, event_date, event_hour, day_of_week FROM silver.events ORDER BY 1")
print(json.dumps([[r["event_at"].isoformat(), r["event_date"].isoformat(), r["event_hour"], r["day_of_week"]]
                  for r in rows.to_pylist()]))
"""


@pytest.mark.parametrize("time_zone", ["America/New_York", "Asia/Tokyo"])
def test_events_are_utc_whatever_the_machine_time_zone(shop, time_zone):
    # The embedded engine must not read, cast or split timestamps in the host's local time zone.
    path = shop.csv(CLICKSTREAM_HEADER,
                    "2019-10-05 23:59:59 UTC,view,1,10,a.b,x,1.0,1,s1",
                    "2019-10-06 02:00:00 UTC,view,1,10,a.b,x,1.0,1,s1")
    env = {**os.environ, "TZ": time_zone}
    done = subprocess.run([sys.executable, "-c", _LOCAL_TIME_ZONE_SCRIPT, str(shop.root), str(path)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [
        ["2019-10-05T23:59:59+00:00", "2019-10-05", 23, 6],
        ["2019-10-06T02:00:00+00:00", "2019-10-06", 2, 7],
    ]
