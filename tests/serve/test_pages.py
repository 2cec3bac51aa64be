"""What dashboard pages show: formatted numbers, periods that cannot mislead, and the SQL behind each figure."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import pytest

from shoplake.query import run_query
from shoplake.serve import formats
from shoplake.serve.pages import PAGES, build_page
from shoplake.serve.view import FilterError, Filters, Kpi, Period, default_period, grid, parse_filters


def test_numbers_have_separators_shares_are_percent_and_money_has_its_currency():
    rows = [{"user_id": 510054370, "model_version": 12345, "count_users": 2607, "net_revenue": 735197.456,
             "share_of_users": 0.69521, "cutoff_at": datetime(2019, 11, 10), "brand": None, "mean_frequency": 0.0,
             "returns_value": -52.5}]
    cells = [c.text for c in grid(rows, currency="GBP").rows[0]]
    assert cells == ["510054370", "12345", "2,607", "£735,197", "69.52%", "2019-11-10 00:00:00", "", "0", "−£52.50"]
    assert formats.shown(1234.5, "money", None) == "1,234 price units"
    assert formats.shown(8400.0, "count") == "8,400"
    # an interval bound is of its estimate's kind: money stays money, a conversion bound is a share
    assert [formats.kind_of(c) for c in ("expected_value_12m_low", "expected_value_12m_high", "conversion_low",
                                         "abandonment_high", "bin_low")] == ["money", "money", "rate", "rate", "rate"]


def test_the_default_period_is_the_last_complete_month_else_week_else_everything():
    assert default_period(date(2019, 10, 1), date(2019, 11, 9)) == \
        Period(date(2019, 10, 1), date(2019, 10, 31), date(2019, 10, 1), date(2019, 11, 9), kind="month")
    assert default_period(date(2019, 10, 1), date(2019, 10, 31)).start == date(2019, 10, 1)
    # 2019-10-02 (Wed) to 2019-10-20 (Sun): no whole month; the last Monday-Sunday week
    week = default_period(date(2019, 10, 2), date(2019, 10, 20))
    assert (week.start, week.end, week.kind) == (date(2019, 10, 14), date(2019, 10, 20), "week")
    assert default_period(date(2019, 10, 2), date(2019, 10, 5)).kind == "all"


def test_a_comparison_needs_a_fully_covered_previous_period():
    october = default_period(date(2019, 10, 1), date(2019, 11, 9))
    before, said = october.comparison()
    assert before is None
    assert said == ("no comparison: the previous period (September 2019) is not fully covered by the data, "
                    "which starts on 2019-10-01")
    november = default_period(date(2019, 10, 1), date(2019, 11, 30))
    before, said = november.comparison()
    assert (before.start, before.end) == (date(2019, 10, 1), date(2019, 10, 31)) and said == "change vs October 2019"
    chosen = Period(date(2019, 10, 2), date(2019, 10, 3), date(2019, 10, 1), date(2019, 11, 30))
    assert chosen.comparison()[0] is None  # the previous two days start before the data


def test_rates_change_in_points_and_a_returns_increase_is_bad():
    rate = Kpi("k", "conversion", 0.0594, 0.0378, "rate")
    assert rate.change_text == "+2.16 pp vs 3.78%" and rate.tone == "good"
    returns = Kpi("r", "Returns", -1040.0, -682.27, "money", "GBP", better=-1)
    assert returns.change_text == "52.4% larger vs −£682.27" and returns.tone == "bad"


@pytest.mark.parametrize(("values", "message"), [
    ({"start": "yesterday"}, "dates must look like 2019-10-31"),
    ({"start": "2019-10-05", "end": "2019-10-01"}, "the start 2019-10-05 is after the end 2019-10-01"),
    ({"start": "0001-01-01"}, "dates must lie between 1900-01-01 and 2199-12-31"),
    ({"segment": "Champions"}, "segment must look like rfm:Champions"),
    ({"user": "1 OR 1=1"}, "user must be a user id"),
    ({"product": "-5"}, "product must be a product id"),
])
def test_filters_that_cannot_apply_are_refused(values, message):
    with pytest.raises(FilterError, match=message):
        parse_filters(values)


def test_a_start_after_the_data_is_an_error_not_a_flipped_range(served):
    with pytest.raises(FilterError, match="the start 2030-01-01 is after the last date with data on this page"):
        build_page(served.lake, "overview", Filters(start=date(2030, 1, 1)))


def test_a_range_without_rows_says_so_and_names_the_dates_with_data(served):
    """Clickstream and retail data cover different years: a clickstream week has no retail rows, and the
    retail chart says that (not 'no data yet', which would send the user to re-run the job)."""
    first, last = run_query(served.lake, "SELECT min(invoice_date) AS a, max(invoice_date) AS b "
                                         "FROM gold.daily_sales_by_country").to_pylist()[0].values()
    start = date(last.year + 5, 1, 1)
    page = build_page(served.lake, "overview", Filters(start, start + timedelta(days=6)))
    net = next(s for s in page.sections if s.id == "overview-net-revenue")
    assert net.empty
    assert net.empty_text == (f"no rows from {start} to {start + timedelta(days=6)} "
                              f"(the data covers {first} to {last})")
    retail = next(g for g in page.kpi_groups if g.title == "Retail sales")
    assert all(k.value is None for k in retail.kpis)


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.mark.parametrize("key", PAGES)
def test_every_section_and_kpi_shows_the_sql_that_gives_its_rows(served, key):
    """The "view SQL" text, run as is by `shoplake sql`'s path, returns the rows the page drew and offers as CSV."""
    filters = Filters(country="United Kingdom") if key in ("sales", "overview") else Filters()
    page = build_page(served.lake, key, filters)
    checked = 0
    for section in page.sections:
        if not section.sql:
            continue
        result = run_query(served.lake, section.sql)
        assert result.column_names == section.columns or not section.data, section.id
        again = [[formats.plain(v) for v in row.values()] for row in result.to_pylist()]
        assert len(again) == len(section.data), section.id
        assert all(_same(a, b) for x, y in zip(again, section.data, strict=True) for a, b in zip(x, y, strict=True)), \
            section.id
        checked += 1
    for group in page.kpi_groups:
        for kpi in group.kpis:
            value = run_query(served.lake, kpi.sql).to_pylist()[0]
            assert _same(next(iter(value.values())), kpi.value), kpi.key
            checked += 1
    assert checked >= 1


def test_data_health_says_how_fresh_the_data_is_and_highlights_flagged_checks(served):
    page = build_page(served.lake, "health", Filters())
    through = run_query(served.lake, "SELECT (SELECT max(event_date) FROM gold.daily_funnel) AS c, "
                                     "(SELECT max(invoice_date) FROM gold.daily_sales_by_country) AS r").to_pylist()[0]
    assert page.banner.startswith(f"Data through {through['c']} (clickstream) and {through['r']} (retail). "
                                  f"Last successful run: daily ")
    quality = next(s for s in page.sections if s.id == "health-quality")
    passed = quality.grid.columns.index("passed")
    assert [c == "fail" for c in quality.grid.row_classes] == [row[passed].text == "no" for row in quality.grid.rows]
    diverted = next(s for s in page.sections if s.id == "health-diverted")
    by_reason = run_query(served.lake, "SELECT sum(rows_diverted) AS n FROM ops.ledger").to_pylist()[0]["n"]
    assert sum(row[-1] for row in diverted.data) == by_reason  # every diverted row has its reason


def test_a_one_day_range_ticks_by_day(served):
    import json

    day = run_query(served.lake, "SELECT max(event_date) AS d FROM gold.daily_funnel").to_pylist()[0]["d"]
    page = build_page(served.lake, "overview", Filters(day, day))
    figure = json.loads(next(s for s in page.sections if s.id == "overview-click-revenue").figure)
    assert figure["layout"]["xaxis"]["tickvals"] == [day.isoformat()]
    assert figure["layout"]["xaxis"]["tickformat"] == "%Y-%m-%d"


def test_cohort_cells_the_data_does_not_cover_to_the_end_are_marked(served):
    import json

    section = next(s for s in build_page(served.lake, "retention", Filters()).sections if s.id == "retention-weekly")
    marked = sum(text.endswith(" *") for row in json.loads(section.figure)["data"][0]["text"] for text in row)
    complete = section.columns.index("is_complete")
    assert marked == sum(row[complete] is False for row in section.data) > 0


def test_a_filter_value_is_one_literal_never_sql(served):
    hostile = "x' OR '1'='1"
    page = build_page(served.lake, "sales", parse_filters({"country": hostile, "start": "1900-01-01"}))
    ranked = next(s for s in page.sections if s.id == "sales-by-country")
    assert ranked.empty and "country = 'x'' OR ''1''=''1'" in ranked.sql


def _section(page, section_id: str):
    return next(s for s in page.sections if s.id == section_id)


def _column(section, name: str) -> list:
    index = section.columns.index(name)
    return [row[index] for row in section.data]


def test_the_funnel_reads_weekly_rows_over_a_long_range_and_its_figures_agree(served):
    first, last = run_query(served.lake, "SELECT min(event_date) AS a, max(event_date) AS b FROM silver.events"
                            ).to_pylist()[0].values()
    name = "view_cart_purchase"
    for start, grain in ((last - timedelta(days=13), "day"), (first - timedelta(days=40), "week")):
        page = build_page(served.lake, "funnel", Filters(start, last), options=False)
        over_time = _section(page, f"funnel-{name}-over-time")
        periods = [date.fromisoformat(d) for d in _column(over_time, "period_start")]
        expected = run_query(served.lake, f"""
            SELECT period_start FROM gold.funnel_{name} WHERE grain = '{grain}' AND breakdown = 'all' AND step = 1
              AND period_start BETWEEN DATE '{start}' AND DATE '{last}' ORDER BY 1""").column(0).to_pylist()
        assert periods == expected and len(periods) > 1, grain
        assert grain == "day" or all(d.isoweekday() == 1 for d in periods)
        # the time to convert counts every entry of the period that reached a step: as many as the steps say
        steps, times = _section(page, f"funnel-{name}-steps"), _section(page, f"funnel-{name}-time")
        assert _column(times, "entrants") == _column(steps, "entrants")[1:]
        medians = _column(times, "median_seconds_to_step")
        assert all(m is not None and m >= 0 for m in medians)
        # the user-segment breakdown partitions the entrants
        segments = _section(page, f"funnel-{name}-segments")
        assert sum(_column(segments, "entered")) == _column(steps, "entrants")[0]
        assert sum(_column(segments, "converted")) == _column(steps, "entrants")[-1]
        assert ("weekly rows" in _section(page, f"funnel-{name}-steps").note) == (grain == "week")
    # a unit entering on several days of a week is one weekly entry: fewer weekly entrants than daily ones
    both = run_query(served.lake, f"SELECT grain, sum(entrants) AS n FROM gold.funnel_{name} "
                                  "WHERE breakdown = 'all' AND step = 1 GROUP BY 1").to_pylist()
    totals = {r["grain"]: r["n"] for r in both}
    assert 0 < totals["week"] < totals["day"]


def test_the_segments_page_applies_the_segment_filter(served):
    (users,) = run_query(served.lake, "SELECT segment_name AS s, count(*) AS n FROM gold.user_segments GROUP BY 1 "
                                      "ORDER BY 2, 1 LIMIT 1").to_pylist()
    page = build_page(served.lake, "segments", Filters(segment=f"users:{users['s']}"), options=False)
    profile = _section(page, "segments-users-profile")
    names = [row[0].text for row in profile.grid.rows]
    assert [n == users["s"] for n in names] == [c == "chosen" for c in profile.grid.row_classes]
    chosen = _section(page, "segments-users-chosen")
    assert len(chosen.data) == min(users["n"], 500) and set(_column(chosen, "segment_name")) == {users["s"]}
    funnel = build_page(served.lake, "funnel", Filters(segment=f"users:{users['s']}"), options=False)
    marked = _section(funnel, "funnel-view_cart_purchase-segments").grid.row_classes
    assert marked.count("chosen") == 1
    (rfm,) = run_query(served.lake, "SELECT rfm_segment AS s, count(*) AS n FROM gold.customer_rfm "
                                    "JOIN gold.customer_segments USING (customer_id) GROUP BY 1 "
                                    "ORDER BY 2 DESC, 1 LIMIT 1").to_pylist()
    across = _section(build_page(served.lake, "segments", Filters(segment=f"rfm:{rfm['s']}"), options=False),
                      "segments-customers-rfm")
    assert sum(_column(across, "count_customers")) == rfm["n"]
    assert sum(_column(across, "share_of_customers")) == pytest.approx(1.0)
    unfiltered = build_page(served.lake, "segments", Filters(), options=False)
    assert {s.id for s in unfiltered.sections}.isdisjoint({"segments-users-chosen", "segments-customers-rfm"})


def test_a_users_segment_filters_the_funnel_charts_through_the_entries(served):
    name = "view_cart_purchase"
    everyone = build_page(served.lake, "funnel", Filters(), options=False)
    by_segment = _section(everyone, f"funnel-{name}-segments")
    row = max(zip(_column(by_segment, "segment_name"), _column(by_segment, "entered"),
                  _column(by_segment, "converted"), strict=True), key=lambda r: (r[2], r[1]))
    segment, entered, converted = row
    page = build_page(served.lake, "funnel", Filters(segment=f"users:{segment}"), options=False)
    steps = _section(page, f"funnel-{name}-steps")
    assert _column(steps, "entrants")[0] == entered and _column(steps, "entrants")[-1] == converted
    assert _column(steps, "entrants") != _column(_section(everyone, f"funnel-{name}-steps"), "entrants")
    # the time to convert and the category table count the same entries; the conversion per day too
    assert _column(_section(page, f"funnel-{name}-time"), "entrants") == _column(steps, "entrants")[1:]
    # each category counts the segment's entries of that category: fewer than everyone's
    mine, all_of = (dict(zip(_column(section, "category_l1"), _column(section, "entered"), strict=True))
                    for section in (_section(p, f"funnel-{name}-breakdown") for p in (page, everyone)))
    assert all(n <= all_of.get(category, 0) for category, n in mine.items()) and sum(mine.values()) < sum(
        all_of.values())
    over_time = _section(page, f"funnel-{name}-over-time")
    last_step = _column(over_time, "entrants")
    assert sum(last_step) == converted
    for section in page.sections:  # the view SQL of every section gives its rows
        if section.sql:
            again = run_query(served.lake, section.sql).to_pylist()
            assert [[formats.plain(v) for v in r.values()] for r in again] == section.data, section.id
    assert "segment" in page.filters_used
def rows(served, sql: str) -> list[dict]:
    return run_query(served.lake, sql).to_pylist()


def test_the_recommendations_page_shows_the_chosen_users_list_and_similar_products(served):
    lists = rows(served, "SELECT user_id, rank, product_id, reason FROM gold.user_recommendations ORDER BY 1, 2")
    assert lists, "the served lake's daily job scored the recommender"
    user = lists[-1]["user_id"]
    page = build_page(served.lake, "recommendations", parse_filters({"user": str(user)}))
    shown = next(s for s in page.sections if s.id == "recommendations-user")
    at = {name: shown.columns.index(name) for name in ("rank", "product_id", "reason")}
    assert [(r[at["rank"]], r[at["product_id"]], r[at["reason"]]) for r in shown.data] == \
        [(r["rank"], r["product_id"], r["reason"]) for r in lists if r["user_id"] == user]
    product = lists[-1]["product_id"]
    page = build_page(served.lake, "recommendations", parse_filters({"product": str(product)}))
    similar = next(s for s in page.sections if s.id == "recommendations-similar")
    expected = rows(served, f"SELECT similar_product_id FROM gold.similar_products WHERE product_id = {product} "
                            f"ORDER BY rank")
    assert [r[similar.columns.index("similar_product_id")] for r in similar.data] == \
        [r["similar_product_id"] for r in expected]


def test_the_lifetime_value_page_ranks_customers_with_ordered_intervals_and_filters_by_segment(served):
    page = build_page(served.lake, "clv", Filters())
    top = next(s for s in page.sections if s.id == "clv-top-table")
    at = {name: top.columns.index(name) for name in
          ("expected_value_12m_low", "expected_value_12m", "expected_value_12m_high", "rfm_segment")}
    values = [r[at["expected_value_12m"]] for r in top.data]
    assert values and values == sorted(values, reverse=True)
    assert all(r[at["expected_value_12m_low"]] <= r[at["expected_value_12m"]] <= r[at["expected_value_12m_high"]]
               for r in top.data)
    best = rows(served, "SELECT max(expected_value_12m) AS v FROM gold.customer_clv")[0]["v"]
    assert values[0] == pytest.approx(best)
    segment = top.data[0][at["rfm_segment"]]
    chosen = build_page(served.lake, "clv", parse_filters({"segment": f"rfm:{segment}"}))
    summary = next(s for s in chosen.sections if s.id == "clv-summary")
    count = rows(served, f"SELECT count(*) AS n FROM gold.customer_clv JOIN gold.customer_rfm USING (customer_id) "
                         f"WHERE rfm_segment = '{segment}'")[0]["n"]
    assert summary.data[0][summary.columns.index("count_customers")] == count
