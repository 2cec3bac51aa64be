"""What dashboard pages show: quantities with separators, ids as labels, and why a chart is empty."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from shoplake.serve.pages import grid


def test_ids_and_versions_are_labels_and_counts_are_quantities():
    rows = [{"user_id": 510054370, "model_version": 12345, "count_users": 2607, "revenue": 735197.456,
             "share": 0.69521, "cutoff_at": datetime(2019, 11, 10), "brand": None}]
    assert grid(rows).rows == [["510054370", "12345", "2,607", "735,197.46", "0.6952", "2019-11-10 00:00:00", ""]]


def test_a_range_without_rows_says_so_and_names_the_dates_with_data(served):
    """Clickstream and retail data cover different years: a clickstream week has no retail rows, and the
    retail chart says that (not 'no data yet', which would send the user to re-run the job)."""
    from shoplake.query import run_query
    from shoplake.serve.pages import DateRange, build_page

    first, last = run_query(served.lake, "SELECT min(invoice_date) AS a, max(invoice_date) AS b "
                                         "FROM gold.daily_sales_by_country").to_pylist()[0].values()
    start = date(last.year + 5, 1, 1)
    page = build_page(served.lake, "overview", DateRange(start, start + timedelta(days=6)))
    net = next(s for s in page.sections if s.id == "overview-net-revenue")
    assert net.empty
    assert net.empty_text == (f"no rows from {start} to {start + timedelta(days=6)} "
                              f"(the data covers {first} to {last})")
    retail = next(g for g in page.kpi_groups if g.title == "Retail sales")
    assert all(k.value is None for k in retail.kpis)
