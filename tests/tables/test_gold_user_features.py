"""gold.user_features: one row per user_id with activity counts, revenue, first/last event and recency."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .shop import CLICKSTREAM_HEADER, by

ROWS = (
    # user 1: sessions s1 and s2 (plus one event without session); views products 1, 1, 2 and 3
    "2019-10-01 10:00:00 UTC,view,1,10,a.b,x,15.5,1,s1",
    "2019-10-01 10:05:00 UTC,view,1,10,a.b,x,15.5,1,s1",
    "2019-10-01 10:06:00 UTC,view,2,10,a.b,x,20.0,1,s1",
    "2019-10-01 10:10:00 UTC,cart,2,10,a.b,x,20.0,1,s1",
    "2019-10-01 10:11:00 UTC,cart,4,10,a.b,x,99.0,1,s1",  # carted, never viewed
    "2019-10-02 18:00:00 UTC,view,3,10,a.b,x,7.0,1,",
    "2019-10-03 09:00:00 UTC,purchase,2,10,a.b,x,20.0,1,s2",
    "2019-10-03 09:00:30 UTC,purchase,1,10,a.b,x,15.5,1,s2",
    "2019-10-03 09:01:00 UTC,remove_from_cart,4,10,a.b,x,99.0,1,s2",
    # user 2: the latest event of all
    "2019-11-10 12:00:00 UTC,view,1,10,a.b,x,15.5,2,x",
    # user 3: the same session string as user 1; 39 days 23 hours before the latest event
    "2019-10-01 13:00:00 UTC,view,5,10,a.b,x,1.0,3,s1",
    # user 4: exactly one day before the latest event
    "2019-11-09 12:00:00 UTC,cart,5,10,a.b,x,1.0,4,s4",
    # user 5: one second less than a day before the latest event
    "2019-11-09 12:00:01 UTC,purchase,5,10,a.b,x,1.0,5,",
)

COLUMNS = ("count_sessions", "count_events", "count_views", "count_carts", "count_remove_from_cart",
           "count_purchases", "revenue", "count_products_viewed", "first_event_at", "last_event_at",
           "recency_days")


@pytest.fixture(scope="module")
def features_shop(module_shop):
    shop = module_shop("user_features")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.results = shop.build("silver.events gold.user_features")
    return shop


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_user_features_has_every_contract_column_per_user(features_shop):
    rows = by(features_shop.query("SELECT * FROM gold.user_features"), "user_id")
    got = {uid: tuple(r[c] for c in COLUMNS) for uid, r in rows.items()}
    assert got == {
        1: (2, 9, 4, 2, 1, 2, 35.5, 3, _at(2019, 10, 1, 10, 0), _at(2019, 10, 3, 9, 1), 38),
        2: (1, 1, 1, 0, 0, 0, 0.0, 1, _at(2019, 11, 10, 12, 0), _at(2019, 11, 10, 12, 0), 0),
        3: (1, 1, 1, 0, 0, 0, 0.0, 1, _at(2019, 10, 1, 13, 0), _at(2019, 10, 1, 13, 0), 39),
        4: (1, 1, 0, 1, 0, 0, 0.0, 0, _at(2019, 11, 9, 12, 0), _at(2019, 11, 9, 12, 0), 1),
        5: (0, 1, 0, 0, 0, 1, 1.0, 0, _at(2019, 11, 9, 12, 0, 1), _at(2019, 11, 9, 12, 0, 1), 0),
    }


def test_user_features_ledger_is_balanced(features_shop):
    assert features_shop.balance("gold.user_features") == (13, 13, 5, True)


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_user_features_built_in_parts_of_users_count_recency_from_the_latest_event_of_all(tmp_path, monkeypatch,
                                                                                          parts):
    """Over many events the table is computed in parts of users (`split_by`); recency still counts from the
    latest event of every user (a shared relation computed over the whole input first), not of the part:
    the latest event (user 2) is in one part of three, users 1, 3 and 4 in the others. In 7 parts, two
    parts have no user."""
    from shoplake.engines.duckdb import DuckDBEngine

    from .shop import Shop

    monkeypatch.setattr(DuckDBEngine, "parts_for", lambda self, rows: parts)
    shop = Shop(tmp_path)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    results = shop.build("silver.events gold.user_features")
    assert results["gold.user_features"].status == "built"
    test_user_features_has_every_contract_column_per_user(shop)
    assert shop.balance("gold.user_features") == (13, 13, 5, True)
    files = shop.lake.store.open("gold.user_features").file_uris()
    assert len(files) == len({user % parts for user in range(1, 6)})  # each part's own file, one commit
