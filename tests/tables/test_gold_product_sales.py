"""gold.product_sales: one row per stock_code with a sale line: description, units, revenue, returns."""

from __future__ import annotations

import pytest

from .shop import RETAIL_HEADER, by

ROWS = (
    # A: three sale lines; "RED MUG" is its most frequent description
    "1001,A,RED MUG,2,2010-12-01 09:00:00,3.0,12345,United Kingdom",
    "1002,A,RED MUG,4,2010-12-01 10:00:00,3.0,,United Kingdom",
    "1003,A,\"RED MUG, CHIPPED\",1,2010-12-02 10:00:00,3.0,12346,United Kingdom",
    # A: two units returned by a cancellation, one by a negative quantity line
    "C2001,A,RED MUG,-2,2010-12-03 10:00:00,3.0,12345,United Kingdom",
    "2002,A,RED MUG,-1,2010-12-03 11:00:00,3.0,,United Kingdom",
    # B: one sale line, never returned
    "1001,B,BLUE BOWL,1,2010-12-01 09:00:00,10.0,12345,United Kingdom",
    # C: returned but never sold: no row
    "C2003,C,LAMP,-1,2010-12-03 10:00:00,8.0,12345,United Kingdom",
    # E: the most frequent description that is not empty
    "1004,E,,1,2010-12-04 10:00:00,2.0,12347,France",
    "1005,E,,1,2010-12-04 11:00:00,2.0,12347,France",
    "1006,E,CANDLE,1,2010-12-04 12:00:00,2.0,12347,France",
)

COLUMNS = ("description", "units", "gross_revenue", "count_invoices", "count_customers", "returned_units",
           "count_sale_lines")


@pytest.fixture(scope="module")
def product_sales_shop(module_shop):
    shop = module_shop("product_sales")
    shop.ingest("retail", RETAIL_HEADER, *ROWS)
    shop.results = shop.build("+gold.product_sales")
    return shop


def test_product_sales_per_stock_code(product_sales_shop):
    rows = by(product_sales_shop.query("SELECT * FROM gold.product_sales"), "stock_code")
    got = {code: tuple(r[c] for c in COLUMNS) for code, r in rows.items()}
    assert got == {
        "A": ("RED MUG", 7, 21.0, 3, 2, 3, 3),
        "B": ("BLUE BOWL", 1, 10.0, 1, 1, 0, 1),
        "E": ("CANDLE", 3, 6.0, 3, 1, 0, 3),
    }


def test_product_sales_ledger_is_balanced(product_sales_shop):
    assert product_sales_shop.balance("gold.product_sales") == (7, 7, 3, True)


def test_product_sales_returned_units_are_positive_for_a_cancellation_with_positive_quantity(shop):
    # Cancellation lines normally carry negative quantities; one written with a positive quantity is still
    # a return (silver.returns makes its line_revenue negative), so it adds to returned_units.
    shop.ingest("retail", RETAIL_HEADER,
                "1001,A,RED MUG,5,2010-12-01 09:00:00,3.0,12345,United Kingdom",
                "C2001,A,RED MUG,-2,2010-12-03 10:00:00,3.0,12345,United Kingdom",
                "C2002,A,RED MUG,1,2010-12-03 11:00:00,3.0,12345,United Kingdom")
    shop.build("+gold.product_sales")
    returns = shop.query("SELECT invoice_id, quantity, line_revenue FROM silver.returns ORDER BY invoice_id")
    assert [(r["invoice_id"], r["quantity"], r["line_revenue"]) for r in returns] == [
        ("C2001", -2, -6.0), ("C2002", 1, -3.0)]
    (row,) = shop.query("SELECT stock_code, units, returned_units FROM gold.product_sales")
    assert (row["stock_code"], row["units"], row["returned_units"]) == ("A", 5, 3)
