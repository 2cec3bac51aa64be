"""Rebuilding with no new data writes nothing; ingesting the same file twice changes nothing."""

from __future__ import annotations

from .shop import CLICKSTREAM_HEADER, PRODUCTS_HEADER, RETAIL_HEADER

CLICKS = ("2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
          "2019-10-01 08:03:00 UTC,purchase,1,10,a.b,x,10.0,1,s1")
PRODUCTS = ("1,10,a.b,x",)
RETAIL = ("1001,A,RED MUG,2,2010-12-01 09:00:00,3.0,12345,United Kingdom",
          "C1003,A,RED MUG,-1,2010-12-01 11:00:00,3.0,12345,United Kingdom")

CLICK_GOLD = {"gold.daily_funnel", "gold.user_features", "gold.product_performance", "gold.cart_abandonment",
              "gold.retention_cohorts", "gold.funnel_product_view_to_purchase", "gold.funnel_view_cart_purchase",
              "gold.funnel_product_view_to_purchase_entries", "gold.funnel_view_cart_purchase_entries"}
DERIVED = ["silver.products", "silver.events", "silver.sales", "silver.returns", *sorted(CLICK_GOLD),
           "gold.daily_sales_by_country", "gold.customer_rfm", "gold.product_sales", "gold.customer_cohorts"]


def _fill(shop):
    shop.ingest("products", PRODUCTS_HEADER, *PRODUCTS)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    shop.ingest("retail", RETAIL_HEADER, *RETAIL)


def test_rebuild_with_no_new_data_is_unchanged_and_writes_nothing(shop):
    _fill(shop)
    first = shop.build(run_id="b1")
    assert sorted(first) == sorted(DERIVED)
    assert {name: r.status for name, r in first.items()} == dict.fromkeys(DERIVED, "built")
    before = shop.versions()
    assert all(before[name] is not None for name in DERIVED)

    second = shop.build(run_id="b2")
    assert {name: r.status for name, r in second.items()} == dict.fromkeys(DERIVED, "unchanged")
    assert all(r.rows_written == 0 for r in second.values())
    assert shop.versions() == before  # every table, ops and quarantine included
    assert shop.ledger("gold.daily_funnel", run_id="b2") == []


def test_rebuild_after_new_clickstream_data_touches_only_its_descendants(shop):
    _fill(shop)
    shop.build(run_id="b1")
    before = shop.versions()
    shop.ingest("clickstream", CLICKSTREAM_HEADER, "2019-10-02 08:00:00 UTC,view,1,10,a.b,x,10.0,2,s2")
    statuses = {name: r.status for name, r in shop.build(run_id="b2").items()}
    rebuilt = {"silver.events", *CLICK_GOLD}
    assert statuses == {name: "built" if name in rebuilt else "unchanged" for name in DERIVED}
    after = shop.versions()
    assert {name for name in DERIVED if after[name] != before[name]} == rebuilt
    assert shop.count("gold.daily_funnel") == 2


def test_ingesting_the_same_file_twice_is_skipped(shop):
    path = shop.csv(CLICKSTREAM_HEADER, *CLICKS)
    first = shop.ingest_path("clickstream", path, run_id="i1")
    assert (first.status, first.rows_read, first.rows_bronze) == ("ingested", 2, 2)
    before = shop.versions()
    ledger_rows = shop.count("ops.ledger")

    again = shop.ingest_path("clickstream", path, run_id="i2")
    assert (again.status, again.batch_id, again.rows_bronze) == ("skipped", first.batch_id, 0)
    # The same bytes under another name are the same batch.
    copy = shop.root / "copy_of_clicks.csv"
    copy.write_bytes(path.read_bytes())
    assert shop.ingest_path("clickstream", copy, run_id="i3").status == "skipped"

    assert shop.versions() == before
    assert shop.count("bronze.clickstream") == 2
    assert shop.count("ops.ledger") == ledger_rows
