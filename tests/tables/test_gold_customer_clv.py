"""gold.customer_clv: one row per customer with a sale, its purchase history as BG/NBD reads it, the
returns rule, and ordered intervals (a small CLV model trained and scored on a dozen literal customers)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shoplake.ml import score_models, train_model
from shoplake.ml.params import CLVParams

from .shop import RETAIL_HEADER

REGULARS = range(14006, 14014)  # three purchase days each: Jan k, Feb k, Mar k at 3k per line (k = id - 14000)


def _rows() -> list[str]:
    rows = [
        # 14001: four purchase days (two lines on the first)
        "510001,S1,ITEM,2,2011-01-03 10:00:00,5.0,14001,United Kingdom",
        "510002,S1,ITEM,1,2011-01-20 10:00:00,10.0,14001,United Kingdom",
        "510003,S1,ITEM,1,2011-02-10 10:00:00,10.0,14001,United Kingdom",
        "510004,S1,ITEM,1,2011-03-15 10:00:00,10.0,14001,United Kingdom",
        # 14002: two invoices on 5 January are one purchase day
        "510005,S1,ITEM,1,2011-01-05 10:00:00,20.0,14002,United Kingdom",
        "510006,S1,ITEM,1,2011-01-05 15:00:00,20.0,14002,United Kingdom",
        "510007,S1,ITEM,1,2011-02-01 10:00:00,20.0,14002,United Kingdom",
        # 14003: returns one of its two purchases: net 100, still its own spend
        "510008,S1,ITEM,1,2011-02-01 10:00:00,100.0,14003,United Kingdom",
        "510009,S1,ITEM,1,2011-03-01 10:00:00,100.0,14003,United Kingdom",
        "C510010,S1,ITEM,-1,2011-03-02 10:00:00,100.0,14003,United Kingdom",
        # 14004: returns three units of 50 after buying two: net -50, the population's spend
        "510011,S1,ITEM,1,2011-01-10 10:00:00,50.0,14004,United Kingdom",
        "510012,S1,ITEM,1,2011-02-10 10:00:00,50.0,14004,United Kingdom",
        "C510013,S1,ITEM,-3,2011-02-11 10:00:00,50.0,14004,United Kingdom",
        # 14005: one purchase on the last day
        "510014,S1,ITEM,1,2011-03-31 10:00:00,30.0,14005,United Kingdom",
        # 14099 only returns; a guest sale has no customer: neither is in the table
        "C510015,S1,ITEM,-1,2011-02-01 10:00:00,5.0,14099,United Kingdom",
        "510016,S1,ITEM,1,2011-03-31 18:00:00,5.0,,United Kingdom",
    ]
    for customer in REGULARS:
        k = customer - 14000
        rows += [f"52{customer}{m},S2,ITEM,1,2011-0{m}-{k:02d} 09:00:00,{3.0 * k},{customer},France" for m in (1, 2, 3)]
    return rows


@pytest.fixture(scope="module")
def clv_shop(module_shop):
    shop = module_shop("customer_clv")
    shop.ingest("retail", RETAIL_HEADER, *_rows())
    shop.build("+silver.returns")
    shop.build("+silver.sales")
    shop.trained = train_model(shop.lake, "clv", run_id="train-clv", params=CLVParams(draws=100))
    shop.scored = score_models(shop.lake, run_id="score-clv", kinds=["clv"])
    return shop


@pytest.fixture(scope="module")
def clv(clv_shop):
    rows = clv_shop.query("SELECT * FROM gold.customer_clv")
    indexed = {r["customer_id"]: r for r in rows}
    assert len(indexed) == len(rows)  # the grain
    return indexed


def test_customer_clv_one_row_per_customer_with_a_sale(clv):
    assert sorted(clv) == [14001, 14002, 14003, 14004, 14005, *REGULARS]


def test_customer_clv_history_as_bgnbd_reads_it(clv):
    columns = ("frequency", "recency_days", "tenure_days", "net_value", "spend_basis")
    got = {c: tuple(r[k] for k in columns) for c, r in clv.items()}
    # cutoff 2011-04-01 (the day after the last sale); frequency = purchase days - 1
    assert got == {
        14001: (3, 71, 88, 40.0, "own"),
        14002: (1, 27, 86, 60.0, "own"),
        14003: (1, 28, 59, 100.0, "own"),
        14004: (1, 31, 81, -50.0, "population"),
        14005: (0, 0, 1, 30.0, "own"),
        **{c: (2, 59, 91 - (c - 14000), 9.0 * (c - 14000), "own") for c in REGULARS},
    }
    assert {r["cutoff_at"] for r in clv.values()} == {datetime(2011, 4, 1, tzinfo=UTC)}


def test_customer_clv_intervals_are_ordered_and_probabilities_valid(clv):
    for row in clv.values():
        assert 0 <= row["probability_alive"] <= 1
        for horizon in ("3m", "6m", "12m"):
            for measure in ("purchases", "value"):
                name = f"expected_{measure}_{horizon}"
                assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"], (row["customer_id"], name)
        assert row["expected_purchases_3m"] < row["expected_purchases_6m"] < row["expected_purchases_12m"]
        assert row["model_name"] == "shoplake-clv" and row["model_version"] == 1


def test_customer_clv_returns_exceeding_purchases_get_the_population_spend(clv):
    # No repeat purchase with a positive net value is evidence of 14004's spend: Gamma-Gamma's mean.
    population = clv[14004]["expected_spend_per_purchase"]
    own = [r["expected_spend_per_purchase"] for c, r in clv.items() if c != 14004]
    assert min(own) < population < max(own)
    # ...but its purchases are still predicted like anyone's.
    assert clv[14004]["expected_purchases_12m"] > 0
    # The expected value is expected purchases times that spend (posterior means of a product: close, not equal).
    assert clv[14004]["expected_value_12m"] == pytest.approx(
        clv[14004]["expected_purchases_12m"] * population, rel=0.05)


def test_customer_clv_scoring_is_ledgered_and_checked(clv_shop):
    ledger = clv_shop.ledger("gold.customer_clv")
    assert [(e["rows_in"], e["rows_out"]) for e in ledger] == [(13, 13)]
    assert clv_shop.scored[0].rows_written == 13


def test_clv_too_few_customers_is_skipped_and_any_other_fit_error_is_a_failure(shop, monkeypatch):
    """Too little data skips the training (InsufficientDataError, a job's `skipped`); an unexpected error
    inside the fit (here a ValueError the fit code does not raise itself) is a failure, never a skip."""
    from shoplake.errors import InsufficientDataError
    from shoplake.ml import clv

    shop.ingest("retail", RETAIL_HEADER, *_rows()[:8])
    shop.build("+silver.returns")
    shop.build("+silver.sales")
    with pytest.raises(InsufficientDataError, match="too few customers to fit"):
        train_model(shop.lake, "clv", run_id="train-few", params=CLVParams(draws=100))

    def broken(*args, **kwargs):
        raise ValueError("could not convert string to float: '/some/lake'")

    monkeypatch.setattr(clv, "fit", broken)
    with pytest.raises(ValueError, match="could not convert") as raised:
        train_model(shop.lake, "clv", run_id="train-broken", params=CLVParams(draws=100))
    assert not isinstance(raised.value, InsufficientDataError)
