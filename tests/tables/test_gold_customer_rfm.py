"""gold.customer_rfm: recency, frequency, monetary, returns and 1-5 quintile scores per customer."""

from __future__ import annotations

from datetime import date

import pytest

from .shop import RETAIL_HEADER

# Ten customers, so each quintile holds two of them. Recency, frequency and monetary rank the customers
# in three different orders; equal values only occur within one quintile.
# customer: (date of the last invoice, number of invoices, value of each one-unit line)
CUSTOMERS = {
    13001: ("2011-01-30", 1, 900.0),
    13002: ("2011-01-27", 2, 1.0),  # its second invoice has two lines (frequency counts invoices)
    13003: ("2011-01-22", 3, 100.0),
    13004: ("2011-01-12", 4, 50.0),
    13005: ("2011-01-02", 1, 5.0),
    13006: ("2010-12-23", 4, 2.5),
    13007: ("2010-12-13", 2, 300.0),
    13008: ("2010-12-08", 3, 10.0),
    13009: ("2010-12-03", 5, 200.0),
    13010: ("2010-12-02", 5, 20.0),
}


def _rows() -> list[str]:
    rows = []
    for customer, (last, invoices, value) in CUSTOMERS.items():
        for n in range(invoices):
            day = last if n == invoices - 1 else "2010-12-01"  # earlier invoices on the first day
            rows.append(f"{customer}{n},S{n},ITEM,1,{day} 10:00:00,{value},{customer},United Kingdom")
    rows.append("130021,S9,ITEM,1,2011-01-27 10:00:00,1.0,13002,United Kingdom")
    rows += [
        # returns: 13001 returns its only line, 13003 returns two units; 13099 never bought
        "C9001,S0,ITEM,-1,2011-01-30 12:00:00,900.0,13001,United Kingdom",
        "C9002,S0,ITEM,-2,2011-01-23 12:00:00,100.0,13003,United Kingdom",
        "C9003,S0,ITEM,-1,2011-01-23 12:00:00,100.0,13099,United Kingdom",
        # a guest sale holds the latest invoice date: snapshot_date is the day after it
        "9999,S0,ITEM,1,2011-01-31 18:00:00,5.0,,United Kingdom",
    ]
    return rows


@pytest.fixture(scope="module")
def rfm_shop(module_shop):
    shop = module_shop("customer_rfm")
    shop.ingest("retail", RETAIL_HEADER, *_rows())
    shop.results = shop.build("+gold.customer_rfm")
    return shop


@pytest.fixture(scope="module")
def rfm(rfm_shop):
    rows = rfm_shop.query("SELECT * FROM gold.customer_rfm")
    indexed = {r["customer_id"]: r for r in rows}
    assert len(indexed) == len(rows)
    return indexed


def test_customer_rfm_one_row_per_customer_with_a_sale(rfm):
    assert sorted(rfm) == list(range(13001, 13011))  # neither the guest nor 13099 (returns only)


def test_customer_rfm_snapshot_date_is_the_day_after_the_latest_sale(rfm):
    assert {r["snapshot_date"] for r in rfm.values()} == {date(2011, 2, 1)}


def test_customer_rfm_measures(rfm):
    columns = ("last_purchase_date", "recency_days", "frequency", "monetary", "returns_value", "net_monetary",
               "count_sale_lines")
    got = {c: tuple(r[k] for k in columns) for c, r in rfm.items()}
    assert got == {
        13001: (date(2011, 1, 30), 2, 1, 900.0, -900.0, 0.0, 1),
        13002: (date(2011, 1, 27), 5, 2, 3.0, 0.0, 3.0, 3),
        13003: (date(2011, 1, 22), 10, 3, 300.0, -200.0, 100.0, 3),
        13004: (date(2011, 1, 12), 20, 4, 200.0, 0.0, 200.0, 4),
        13005: (date(2011, 1, 2), 30, 1, 5.0, 0.0, 5.0, 1),
        13006: (date(2010, 12, 23), 40, 4, 10.0, 0.0, 10.0, 4),
        13007: (date(2010, 12, 13), 50, 2, 600.0, 0.0, 600.0, 2),
        13008: (date(2010, 12, 8), 55, 3, 30.0, 0.0, 30.0, 3),
        13009: (date(2010, 12, 3), 60, 5, 1000.0, 0.0, 1000.0, 5),
        13010: (date(2010, 12, 2), 61, 5, 100.0, 0.0, 100.0, 5),
    }


def test_customer_rfm_quintile_scores_five_is_best(rfm):
    got = {c: (r["r_score"], r["f_score"], r["m_score"]) for c, r in rfm.items()}
    # m_score ranks net_monetary: 13001 returned its only purchase (net 0) and scores 1, not 5. The two
    # customers with net 100 share places 6 and 7: average rank 6.5, ceil(5 * 6.5 / 10) = 4.
    assert got == {
        13001: (5, 1, 1),
        13002: (5, 2, 1),
        13003: (4, 3, 4),
        13004: (4, 4, 4),
        13005: (3, 1, 2),
        13006: (3, 4, 2),
        13007: (2, 2, 5),
        13008: (2, 3, 3),
        13009: (1, 5, 5),
        13010: (1, 5, 4),
    }


def test_customer_rfm_named_segments_from_the_r_by_fm_grid(rfm):
    got = {c: (r["fm_score"], r["rfm_segment"]) for c, r in rfm.items()}
    # fm_score = ceil((f + m) / 2) of the scores above, then the grid of docs/DATA_CONTRACT.md
    assert got == {
        13001: (1, "New"),                  # r 5, f 1, m 1
        13002: (2, "Potential loyalist"),   # r 5, (2 + 1) / 2 -> 2
        13003: (4, "Loyal"),                # r 4, (3 + 4) / 2 -> 4
        13004: (4, "Loyal"),                # r 4
        13005: (2, "About to sleep"),       # r 3, (1 + 2) / 2 -> 2
        13006: (3, "Need attention"),       # r 3, (4 + 2) / 2 = 3
        13007: (4, "At risk"),              # r 2, (2 + 5) / 2 -> 4
        13008: (3, "At risk"),              # r 2
        13009: (5, "Can't lose them"),      # r 1, (5 + 5) / 2
        13010: (5, "Can't lose them"),      # r 1, (5 + 4) / 2 -> 5
    }


def test_customer_rfm_a_tie_at_the_bottom_scores_one(shop):
    """Ties take the average of their places: one-invoice customers score 1 (with cume_dist, 2)."""
    lines = []
    for i, invoices in enumerate((1, 1, 1, 2, 2, 3, 4, 5, 6, 7)):
        lines += [f"{i}{n},S,ITEM,1,2011-01-{10 + n:02d} 10:00:00,10.0,{15001 + i},United Kingdom"
                  for n in range(invoices)]
    shop.ingest("retail", RETAIL_HEADER, *lines)
    shop.build("+gold.customer_rfm")
    scores = {r["customer_id"]: r["f_score"] for r in shop.query("SELECT * FROM gold.customer_rfm")}
    # frequency 1: places 1-3, average 2, ceil(5 * 2 / 10) = 1 (cume_dist: ceil(5 * 3 / 10) = 2);
    # 2: places 4-5, average 4.5 -> 3; 3: place 6 -> 3; 4: 7 -> 4; 5: 8 -> 4; 6: 9 -> 5; 7: 10 -> 5
    assert [scores[15001 + i] for i in range(10)] == [1, 1, 1, 3, 3, 3, 4, 4, 5, 5]


def test_customer_rfm_ledger_counts_guest_sales_as_diverted(rfm_shop):
    (entry,) = rfm_shop.ledger("gold.customer_rfm")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"], entry["rows_written"]) == (
        32, 31, {"guest_sale": 1}, 10)
    assert entry["is_balanced"] is True



def test_customer_rfm_equal_measures_get_equal_scores(shop):
    shop.ingest("retail", RETAIL_HEADER,
                # 14001 and 14002 bought exactly the same way: one invoice of 10.0 on 2011-01-10
                "1,S,ITEM,1,2011-01-10 10:00:00,10.0,14001,United Kingdom",
                "2,S,ITEM,1,2011-01-10 10:00:00,10.0,14002,United Kingdom",
                "3,S,ITEM,1,2011-01-15 10:00:00,20.0,14003,United Kingdom",
                "4,S,ITEM,1,2011-01-20 10:00:00,30.0,14004,United Kingdom",
                "5,S,ITEM,1,2011-01-20 10:00:00,30.0,14004,United Kingdom",
                "6,S,ITEM,1,2011-01-30 10:00:00,40.0,14005,United Kingdom")
    shop.build("+gold.customer_rfm")
    rows = {r["customer_id"]: r for r in shop.query("SELECT * FROM gold.customer_rfm")}
    measures = ("recency_days", "frequency", "monetary")  # snapshot_date 2011-01-31
    assert [rows[14001][m] for m in measures] == [rows[14002][m] for m in measures] == [21, 1, 10.0]
    scores = ("r_score", "f_score", "m_score")
    assert [rows[14001][s] for s in scores] == [rows[14002][s] for s in scores]


def test_customer_rfm_best_customer_scores_five_with_few_customers(shop):
    shop.ingest("retail", RETAIL_HEADER,
                "1,S,ITEM,1,2011-01-10 10:00:00,10.0,14001,United Kingdom",
                "2,S,ITEM,1,2011-01-29 10:00:00,50.0,14002,United Kingdom",
                "3,S,ITEM,1,2011-01-30 10:00:00,50.0,14002,United Kingdom")
    shop.build("+gold.customer_rfm")
    rows = {r["customer_id"]: r for r in shop.query("SELECT * FROM gold.customer_rfm")}
    assert (rows[14002]["recency_days"], rows[14002]["frequency"], rows[14002]["monetary"]) == (1, 2, 100.0)
    assert (rows[14002]["r_score"], rows[14002]["f_score"], rows[14002]["m_score"]) == (5, 5, 5)
