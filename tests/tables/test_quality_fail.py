"""A quality check with action 'fail' stops its table (nothing written) and skips only its downstream."""

from __future__ import annotations

from dataclasses import replace

from shoplake.catalog import Catalog, default_catalog
from shoplake.catalog.spec import query_rule, row_rule

from .shop import CLICKSTREAM_HEADER, Shop

CLICK_GOLD = ("gold.daily_funnel", "gold.user_features", "gold.product_performance", "gold.cart_abandonment",
              "gold.retention_cohorts", "gold.funnel_product_view_to_purchase", "gold.funnel_view_cart_purchase",
              "gold.funnel_product_view_to_purchase_entries", "gold.funnel_view_cart_purchase_entries")
CLICKS = ("2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
          "2019-10-01 08:03:00 UTC,purchase,1,10,a.b,x,1500.0,1,s1",
          "2019-10-02 09:00:00 UTC,view,2,10,a.b,x,2000.0,2,s2")


def _catalog_with(table: str, *checks) -> Catalog:
    """The default catalog, with extra checks on one table."""
    return Catalog(replace(s, checks=s.checks + checks) if s.name == table else s for s in default_catalog())


def test_failing_check_on_silver_stops_it_and_skips_its_downstream(tmp_path):
    shop = Shop(tmp_path, _catalog_with("silver.events", row_rule("price_below_1000", "price >= 1000",
                                                                 action="fail")))
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    results = shop.build("silver.events+", run_id="b1")

    events = results["silver.events"]
    assert events.status == "failed"
    assert events.message == ("silver.events: check failed: price_below_1000 (2 rows); nothing was written "
                              "(see ops.data_quality)")
    assert {name: (r.status, r.message) for name, r in results.items() if name != "silver.events"} == dict.fromkeys(
        CLICK_GOLD, ("skipped", "an upstream table failed"))
    versions = shop.versions()
    assert (versions["silver.events"], versions["gold.daily_funnel"]) == (None, None)
    assert versions["quarantine.clickstream"] == 0  # created empty, nothing appended
    assert shop.count("quarantine.clickstream") == 0
    assert shop.ledger("silver.events") == []
    (row,) = shop.query("SELECT action, rows_checked, rows_failed, passed FROM ops.data_quality "
                        "WHERE table_name = 'silver.events' AND rule = 'price_below_1000'")
    assert (row["action"], row["rows_checked"], row["rows_failed"], row["passed"]) == ("fail", 3, 2, False)

    # The batch was not consumed: the next build meets the same data and fails again.
    assert shop.build("silver.events", run_id="b2")["silver.events"].status == "failed"


def test_failing_check_on_gold_keeps_the_previous_version_and_its_siblings_build(tmp_path):
    at_most_one_day = query_rule("at_most_one_day",
                                 "SELECT * FROM candidate WHERE (SELECT count(*) FROM candidate) > 1",
                                 action="fail")
    shop = Shop(tmp_path, _catalog_with("gold.daily_funnel", at_most_one_day))
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS[:2])  # one day: passes
    assert shop.build("silver.events+", run_id="b1")["gold.daily_funnel"].status == "built"
    shop.ingest("clickstream", CLICKSTREAM_HEADER, CLICKS[2])  # a second day: fails

    results = shop.build("silver.events+", run_id="b2")
    assert {name: r.status for name, r in results.items()} == {
        "silver.events": "built", **dict.fromkeys(CLICK_GOLD, "built"), "gold.daily_funnel": "failed"}
    assert results["gold.daily_funnel"].message.startswith(
        "gold.daily_funnel: check failed: at_most_one_day (2 rows)")
    assert shop.versions()["gold.daily_funnel"] == 0
    assert [r["event_date"].isoformat() for r in shop.query("SELECT event_date FROM gold.daily_funnel")] == [
        "2019-10-01"]

