"""Building a selection of tables (`silver.events`, `gold.daily_funnel+`, `+gold.daily_funnel`, layers)."""

from __future__ import annotations

import pytest

from shoplake.catalog import default_catalog
from shoplake.errors import ConfigError, TableNotFoundError

from .shop import CLICKSTREAM_HEADER

CLICKS = ("2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
          "2019-10-01 08:03:00 UTC,purchase,1,10,a.b,x,10.0,1,s1")


def _names(selection):
    return [spec.name for spec in default_catalog().select(selection)]


def test_build_one_table_builds_only_that_table(shop):
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    results = shop.build("silver.events")
    assert [(name, r.status) for name, r in results.items()] == [("silver.events", "built")]
    versions = shop.versions()
    assert versions["silver.events"] == 0
    not_built = ("silver.products", "silver.sales", "silver.returns", "gold.daily_funnel",
                 "gold.user_features")
    assert all(versions[name] is None for name in not_built)


def test_build_a_table_and_its_descendants(shop):
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    results = shop.build("silver.events+")
    assert [(name, r.status) for name, r in results.items()] == [
        ("silver.events", "built"), ("gold.daily_funnel", "built"), ("gold.user_features", "built"),
        ("gold.product_performance", "built"), ("gold.cart_abandonment", "built"),
        ("gold.retention_cohorts", "built"), ("gold.funnel_product_view_to_purchase_entries", "built"),
        ("gold.funnel_view_cart_purchase_entries", "built"), ("gold.funnel_product_view_to_purchase", "built"),
        ("gold.funnel_view_cart_purchase", "built")]
    assert shop.versions()["silver.products"] is None
    # A gold table has no descendants: `+` adds nothing, and its input is not rebuilt.
    assert list(shop.build("gold.daily_funnel+")) == ["gold.daily_funnel"]


CLICK_GOLD = ["gold.daily_funnel", "gold.user_features", "gold.product_performance", "gold.cart_abandonment",
              "gold.retention_cohorts", "gold.funnel_product_view_to_purchase", "gold.funnel_view_cart_purchase",
              "gold.funnel_product_view_to_purchase_entries", "gold.funnel_view_cart_purchase_entries"]
RETAIL_GOLD = ["gold.daily_sales_by_country", "gold.customer_rfm", "gold.product_sales", "gold.customer_cohorts"]


@pytest.mark.parametrize(("selection", "expected"), [
    (None, ["silver.products", "silver.sales", "silver.returns", "silver.events", *RETAIL_GOLD, *CLICK_GOLD]),
    ("silver.events", ["silver.events"]),
    ("gold.daily_funnel+", ["gold.daily_funnel"]),
    ("+gold.daily_funnel", ["silver.products", "silver.events", "gold.daily_funnel"]),
    ("silver.sales+", ["silver.sales", *RETAIL_GOLD]),
    ("bronze.products+", ["silver.products", "silver.events", *CLICK_GOLD]),
    ("silver", ["silver.products", "silver.sales", "silver.returns", "silver.events"]),
    ("gold.customer_rfm, silver.returns", ["silver.returns", "gold.customer_rfm"]),
])
def test_catalog_select_in_build_order(selection, expected):
    names = _names(selection)
    assert sorted(names) == sorted(expected)
    # inputs always come before the tables that read them
    catalog = default_catalog()
    for i, name in enumerate(names):
        assert not (catalog.ancestors(name) & set(names[i + 1:])), names


def test_catalog_select_refuses_bronze_and_unknown_tables():
    with pytest.raises(ConfigError, match=r"is not built by `shoplake build`.*use bronze.clickstream\+"):
        _names("bronze.clickstream")
    with pytest.raises(TableNotFoundError, match="did you mean gold.daily_funnel"):
        _names("gold.daily_funel")
