"""gold.retention_cohorts (clickstream, weekly) and gold.customer_cohorts (retail, monthly, returns netted)."""

from __future__ import annotations

from datetime import date

import pytest

from .shop import CLICKSTREAM_HEADER, RETAIL_HEADER


def ev(at: str, kind: str, user: int) -> str:
    return f"{at} UTC,{kind},1,10,a.b,x,10.0,{user},s{user}"


# ISO weeks: 2019-09-30 (Mon) .. 10-06, 2019-10-07 .. 10-13, 2019-10-14 .. 10-20
CLICKS = (
    ev("2019-10-01 08:00:00", "view", 1),       # user 1: cohort 09-30, buys in week 0, back in week 2
    ev("2019-10-01 08:05:00", "purchase", 1),
    ev("2019-10-15 09:00:00", "view", 1),
    ev("2019-10-06 23:59:59", "view", 2),       # user 2: cohort 09-30 (Sunday), buys in week 1
    ev("2019-10-07 00:00:00", "purchase", 2),
    ev("2019-10-02 10:00:00", "view", 3),       # user 3: cohort 09-30, never back
    ev("2019-10-08 10:00:00", "view", 4),       # user 4: cohort 10-07, buys in its week 1
    ev("2019-10-16 10:00:00", "purchase", 4),
)


@pytest.fixture(scope="module")
def retention(module_shop):
    shop = module_shop("retention")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    shop.results = shop.build("silver.events gold.retention_cohorts")
    shop.rows = {(r["cohort_week"], r["week_number"]): r for r in
                 shop.query("SELECT * FROM gold.retention_cohorts")}
    return shop


def test_retention_cohorts_count_returns_and_purchases_per_week(retention):
    columns = ("activity_week", "cohort_users", "active_users", "purchasing_users", "is_complete")
    got = {key: tuple(r[c] for c in columns) for key, r in retention.rows.items()}
    sep30, oct7, oct14 = date(2019, 9, 30), date(2019, 10, 7), date(2019, 10, 14)
    assert got == {
        (sep30, 0): (sep30, 3, 3, 1, True),
        (sep30, 1): (oct7, 3, 1, 1, True),     # user 2 bought at 00:00:00 on Monday
        (sep30, 2): (oct14, 3, 1, 0, False),   # user 1 is back; the data ends on Wednesday 10-16
        (oct7, 0): (oct7, 1, 1, 0, True),
        (oct7, 1): (oct14, 1, 1, 1, False),
    }
    assert retention.rows[(sep30, 1)]["retention_rate"] == pytest.approx(1 / 3)
    assert retention.rows[(sep30, 1)]["purchase_rate"] == pytest.approx(1 / 3)
    assert retention.balance("gold.retention_cohorts") == (4, 4, 5, True)


# Retail: customer 12001 first buys in December 2010, returns part of it in January, buys again in
# February; 12002 first buys in January with two invoices the same month; 12003 returns in December an
# earlier purchase (before its first sale in January), 12004 only returns, and a guest buys.
RETAIL = (
    "500001,A,MUG,2,2010-12-05 10:00:00,5.0,12001,United Kingdom",          # 10.00
    "500002,B,BOWL,1,2010-12-20 10:00:00,30.0,12001,United Kingdom",        # 30.00, second invoice, same month
    "C500003,A,MUG,-1,2011-01-10 10:00:00,5.0,12001,United Kingdom",        # -5.00 in January
    "500004,A,MUG,4,2011-02-01 10:00:00,5.0,12001,United Kingdom",          # 20.00 in February
    "500005,A,MUG,1,2011-01-03 10:00:00,5.0,12002,United Kingdom",          # 5.00
    "500006,B,BOWL,2,2011-01-31 18:00:00,30.0,12002,United Kingdom",        # 60.00
    "C500007,B,BOWL,-2,2011-02-15 10:00:00,30.0,12002,United Kingdom",      # -60.00 in February
    "C500008,A,MUG,-1,2010-12-30 10:00:00,5.0,12003,United Kingdom",        # before 12003's cohort
    "500009,A,MUG,1,2011-01-15 10:00:00,5.0,12003,United Kingdom",          # 5.00
    "C500010,A,MUG,-1,2011-01-20 10:00:00,5.0,12004,United Kingdom",        # no sale at all
    "500011,A,MUG,1,2011-02-27 10:00:00,5.0,,United Kingdom",               # guest
)


@pytest.fixture(scope="module")
def customer_cohorts(module_shop):
    shop = module_shop("customer_cohorts")
    shop.ingest("retail", RETAIL_HEADER, *RETAIL)
    shop.results = shop.build("+gold.customer_cohorts")
    shop.rows = {(r["cohort_month"], r["month_number"]): r for r in
                 shop.query("SELECT * FROM gold.customer_cohorts")}
    return shop


def test_customer_cohorts_net_revenue_with_returns_netted(customer_cohorts):
    columns = ("activity_month", "cohort_customers", "active_customers", "gross_revenue", "returns_value",
               "net_revenue", "count_sale_lines", "count_return_lines")
    got = {key: tuple(r[c] for c in columns) for key, r in customer_cohorts.rows.items()}
    dec, jan, feb = date(2010, 12, 1), date(2011, 1, 1), date(2011, 2, 1)
    assert got == {
        (dec, 0): (dec, 1, 1, 40.0, 0.0, 40.0, 2, 0),
        (dec, 1): (jan, 1, 0, 0.0, -5.0, -5.0, 0, 1),     # 12001's January return, netted in January
        (dec, 2): (feb, 1, 1, 20.0, 0.0, 20.0, 1, 0),
        (jan, 0): (jan, 2, 2, 70.0, 0.0, 70.0, 3, 0),     # 12002 and 12003 (not its December return)
        (jan, 1): (feb, 2, 0, 0.0, -60.0, -60.0, 0, 1),
    }
    assert customer_cohorts.rows[(jan, 1)]["net_revenue_per_customer"] == -30.0


def test_customer_cohorts_repeat_purchase_rate_is_cumulative(customer_cohorts):
    dec, jan = date(2010, 12, 1), date(2011, 1, 1)
    got = {key: (r["repeat_customers"], r["repeat_purchase_rate"]) for key, r in customer_cohorts.rows.items()}
    # 12001's second invoice is in December; 12002's in January; 12003 has one invoice
    assert got == {(dec, 0): (1, 1.0), (dec, 1): (1, 1.0), (dec, 2): (1, 1.0),
                   (jan, 0): (1, 0.5), (jan, 1): (1, 0.5)}


def test_customer_cohorts_completeness_and_ledger(customer_cohorts):
    complete = {key: r["is_complete"] for key, r in customer_cohorts.rows.items()}
    assert complete[(date(2011, 1, 1), 0)] is True
    assert complete[(date(2011, 1, 1), 1)] is False  # the data ends on 2011-02-27
    (entry,) = customer_cohorts.ledger("gold.customer_cohorts")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (
        11, 8, {"guest_line": 1, "return_before_cohort": 1, "return_without_sale": 1})
    assert entry["is_balanced"] is True
