"""gold.product_performance: one row per product_id with funnel counts, users, revenue and conversion."""

from __future__ import annotations

import pytest

from .shop import CLICKSTREAM_HEADER, by

ROWS = (
    # product 10: three views (users 1, 2, 2), one cart, two purchases at different prices.
    # Its most frequent category_code and brand win over a rarer one and over empty values.
    "2019-10-01 10:00:00 UTC,view,10,7,electronics.audio.headphone,sony,50.0,1,s1",
    "2019-10-01 10:01:00 UTC,view,10,7,electronics.audio.headphone,sony,50.0,2,s2",
    "2019-10-01 10:02:00 UTC,view,10,7,electronics.audio,sonny,50.0,2,s2",
    "2019-10-01 10:03:00 UTC,cart,10,7,,,50.0,1,s1",
    "2019-10-01 10:04:00 UTC,purchase,10,7,,,50.0,1,s1",
    "2019-10-02 11:00:00 UTC,purchase,10,7,electronics.audio.headphone,sony,45.0,3,s3",
    # product 20: bought without any view
    "2019-10-01 12:00:00 UTC,purchase,20,8,kids.toys,lego,7.25,4,s4",
    # product 30: viewed twice and removed from a cart, never bought
    "2019-10-01 13:00:00 UTC,view,30,9,,,3.0,5,s5",
    "2019-10-01 13:01:00 UTC,view,30,9,,,3.0,5,s5",
    "2019-10-01 13:02:00 UTC,remove_from_cart,30,9,,,3.0,6,s6",
    # product 40: two category_codes and two brands seen once each: the tie goes to the value that sorts
    # first, whatever order the rows arrive in (the later-sorting values come first here).
    "2019-10-01 14:00:00 UTC,view,40,9,sport.bike,zeta,9.0,7,s7",
    "2019-10-01 14:01:00 UTC,view,40,9,sport.alpine,alpha,9.0,7,s7",
)

COLUMNS = ("category_code", "brand", "count_views", "count_carts", "count_purchases", "count_users",
           "revenue", "view_to_purchase_rate", "count_events")


@pytest.fixture(scope="module")
def performance_shop(module_shop):
    shop = module_shop("product_performance")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.results = shop.build("silver.events gold.product_performance")
    return shop


def test_product_performance_per_product(performance_shop):
    rows = by(performance_shop.query("SELECT * FROM gold.product_performance"), "product_id")
    got = {pid: tuple(r[c] for c in COLUMNS) for pid, r in rows.items()}
    assert got == {
        10: ("electronics.audio.headphone", "sony", 3, 1, 2, 3, 95.0, pytest.approx(2 / 3), 6),
        20: ("kids.toys", "lego", 0, 0, 1, 1, 7.25, None, 1),
        30: (None, None, 2, 0, 0, 2, 0.0, 0.0, 3),
        40: ("sport.alpine", "alpha", 2, 0, 0, 1, 0.0, 0.0, 2),
    }


def test_product_performance_ledger_is_balanced(performance_shop):
    assert performance_shop.balance("gold.product_performance") == (12, 12, 4, True)
