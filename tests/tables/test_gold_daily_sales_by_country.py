"""gold.daily_sales_by_country: one row per (invoice_date, country) with sales or returns."""

from __future__ import annotations

from datetime import date

import pytest

from .shop import RETAIL_HEADER

ROWS = (
    # 2010-12-01 United Kingdom: invoice 1001 (customer 12345, two lines), 1002 (guest), a cancellation
    "1001,A,RED MUG,2,2010-12-01 09:00:00,3.0,12345,United Kingdom",
    "1001,B,BLUE BOWL,1,2010-12-01 09:00:00,10.0,12345,United Kingdom",
    "1002,A,RED MUG,4,2010-12-01 10:00:00,3.0,,United Kingdom",
    "C1003,A,RED MUG,-1,2010-12-01 11:00:00,3.0,12345,United Kingdom",
    # 2010-12-01 France: one sale
    "1004,B,BLUE BOWL,3,2010-12-01 12:00:00,10.0,12680,France",
    # 2010-12-02 United Kingdom: only returns (a cancellation and a negative quantity)
    "C1005,B,BLUE BOWL,-2,2010-12-02 09:00:00,10.0,12345,United Kingdom",
    "1006,A,RED MUG,-1,2010-12-02 09:30:00,3.0,,United Kingdom",
    # 2010-12-02 without a country: a sale and a return meet in one row
    "1007,A,RED MUG,1,2010-12-02 10:00:00,3.0,12999,",
    "C1008,A,RED MUG,-1,2010-12-02 11:00:00,3.0,12999,",
)

COLUMNS = ("count_invoices", "count_customers", "units", "gross_revenue", "returns_value", "net_revenue")


@pytest.fixture(scope="module")
def sales_shop(module_shop):
    shop = module_shop("daily_sales_by_country")
    shop.ingest("retail", RETAIL_HEADER, *ROWS)
    shop.results = shop.build("+gold.daily_sales_by_country")
    return shop


def test_daily_sales_by_country_rows(sales_shop):
    rows = sales_shop.query("SELECT * FROM gold.daily_sales_by_country")
    got = {(r["invoice_date"], r["country"]): tuple(r[c] for c in COLUMNS) for r in rows}
    assert len(got) == len(rows)
    assert got == {
        (date(2010, 12, 1), "United Kingdom"): (2, 1, 7, 28.0, -3.0, 25.0),
        (date(2010, 12, 1), "France"): (1, 1, 3, 30.0, 0.0, 30.0),
        # only returns: still a row, with zero sales
        (date(2010, 12, 2), "United Kingdom"): (0, 0, 0, 0.0, -23.0, -23.0),
        (date(2010, 12, 2), None): (1, 1, 1, 3.0, -3.0, 0.0),
    }


def test_daily_sales_by_country_ledger_is_balanced(sales_shop):
    # 5 sale lines and 4 return lines folded into 4 rows
    assert sales_shop.balance("gold.daily_sales_by_country") == (9, 9, 4, True)
    assert list(sales_shop.results) == ["silver.sales", "silver.returns", "gold.daily_sales_by_country"]
