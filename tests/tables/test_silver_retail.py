"""silver.sales and silver.returns: retail lines split into sales, returns, quarantine and duplicates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from .shop import RETAIL_HEADER, RETAIL_II_HEADER

UCI_ROWS = (
    # 1: a sale; M/D/YYYY H:MM date; float-formatted customer id
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom",
    # 2: a guest sale (empty customer id)
    "536366,22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,,United Kingdom",
    # 3: a cancellation
    "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527.0,United Kingdom",
    # 4: a negative quantity on a normal invoice (a return); 12/9 is December 9th, a Thursday
    "536381,22139,RETROSPOT TEA SET,-2,12/9/2010 10:03,4.95,15311.0,United Kingdom",
    # 5: a free line -> quarantine non_positive_unit_price
    "536414,22139,amazon,56,12/1/2010 11:52,0,,United Kingdom",
    # 6: quantity 0 -> quarantine non_positive_quantity
    "536415,22140,test,0,12/1/2010 11:53,1.5,,United Kingdom",
    # 7: a bad-debt adjustment with a negative price -> quarantine non_positive_unit_price
    "A563185,B,Adjust bad debt,1,8/12/2011 14:50,-11062.06,,United Kingdom",
    # 8: an exact duplicate of row 1
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom",
)

RETAIL_II_ROWS = (
    "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom",
    "C489449,22087,PAPER BUNTING WHITE LACE,-12,2009-12-01 10:33:00,2.95,16321,Australia",
)

COLUMNS = ("invoice_id", "stock_code", "description", "quantity", "invoiced_at", "invoice_date", "unit_price",
           "line_revenue", "customer_id", "country", "hour_of_day", "day_of_week")


@pytest.fixture(scope="module")
def retail_shop(module_shop):
    shop = module_shop("retail")
    shop.ingest("retail", RETAIL_HEADER, *UCI_ROWS)
    shop.ingest("retail", RETAIL_II_HEADER, *RETAIL_II_ROWS)
    shop.results = shop.build("silver.sales silver.returns")
    return shop


def _rows(shop, table):
    rows = shop.query(f"SELECT * FROM {table} ORDER BY invoiced_at, invoice_id")
    return [tuple(pytest.approx(r[c]) if c == "line_revenue" else r[c] for c in COLUMNS) for r in rows]


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_sales_hold_valid_lines_from_both_header_variants(retail_shop):
    uk = "United Kingdom"
    assert _rows(retail_shop, "silver.sales") == [
        ("489434", "85048", "15CM CHRISTMAS GLASS BALL 20 LIGHTS", 12, _at(2009, 12, 1, 7, 45),
         date(2009, 12, 1), 6.95, 83.4, 13085, uk, 7, 2),
        ("536365", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, _at(2010, 12, 1, 8, 26),
         date(2010, 12, 1), 2.55, 15.3, 17850, uk, 8, 3),
        ("536366", "22633", "HAND WARMER UNION JACK", 6, _at(2010, 12, 1, 8, 28),
         date(2010, 12, 1), 1.85, 11.1, None, uk, 8, 3),
    ]


def test_returns_hold_cancellations_and_negative_quantities_with_negative_revenue(retail_shop):
    uk = "United Kingdom"
    assert _rows(retail_shop, "silver.returns") == [
        ("C489449", "22087", "PAPER BUNTING WHITE LACE", -12, _at(2009, 12, 1, 10, 33),
         date(2009, 12, 1), 2.95, -35.4, 16321, "Australia", 10, 2),
        ("C536379", "D", "Discount", -1, _at(2010, 12, 1, 9, 41),
         date(2010, 12, 1), 27.5, -27.5, 14527, uk, 9, 3),
        ("536381", "22139", "RETROSPOT TEA SET", -2, _at(2010, 12, 9, 10, 3),
         date(2010, 12, 9), 4.95, -9.9, 15311, uk, 10, 4),
    ]


def test_sales_quarantine_free_adjustment_and_zero_quantity_lines(retail_shop):
    rows = retail_shop.query("SELECT reason, _stage, InvoiceNo, StockCode, Quantity, UnitPrice, CustomerID, "
                             "_source_row FROM quarantine.retail ORDER BY _source_row")
    assert [(r["reason"], r["_stage"], r["InvoiceNo"], r["StockCode"], r["Quantity"], r["CustomerID"],
             r["_source_row"]) for r in rows] == [
        ("non_positive_unit_price", "silver", "536414", "22139", "56", None, 5),
        ("non_positive_quantity", "silver", "536415", "22140", "0", None, 6),
        ("non_positive_unit_price", "silver", "A563185", "B", "1", None, 7),
    ]
    assert float(rows[2]["UnitPrice"]) == -11062.06


def test_retail_every_bronze_row_lands_in_exactly_one_place(retail_shop):
    (sales,) = retail_shop.ledger("silver.sales")
    (returns,) = retail_shop.ledger("silver.returns")
    assert (sales["rows_in"], sales["rows_out"]) == (7, 3)
    assert sales["diverted"] == {
        "quarantine:non_positive_unit_price": 2, "quarantine:non_positive_quantity": 1, "duplicate": 1}
    assert (returns["rows_in"], returns["rows_out"], returns["diverted"]) == (3, 3, {})
    assert sales["is_balanced"] and returns["is_balanced"]

    bronze = retail_shop.count("bronze.retail")
    in_sales, in_returns = retail_shop.count("silver.sales"), retail_shop.count("silver.returns")
    quarantined = retail_shop.count("quarantine.retail")
    duplicates = sales["diverted"]["duplicate"] + returns["diverted"].get("duplicate", 0)
    assert (bronze, in_sales, in_returns, quarantined, duplicates) == (10, 3, 3, 3, 1)
    assert sales["rows_in"] + returns["rows_in"] == bronze
    assert (sales["rows_out"], returns["rows_out"]) == (in_sales, in_returns)
    assert in_sales + in_returns + quarantined + duplicates == bronze


def test_retail_quality_rules_are_recorded(retail_shop):
    rows = retail_shop.query("SELECT table_name, rule, action, rows_checked, rows_failed "
                             "FROM ops.data_quality WHERE table_name IN ('silver.sales', 'silver.returns')")
    got = {(r["table_name"], r["rule"]): (r["action"], r["rows_checked"], r["rows_failed"]) for r in rows}
    assert got == {
        ("silver.sales", "not_null_invoice_id"): ("quarantine", 7, 0),
        ("silver.sales", "not_null_stock_code"): ("quarantine", 7, 0),
        ("silver.sales", "not_null_invoiced_at"): ("quarantine", 7, 0),
        ("silver.sales", "non_positive_quantity"): ("quarantine", 7, 1),
        ("silver.sales", "non_positive_unit_price"): ("quarantine", 7, 2),
        ("silver.sales", "not_null_country"): ("warn", 7, 0),
        ("silver.returns", "not_null_invoiced_at"): ("quarantine", 3, 0),
        ("silver.returns", "not_null_quantity"): ("quarantine", 3, 0),
        ("silver.returns", "returns_are_negative"): ("quarantine", 3, 0),
    }


def test_retail_unparseable_row_is_quarantined_at_ingest(shop):
    result = shop.ingest("retail", RETAIL_HEADER, UCI_ROWS[0],
                         "536366,22633,HAND WARMER,six,12/1/2010 8:28,1.85,,United Kingdom",
                         "536367,22634,HAND WARMER,6,not a date,1.85,17850.5,United Kingdom")
    assert (result.rows_read, result.rows_bronze) == (3, 1)
    rows = shop.query("SELECT reason, _stage, Quantity, InvoiceDate FROM quarantine.retail ORDER BY reason")
    assert [(r["reason"], r["_stage"], r["Quantity"], r["InvoiceDate"]) for r in rows] == [
        ("invalid_InvoiceDate", "ingest", "6", "not a date"),
        ("invalid_Quantity", "ingest", "six", "12/1/2010 8:28"),
    ]
    (entry,) = shop.ledger("bronze.retail")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (
        3, 1, {"quarantine:invalid_InvoiceDate": 1, "quarantine:invalid_Quantity": 1})
