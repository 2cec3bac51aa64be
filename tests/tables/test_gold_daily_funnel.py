"""gold.daily_funnel: one row per event_date with counts, sessions, revenue and funnel rates."""

from __future__ import annotations

from datetime import date

import pytest

from .shop import CLICKSTREAM_HEADER, by

ROWS = (
    # 2019-10-01: users 1..4. Users 1 and 2 both use the session string "s1": two sessions.
    "2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 08:01:00 UTC,view,2,10,a.b,x,20.0,1,s1",
    "2019-10-01 08:02:00 UTC,cart,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 08:03:00 UTC,purchase,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 09:00:00 UTC,view,1,10,a.b,x,10.0,2,s1",
    "2019-10-01 09:05:00 UTC,purchase,3,10,a.b,x,5.0,2,s1",  # a purchase with no cart event
    "2019-10-01 10:00:00 UTC,view,1,10,a.b,x,10.0,3,",  # no session: not a session
    "2019-10-01 10:01:00 UTC,purchase,2,10,a.b,x,20.0,3,",  # purchase without session: revenue only
    "2019-10-01 23:59:59 UTC,remove_from_cart,1,10,a.b,x,10.0,4,s9",
    # 2019-10-02: no views at all
    "2019-10-02 00:00:00 UTC,cart,1,10,a.b,x,10.0,5,s5",
    "2019-10-02 00:10:00 UTC,purchase,1,10,a.b,x,10.0,5,s5",
    # 2019-10-03: one view without a session, nothing else
    "2019-10-03 12:00:00 UTC,view,2,10,a.b,x,20.0,6,",
)


@pytest.fixture(scope="module")
def funnel_shop(module_shop):
    shop = module_shop("funnel")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.results = shop.build("silver.events gold.daily_funnel")
    return shop


@pytest.fixture(scope="module")
def funnel(funnel_shop):
    return by(funnel_shop.query("SELECT * FROM gold.daily_funnel"), "event_date")


def test_daily_funnel_has_one_row_per_event_date(funnel):
    assert sorted(funnel) == [date(2019, 10, 1), date(2019, 10, 2), date(2019, 10, 3)]


def test_daily_funnel_counts_events_users_sessions_and_revenue(funnel):
    columns = ("count_views", "count_carts", "count_remove_from_cart", "count_purchases", "count_users",
               "count_sessions", "count_purchasing_sessions", "revenue")
    got = {d: tuple(row[c] for c in columns) for d, row in funnel.items()}
    assert got == {
        date(2019, 10, 1): (4, 1, 1, 3, 4, 3, 2, 35.0),
        date(2019, 10, 2): (0, 1, 0, 1, 1, 1, 1, 10.0),
        date(2019, 10, 3): (1, 0, 0, 0, 1, 0, 0, 0.0),
    }


def test_daily_funnel_rates_are_null_when_the_denominator_is_zero(funnel):
    columns = ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate",
               "session_conversion_rate")
    got = {d: tuple(row[c] for c in columns) for d, row in funnel.items()}
    assert got == {
        # 1/4 carts per view, 3/1 purchases per cart (an event ratio above 1), 3/4, 2 of 3 sessions
        date(2019, 10, 1): (0.25, 3.0, 0.75, pytest.approx(2 / 3)),
        date(2019, 10, 2): (None, 1.0, None, 1.0),
        date(2019, 10, 3): (0.0, None, 0.0, None),
    }


def test_daily_funnel_folds_every_event_into_the_ledger(funnel_shop, funnel):
    assert sum(row["count_events"] for row in funnel.values()) == 12
    assert funnel_shop.balance("gold.daily_funnel") == (12, 12, 3, True)
    assert funnel_shop.results["gold.daily_funnel"].status == "built"
