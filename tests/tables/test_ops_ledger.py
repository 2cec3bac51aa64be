"""ops.ledger and ops.data_quality over a whole small pipeline (all sources, every table)."""

from __future__ import annotations

import pytest

from .shop import CLICKSTREAM_HEADER, PRODUCTS_HEADER, RETAIL_HEADER

CLICKS = (
    "2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",  # duplicate
    "2019-10-01 08:03:00 UTC,purchase,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 08:04:00 UTC,purchase,1,10,a.b,x,-1.0,1,s1",  # negative price -> quarantine
    "yesterday,view,1,10,a.b,x,10.0,1,s1",  # unparseable time -> quarantined at ingest
    "2019-10-01 08:05:00 UTC,view,1,10,a.b,x,10.0,1",  # one column short -> quarantined at ingest
)
PRODUCTS = ("1,10,a.b,x", "1,10,a.b,x", "2,11,c.d,y")
RETAIL = (
    "1001,A,RED MUG,2,2010-12-01 09:00:00,3.0,12345,United Kingdom",
    "1002,A,RED MUG,2,2010-12-01 09:00:00,3.0,,United Kingdom",
    "C1003,A,RED MUG,-1,2010-12-01 11:00:00,3.0,12345,United Kingdom",
    "1004,B,POSTAGE,1,2010-12-01 11:00:00,0,,United Kingdom",
)


@pytest.fixture(scope="module")
def pipeline(module_shop):
    shop = module_shop("ledger")
    shop.ingest("products", PRODUCTS_HEADER, *PRODUCTS, run_id="i1")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS, run_id="i1")
    shop.ingest("retail", RETAIL_HEADER, *RETAIL, run_id="i1")
    shop.results = shop.build(run_id="b1")
    return shop


def test_ledger_every_entry_balances(pipeline):
    rows = pipeline.query("SELECT * FROM ops.ledger")
    assert len(rows) == 3 + 17  # one per ingested file, one per built table
    for row in rows:
        assert row["rows_in"] == row["rows_out"] + row["rows_diverted"], row
        assert row["is_balanced"] is True, row


def test_ledger_entries_per_table(pipeline):
    rows = pipeline.query("SELECT table_name, rows_in, rows_out, rows_diverted, diverted, rows_written "
                          "FROM ops.ledger")
    got = {r["table_name"]: (r["rows_in"], r["rows_out"], r["diverted"], r["rows_written"]) for r in rows}
    assert got == {
        "bronze.products": (3, 3, "{}", 3),
        "bronze.clickstream": (
            6, 4, '{"quarantine:invalid_event_time": 1, "quarantine:wrong_column_count": 1}', 4),
        "bronze.retail": (4, 4, "{}", 4),
        "silver.products": (3, 2, '{"duplicate": 1}', 2),
        "silver.events": (4, 2, '{"duplicate": 1, "quarantine:negative_price": 1}', 2),
        "silver.sales": (3, 2, '{"quarantine:non_positive_unit_price": 1}', 2),
        "silver.returns": (1, 1, "{}", 1),
        "gold.daily_funnel": (2, 2, "{}", 1),
        "gold.user_features": (2, 2, "{}", 1),
        "gold.product_performance": (2, 2, "{}", 1),
        "gold.daily_sales_by_country": (3, 3, "{}", 1),
        "gold.customer_rfm": (2, 1, '{"guest_sale": 1}', 1),
        "gold.product_sales": (2, 2, "{}", 1),
        "gold.cart_abandonment": (0, 0, "{}", 0),  # no cart event
        "gold.retention_cohorts": (1, 1, "{}", 1),  # one user, one cohort week
        "gold.customer_cohorts": (3, 2, '{"guest_line": 1}', 1),
        # one entrant, rows for 2 grains (day, week) x 3 breakdowns (all, category_l1, brand) x the steps
        "gold.funnel_view_cart_purchase": (1, 1, "{}", 18),
        "gold.funnel_product_view_to_purchase": (1, 1, "{}", 12),
        # the entries: one per grain and breakdown, at each step reached (the view only; the view and the
        # purchase of the same product in the session)
        "gold.funnel_view_cart_purchase_entries": (1, 1, "{}", 6),
        "gold.funnel_product_view_to_purchase_entries": (1, 1, "{}", 12),
    }


def test_ledger_matches_the_quarantine_tables(pipeline):
    rows = pipeline.query("SELECT _stage, reason, count(*) AS n FROM quarantine.clickstream GROUP BY ALL")
    assert {(r["_stage"], r["reason"]): r["n"] for r in rows} == {
        ("ingest", "invalid_event_time"): 1,
        ("ingest", "wrong_column_count"): 1,
        ("silver", "negative_price"): 1,
    }
    (row,) = pipeline.query("SELECT _stage, reason, InvoiceNo FROM quarantine.retail")
    assert (row["_stage"], row["reason"], row["InvoiceNo"]) == ("silver", "non_positive_unit_price", "1004")


def test_data_quality_has_a_row_per_check_of_every_built_table(pipeline):
    rows = pipeline.query("SELECT run_id, table_name, rule, rows_checked, rows_failed, passed "
                          "FROM ops.data_quality")
    assert {r["run_id"] for r in rows} == {"b1"}
    for spec in pipeline.lake.catalog:
        if spec.build in ("incremental", "full"):
            rules = {r["rule"] for r in rows if r["table_name"] == spec.name}
            assert rules == {c.name for c in spec.checks}, spec.name
    got = {(r["table_name"], r["rule"]): (r["rows_checked"], r["rows_failed"], r["passed"]) for r in rows}
    assert got[("silver.events", "negative_price")] == (4, 1, False)
    assert got[("silver.events", "not_null_user_id")] == (4, 0, True)
    assert got[("gold.daily_funnel", "unique_event_date")] == (1, 0, True)
    assert got[("gold.customer_rfm", "scores_between_1_and_5")] == (1, 0, True)
