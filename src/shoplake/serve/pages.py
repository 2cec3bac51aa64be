"""The dashboard pages: what each shows, read from Gold, ML and ops tables through the catalog.

Each page is built on its own engine session (`Reader`), which binds every catalog table a query names as
the files of one Delta snapshot, so a page is consistent while jobs write. The parts a page is made of
(filters, periods, KPIs, sections, the SQL each keeps) are in `shoplake.serve.view`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from shoplake.catalog.funnels import wilson_sql
from shoplake.lake import Lake
from shoplake.layers.gold import RFM_SEGMENTS
from shoplake.serve import charts, formats
from shoplake.serve.formats import CLICK_CURRENCY, RETAIL_CURRENCY, Kind
from shoplake.serve.view import (
    FIRST_DATE,
    LAST_DATE,
    FilterError,
    Filters,
    PageView,
    Period,
    Reader,
    Result,
    Section,
    chart,
    date_condition,
    in_period,
    kpi_group,
    literal,
    plain_table,
    table,
    where_clause,
)

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "no data yet: run `shoplake run daily`"

# -- pages ---------------------------------------------------------------------------------------------
_CLICK = "gold.daily_funnel"
_SALES = "gold.daily_sales_by_country"
_FUNNEL_KPIS: tuple[tuple[str, str, str, Kind, int], ...] = (
    ("events", "Events", "sum(count_events)", "count", 1),
    ("sessions", "Sessions", "sum(count_sessions)", "count", 1),
    ("purchases", "Purchases", "sum(count_purchases)", "count", 1),
    ("revenue", "Revenue", "sum(revenue)", "money", 1),
    ("session_conversion", "Session conversion",
     "sum(count_purchasing_sessions) / nullif(sum(count_sessions), 0)", "rate", 1),
)
_SALES_KPIS: tuple[tuple[str, str, str, Kind, int], ...] = (
    ("net_revenue", "Net revenue", "sum(net_revenue)", "money", 1),
    ("gross_revenue", "Gross revenue", "sum(gross_revenue)", "money", 1),
    ("returns_value", "Returns (negative amounts)", "sum(returns_value)", "money", -1),
    ("invoices", "Invoices", "sum(count_invoices)", "count", 1),
    ("units", "Units", "sum(units)", "count", 1),
)
RETURNS_NOTE = "Returns are negative amounts everywhere (the data contract's sign: net = gross + returns)."


def _period_note(period: Period | None) -> str:
    return f"period: {period}" if period else ""


def overview(reader: Reader, filters: Filters) -> PageView:
    page = PageView("overview", "Overview", "headline KPIs of the period, compared with the previous period only "
                                            "when the data covers it fully", filters_used=("dates", "country"))
    click = filters.resolve(reader, _CLICK, "event_date")
    sales = filters.resolve(reader, _SALES, "invoice_date")
    page.periods = [p for p in (click, sales) if p]
    country = ("country = ?", filters.country)
    groups = [kpi_group(reader, "Clickstream", "click", _CLICK, "event_date", click, _FUNNEL_KPIS,
                         currency=CLICK_CURRENCY),
              kpi_group(reader, "Retail sales" + (f" ({filters.country})" if filters.country else ""), "sales",
                         _SALES, "invoice_date", sales, _SALES_KPIS, currency=RETAIL_CURRENCY, extra=[country])]
    page.kpi_groups = [g for g in groups if g]
    revenue = reader.run(f"SELECT event_date, revenue, count_purchases FROM {_CLICK} "
                         "WHERE event_date BETWEEN ? AND ? ORDER BY 1", [click.start, click.end]) if click else None
    where, params = where_clause([date_condition("invoice_date", sales), country])
    net = reader.run(f"SELECT invoice_date, sum(net_revenue) AS net_revenue FROM {_SALES} {where} "
                     "GROUP BY 1 ORDER BY 1", params) if sales else None
    page.sections += in_period([chart("overview-click-revenue", "Clickstream revenue per day", revenue, charts.lines(
        revenue.rows if revenue else [], "event_date", {"revenue": "revenue"}, kind="money",
        currency=CLICK_CURRENCY, y_title="revenue"), _period_note(click))], click)
    page.sections += in_period([chart("overview-net-revenue", "Retail net revenue per day", net, charts.lines(
        net.rows if net else [], "invoice_date", {"net_revenue": "net revenue"}, kind="money",
        currency=RETAIL_CURRENCY, y_title="net revenue"), _period_note(sales))], sales)
    return page


def _funnel_tables(reader: Reader) -> list[Any]:
    return [spec for spec in reader.lake.catalog.ordered()
            if spec.name.startswith("gold.funnel_") and not spec.name.endswith("_entries")]


# A chosen range longer than this many days reads the funnels' weekly rows (a few dozen points instead of
# hundreds of daily ones; a unit entering on several days of a week is one weekly entry).
WEEKLY_AFTER_DAYS = 62


def funnel_grain(period: Period) -> str:
    return "week" if period.days > WEEKLY_AFTER_DAYS else "day"


def funnel_time_to_convert(reader: Reader, table: str, grain: str, breakdown: str, value: str,
                           period: Period, segment: str | None = None) -> Result:
    """Median and p90 seconds from entry to each later step over every entry of the period (its days, or
    the weeks starting in it), from the funnel's entries table: exact, where medians of daily rows cannot
    be combined. `entrants` equals the summed entrants of the funnel's rows. With `segment`, the entries of
    the users of that K-means segment only."""
    joined = "JOIN gold.user_segments AS u ON u.user_id = e.user_id AND u.segment_name = ?" if segment else ""
    return reader.run(f"""
        SELECT e.step, n.step_name, count(*) AS entrants,
               quantile_cont(e.seconds_to_step, 0.5) AS median_seconds_to_step,
               quantile_cont(e.seconds_to_step, 0.9) AS p90_seconds_to_step
        FROM {table}_entries AS e
        JOIN (SELECT step, min(step_name) AS step_name FROM {table} GROUP BY step) AS n ON n.step = e.step
        {joined}
        WHERE e.grain = ? AND e.breakdown = ? AND e.breakdown_value = ? AND e.period_start BETWEEN ? AND ?
          AND e.step > 1
        GROUP BY e.step, n.step_name ORDER BY e.step""",
                      [*([segment] if segment else []), grain, breakdown, value, period.start, period.end])


def _funnel_rows(table: str, segment: str | None) -> tuple[str, list[Any]]:
    """The relation the Funnel page reads and its parameters: the funnel's rows, or, with a users segment
    chosen, the same rows (every period, breakdown value and step) counted over that segment's entries.

    The segment is scored after the build, so it is joined here to the entries table. A row's
    `is_window_complete` stays the whole row's: every entry of the segment lies in it, so it is complete when
    the row is."""
    if segment is None:
        return table, []
    keys = ("grain", "period_start", "breakdown", "breakdown_value", "step")
    counted = (
        f"SELECT f.grain, f.period_start, f.breakdown, f.breakdown_value, f.step, f.step_name, "
        f"f.is_window_complete, coalesce(c.entrants, 0) AS entrants FROM {table} AS f LEFT JOIN ("
        f"SELECT e.grain, e.period_start, e.breakdown, e.breakdown_value, e.step, count(*) AS entrants "
        f"FROM {table}_entries AS e JOIN gold.user_segments AS u ON u.user_id = e.user_id "
        f"WHERE u.segment_name = ? GROUP BY {', '.join(f'e.{k}' for k in keys)}) AS c ON "
        + " AND ".join(f"c.{k} = f.{k}" for k in keys))
    firsts = (f"SELECT *, first_value(entrants) OVER (PARTITION BY grain, period_start, breakdown, "
              f"breakdown_value ORDER BY step) AS first_entrants FROM ({counted}) AS counted")
    return (f"(SELECT *, entrants / nullif(first_entrants, 0) AS overall_conversion_rate, "
            f"{wilson_sql('entrants', 'first_entrants', 'low')} AS overall_conversion_low, "
            f"{wilson_sql('entrants', 'first_entrants', 'high')} AS overall_conversion_high "
            f"FROM ({firsts}) AS firsts) AS segment_rows"), [segment]


def funnel(reader: Reader, filters: Filters) -> PageView:
    page = PageView("funnel", "Funnel", "the declared funnels (ordered steps of the same user or session within "
                                        "the conversion window) and cart abandonment",
                    filters_used=("dates", "category", "brand", "segment"))
    if filters.category:
        breakdown, value = "category_l1", filters.category
    elif filters.brand:
        breakdown, value = "brand", filters.brand
    else:
        breakdown, value = "all", "(all)"
    both = " (brand not applied: a funnel row is broken down by one of category or brand)" \
        if filters.category and filters.brand else ""
    chosen_segment = filters.segment_of("users")
    for spec in _funnel_tables(reader):
        name = spec.name.removeprefix("gold.funnel_")
        period = filters.resolve(reader, f"{spec.name} WHERE grain = 'day'", "period_start")
        if period:
            page.periods.append(period)
        grain = funnel_grain(period) if period else "day"
        source, chosen = _funnel_rows(spec.name, chosen_segment)
        rows = f"{source} WHERE grain = ? AND breakdown = ? AND breakdown_value = ? AND period_start BETWEEN ? AND ?"
        dates = [period.start, period.end] if period else [None, None]
        params = [*chosen, grain, breakdown, value, *dates]
        steps = reader.run(f"""
            WITH s AS (SELECT step, min(step_name) AS step_name, sum(entrants) AS entrants,
                              bool_and(is_window_complete) AS is_window_complete
                       FROM {rows} GROUP BY step),
            f AS (SELECT *, first_value(entrants) OVER (ORDER BY step) AS entered,
                         lag(entrants) OVER (ORDER BY step) AS before FROM s)
            SELECT step, step_name, entrants, entrants / nullif(entered, 0) AS overall_conversion_rate,
                   {wilson_sql('entrants', 'entered', 'low')} AS overall_conversion_low,
                   {wilson_sql('entrants', 'entered', 'high')} AS overall_conversion_high,
                   coalesce(before - entrants, 0) AS drop_off,
                   CASE WHEN step = 1 THEN 1.0 ELSE entrants / nullif(before, 0) END AS conversion_rate,
                   is_window_complete
            FROM f ORDER BY step""", params) if period else None
        over_time = reader.run(f"""
            SELECT period_start, overall_conversion_rate, overall_conversion_low, overall_conversion_high, entrants,
                   is_window_complete
            FROM {rows} AND step = (SELECT max(step) FROM {spec.name}) ORDER BY period_start""",
                               params) if period else None
        times = funnel_time_to_convert(reader, spec.name, grain, breakdown, value, period,
                                       chosen_segment) if period else None
        split = reader.run(f"""
            SELECT breakdown_value AS category_l1, sum(entrants) FILTER (WHERE step = 1) AS entered,
                   sum(entrants) FILTER (WHERE step = (SELECT max(step) FROM {spec.name})) AS converted,
                   converted / nullif(entered, 0) AS overall_conversion_rate,
                   {wilson_sql('converted', 'entered', 'low')} AS overall_conversion_low,
                   {wilson_sql('converted', 'entered', 'high')} AS overall_conversion_high
            FROM {source} WHERE grain = ? AND breakdown = 'category_l1' AND period_start BETWEEN ? AND ?
            GROUP BY 1 ORDER BY entered DESC, 1 LIMIT 20""", [*chosen, grain, *dates]) if period else None
        # The users' segment is scored after the build (ML), so it is joined here to the entries, not built
        # into the funnel's rows: the latest scoring, entries of users it has not scored as "(not scored)".
        by_segment = reader.run(f"""
            WITH e AS (SELECT coalesce(u.segment_name, '(not scored)') AS segment_name, e.step
                       FROM {spec.name}_entries AS e LEFT JOIN gold.user_segments AS u ON u.user_id = e.user_id
                       WHERE e.grain = ? AND e.breakdown = ? AND e.breakdown_value = ?
                         AND e.period_start BETWEEN ? AND ?)
            SELECT segment_name, count(*) FILTER (WHERE step = 1) AS entered,
                   count(*) FILTER (WHERE step = (SELECT max(step) FROM {spec.name})) AS converted,
                   converted / nullif(entered, 0) AS overall_conversion_rate,
                   {wilson_sql('converted', 'entered', 'low')} AS overall_conversion_low,
                   {wilson_sql('converted', 'entered', 'high')} AS overall_conversion_high
            FROM e GROUP BY 1 ORDER BY entered DESC, 1""", [grain, breakdown, value, *dates]) if period else None
        incomplete = [r for r in (steps.rows if steps else []) if r["is_window_complete"] is False]
        caveat = (" Some entries of the period have not had their whole window in the data yet: their conversion "
                  "can still grow." if incomplete else "")
        by_value = f"{breakdown} = {value}{both}; " if breakdown != "all" else ""
        where = by_value + (f"users of the segment {chosen_segment} (latest scoring); " if chosen_segment else "")
        unit = "entry day" if grain == "day" else "entry week"
        weekly = (f"; weekly rows (a range over {WEEKLY_AFTER_DAYS} days): the weeks starting in it, a unit "
                  f"entering on several days of a week counted once" if grain == "week" else "")
        page.sections += in_period([
            chart(f"funnel-{name}-steps", f"{name}: conversion from the first step (Wilson 95% intervals)", steps,
                  charts.bars(steps.rows if steps else [], "step_name", "overall_conversion_rate", kind="rate",
                              error=("overall_conversion_low", "overall_conversion_high"),
                              title="of entrants"),
                  f"{where}{spec.description.split(': ', 1)[0]}; {_period_note(period)}{weekly}.{caveat}"),
            chart(f"funnel-{name}-over-time", f"{name}: conversion per {unit} (last step, 95% band)", over_time,
                  charts.lines(over_time.rows if over_time else [], "period_start",
                               {"overall_conversion_rate": "conversion"},
                               kind="rate", band=("overall_conversion_low", "overall_conversion_high")),
                  f"{where}entries of each {unit.removeprefix('entry ')}, judged over the window after them"),
            table(f"funnel-{name}-time", f"{name}: time to convert over the period", times,
                  note=f"{where}median and 90th percentile of the seconds from entry to each step, over every "
                       f"entry of the period that reached it (from gold.funnel_{name}_entries; not the median "
                       f"of daily medians){weekly}"),
            table(f"funnel-{name}-breakdown", f"{name}: by category (first level)", split,
                  links={"category_l1": lambda r: "/funnel" + filters.query(category=r["category_l1"], brand=None)},
                  note="entrants of the first step and of the last, with the Wilson 95% interval of conversion; "
                       "a category's name filters the page by it"),
            table(f"funnel-{name}-segments", f"{name}: by user segment (K-means, latest scoring)", by_segment,
                  row_class=lambda r: "chosen" if r["segment_name"] == chosen_segment else "",
                  note=f"{by_value}the users' segment of the latest ML scoring, joined at query time to the "
                       "funnel's entries (a user entering before being scored takes today's segment); every segment, "
                       + (f"the chosen one ({chosen_segment}) marked" if chosen_segment else "as the charts above")),
        ], period)
    period = filters.resolve(reader, "gold.cart_abandonment", "event_date")
    if period:
        page.periods.append(period)
    carts = reader.run("""
        SELECT event_date, count_carts, count_abandoned_carts, abandonment_rate, abandonment_low, abandonment_high,
               abandoned_value, is_window_complete
        FROM gold.cart_abandonment WHERE event_date BETWEEN ? AND ? ORDER BY event_date""",
                       [period.start, period.end]) if period else None
    rows = carts.rows if carts else []
    total_carts = sum(r["count_carts"] or 0 for r in rows)
    abandoned = sum(r["count_abandoned_carts"] or 0 for r in rows)
    summary = (f"{abandoned:,} of {total_carts:,} carts ({abandoned / total_carts:.1%}) not followed by a purchase "
               f"of the product by the user within 7 days; abandoned value "
               f"{formats.money(sum(r['abandoned_value'] or 0 for r in rows), CLICK_CURRENCY)}"
               if total_carts else "")
    page.sections += in_period([
        chart("funnel-cart-abandonment", "Cart abandonment per day (95% band)", carts,
              charts.lines(rows, "event_date", {"abandonment_rate": "abandonment rate"}, kind="rate",
                           band=("abandonment_low", "abandonment_high")),
              f"{summary}; {_period_note(period)} (not filtered by category or brand)", wide=True),
    ], period)
    return page


def retention(reader: Reader, filters: Filters) -> PageView:
    page = PageView("retention", "Retention", "cohorts by first activity (clickstream, weekly) and first invoice "
                                              "(retail, monthly); the date filter picks the cohorts",
                    filters_used=("dates",))
    chosen = filters.chosen_dates
    weeks = reader.run("""
        SELECT cohort_week, week_number, cohort_users, active_users, retention_rate, purchasing_users, purchase_rate,
               is_complete
        FROM gold.retention_cohorts WHERE cohort_week BETWEEN ? AND ? ORDER BY cohort_week, week_number""",
                       [filters.start or FIRST_DATE, filters.end or LAST_DATE])
    months = reader.run("""
        SELECT cohort_month, month_number, cohort_customers, active_customers, repeat_customers, repeat_purchase_rate,
               gross_revenue, returns_value, net_revenue, net_revenue_per_customer, is_complete
        FROM gold.customer_cohorts WHERE cohort_month BETWEEN ? AND ? ORDER BY cohort_month, month_number""",
                        [filters.start or FIRST_DATE, filters.end or LAST_DATE])
    scope = f"cohorts starting {filters.start or 'at any date'} to {filters.end or 'the end'}" if chosen else \
        "all cohorts"
    empty = f"no cohort starts in the chosen dates ({filters.start or '…'} to {filters.end or '…'})" if chosen else ""
    sections = [
        chart("retention-weekly", "Clickstream: share of each weekly cohort active N weeks later", weeks,
              charts.heatmap(weeks.rows, "week_number", "cohort_week", "retention_rate", kind="rate",
                             complete="is_complete",
                             x_title="weeks after the first activity", y_title="cohort (week of first activity)"),
              f"{scope}; week 0 is 100% by definition; * a week the data does not cover to its end", wide=True),
        chart("retention-weekly-purchase", "Clickstream: share of each weekly cohort purchasing N weeks later", weeks,
              charts.heatmap(weeks.rows, "week_number", "cohort_week", "purchase_rate", kind="rate",
                             complete="is_complete",
                             x_title="weeks after the first activity", y_title="cohort"),
              f"{scope}; * a week the data does not cover to its end", wide=True),
        chart("retention-monthly-repeat", "Retail: repeat-purchase rate of each monthly cohort (cumulative)", months,
              charts.heatmap(months.rows, "month_number", "cohort_month", "repeat_purchase_rate", kind="rate",
                             complete="is_complete",
                             x_title="months after the first invoice", y_title="cohort (month of first invoice)"),
              f"{scope}; customers with a second invoice by that month; * a month the data does not cover to its end",
              wide=True),
        chart("retention-monthly-net", f"Retail: net revenue per cohort customer ({RETAIL_CURRENCY})", months,
              charts.heatmap(months.rows, "month_number", "cohort_month", "net_revenue_per_customer", kind="money",
                             complete="is_complete",
                             currency=RETAIL_CURRENCY, x_title="months after the first invoice", y_title="cohort"),
              f"{scope}; returns netted in the month they happen; * a month the data does not cover to its end",
              wide=True),
    ]
    for section in sections:
        section.empty_text = empty
    page.sections += sections
    return page


def segments(reader: Reader, filters: Filters) -> PageView:
    page = PageView("segments", "Segments", "latest scoring of the K-means segment models; a chosen segment is "
                                            "marked and its rows shown", filters_used=("segment",))
    users_segment, rfm_segment = filters.segment_of("users"), filters.segment_of("rfm")
    users = reader.run("SELECT * FROM gold.user_segment_profiles ORDER BY segment_id")
    customers = reader.run("SELECT * FROM gold.customer_segment_profiles ORDER BY segment_id")
    page.sections += [
        chart("segments-users-share", "Clickstream users by segment", users,
              charts.pie(users.rows, "segment_name", "count_users")),
        chart("segments-users-engagement", "Engagement by segment (per session)", users, charts.grouped_bars(
            users.rows, "segment_name", {"mean_views_per_session": "views", "mean_carts_per_session": "carts",
                                         "mean_purchases_per_session": "purchases"})),
        table("segments-users-profile", "User segment profiles and recommended actions", users,
              ["segment_name", "count_users", "share_of_users", "mean_recency_days", "mean_frequency",
               "mean_monetary", "mean_count_purchases", "recommended_action", "model_version"],
              currency=CLICK_CURRENCY, row_class=lambda r: "chosen" if r["segment_name"] == users_segment else "",
              note=f"the chosen segment ({users_segment}) is marked" if users_segment else ""),
    ]
    if users_segment:
        members = reader.run("""
            SELECT user_id, segment_name, views_per_session, carts_per_session, purchases_per_session,
                   model_version, scored_at
            FROM gold.user_segments WHERE segment_name = ?
            ORDER BY purchases_per_session DESC, carts_per_session DESC, user_id LIMIT 500""", [users_segment])
        page.sections.append(table("segments-users-chosen", f"Users of the segment {users_segment}", members,
                                   note="the 500 with the most purchases per session (then carts) of the "
                                        "latest scoring; the model inputs of each"))
    page.sections += [
        chart("segments-customers-share", "Retail customers by K-means segment", customers,
              charts.pie(customers.rows, "segment_name", "count_customers")),
        chart("segments-customers-value", "Share of net revenue by K-means segment", customers,
              charts.bars(customers.rows, "segment_name", "share_of_net_monetary", kind="rate")),
        table("segments-customers-profile", "Customer segment profiles and recommended actions", customers,
              ["segment_name", "count_customers", "share_of_customers", "mean_recency_days", "mean_frequency",
               "mean_net_monetary", "share_of_net_monetary", "recommended_action", "model_version"],
              currency=RETAIL_CURRENCY,
              note="the standard named RFM segments are on the Customers page"),
    ]
    if rfm_segment:
        # A chosen RFM segment (the standard named one) concerns the customers' K-means segments through
        # the customers both describe: where the RFM segment's customers fall among the K-means segments.
        across = reader.run("""
            SELECT k.segment_name, count(*) AS count_customers,
                   count(*) / sum(count(*)) OVER () AS share_of_customers,
                   sum(r.net_monetary) AS net_monetary
            FROM gold.customer_rfm AS r JOIN gold.customer_segments AS k USING (customer_id)
            WHERE r.rfm_segment = ?
            GROUP BY k.segment_name ORDER BY count_customers DESC, k.segment_name""", [rfm_segment])
        page.sections.append(table("segments-customers-rfm", f"RFM segment {rfm_segment} across the K-means "
                                                              f"segments", across, currency=RETAIL_CURRENCY,
                                   note=f"customers of the named RFM segment {rfm_segment} (gold.customer_rfm) "
                                        f"by their K-means segment of the latest scoring"))
    return page


def _product_filters(filters: Filters, alias: str = "") -> list[tuple[str, Any]]:
    prefix = f"{alias}." if alias else ""
    return [(f"split_part({prefix}category_code, '.', 1) = ?", filters.category), (f"{prefix}brand = ?", filters.brand)]


def products(reader: Reader, filters: Filters) -> PageView:
    page = PageView("products", "Products", "all time (product tables have no date)",
                    filters_used=("category", "brand"))
    where, params = where_clause(_product_filters(filters))
    top = reader.run(f"SELECT CAST(product_id AS VARCHAR) || ' ' || coalesce(brand, '(no brand)') AS label, "
                     f"product_id, brand, category_code, revenue, count_purchases, view_to_purchase_rate "
                     f"FROM gold.product_performance {where} ORDER BY revenue DESC, product_id LIMIT 15", params)
    categories = reader.run(
        f"SELECT coalesce(category_code, '(none)') AS category, sum(revenue) AS revenue, "
        f"sum(count_purchases) / nullif(sum(count_views), 0) AS conversion FROM gold.product_performance {where} "
        f"GROUP BY 1 ORDER BY revenue DESC, 1 LIMIT 12", params)
    brand_where, brand_params = where_clause([("brand IS NOT NULL", ()), *_product_filters(filters)])
    brands = reader.run(
        f"SELECT brand, sum(revenue) AS revenue, sum(count_purchases) / nullif(sum(count_views), 0) AS conversion "
        f"FROM gold.product_performance {brand_where} GROUP BY 1 ORDER BY revenue DESC, 1 LIMIT 12", brand_params)
    retail = reader.run("SELECT stock_code, description, gross_revenue, units, count_customers, returned_units "
                        "FROM gold.product_sales ORDER BY gross_revenue DESC, stock_code LIMIT 15")
    empty = "no product matches the filters" if filters.category or filters.brand else ""
    sections = [
        chart("products-top", "Top products by revenue (clickstream)", top,
              charts.bars(top.rows, "label", "revenue", kind="money", currency=CLICK_CURRENCY, horizontal=True)),
        chart("products-categories", "Categories by revenue", categories,
              charts.bars(categories.rows, "category", "revenue", kind="money", currency=CLICK_CURRENCY,
                          horizontal=True)),
        chart("products-category-conversion", "Category view → purchase rate", categories,
              charts.bars(categories.rows, "category", "conversion", kind="rate", horizontal=True)),
        chart("products-brands", "Brands by revenue", brands,
              charts.bars(brands.rows, "brand", "revenue", kind="money", currency=CLICK_CURRENCY, horizontal=True)),
        table("products-retail", f"Top retail products by gross revenue ({RETAIL_CURRENCY})", retail,
              currency=RETAIL_CURRENCY, note="retail products have no category or brand: not filtered"),
    ]
    for section in sections[:4]:
        section.empty_text = empty
    page.sections += sections
    return page


def sales(reader: Reader, filters: Filters) -> PageView:
    period = filters.resolve(reader, _SALES, "invoice_date")
    page = PageView("sales", "Sales", f"retail sales and returns in {RETAIL_CURRENCY}; {period or 'no data'}",
                    filters_used=("dates", "country"), periods=[period] if period else [])
    where, params = where_clause([date_condition("invoice_date", period), ("country = ?", filters.country)])
    window = f"SELECT * FROM {_SALES} {where}"
    ranked = reader.run(f"""
        WITH p AS ({window}),
        c AS (SELECT country, sum(net_revenue) AS net_revenue FROM p GROUP BY 1),
        r AS (SELECT *, row_number() OVER (ORDER BY net_revenue DESC, country) AS place FROM c)
        SELECT CASE WHEN place <= 15 THEN country ELSE 'Other (' || (SELECT count(*) - 15 FROM c) || ' countries)'
               END AS country, sum(net_revenue) AS net_revenue, min(place) AS place
        FROM r GROUP BY 1 ORDER BY place""", params) if period else None
    daily = reader.run(f"SELECT invoice_date, sum(net_revenue) AS net_revenue, sum(gross_revenue) AS gross_revenue "
                       f"FROM ({window}) GROUP BY 1 ORDER BY 1", params) if period else None
    returns = reader.run(f"SELECT invoice_date, sum(returns_value) AS returns_value, sum(count_return_lines) AS "
                         f"count_return_lines FROM ({window}) GROUP BY 1 ORDER BY 1", params) if period else None
    countries = reader.run(f"""
        WITH p AS ({window}),
        t AS (SELECT country, sum(net_revenue) AS net_revenue, sum(gross_revenue) AS gross_revenue,
                     sum(returns_value) AS returns_value, sum(count_invoices) AS count_invoices, sum(units) AS units,
                     0 AS is_total
              FROM p GROUP BY 1
              UNION ALL
              SELECT 'Total', sum(net_revenue), sum(gross_revenue), sum(returns_value), sum(count_invoices),
                     sum(units), 1 FROM p HAVING count(*) > 0)
        SELECT country, net_revenue, gross_revenue, returns_value, count_invoices, units FROM t
        ORDER BY is_total, net_revenue DESC, country""", params) if period else None
    link = _drill_link(filters, "country")
    scope = f"{_period_note(period)}" + (f"; country = {filters.country}" if filters.country else "")
    page.sections += in_period([
        chart("sales-by-country", "Countries ranked by net revenue", ranked,
              charts.bars(ranked.rows if ranked else [], "country", "net_revenue", kind="money",
                          currency=RETAIL_CURRENCY, horizontal=True), f"{scope}; the top 15 and the rest together"),
        chart("sales-daily", "Net and gross revenue per day", daily,
              charts.lines(daily.rows if daily else [], "invoice_date",
                           {"net_revenue": "net revenue", "gross_revenue": "gross revenue"}, kind="money",
                           currency=RETAIL_CURRENCY), scope),
        chart("sales-returns", "Returns per day (negative amounts)", returns,
              charts.bars(returns.rows if returns else [], "invoice_date", "returns_value", kind="money",
                          currency=RETAIL_CURRENCY), f"{scope}. {RETURNS_NOTE}"),
        table("sales-countries", "Countries in the period, with the total", countries, currency=RETAIL_CURRENCY,
              links={"country": lambda r: None if r["country"] == "Total" else link(r["country"])},
              row_class=lambda r: "total" if r["country"] == "Total" else "",
              note=f"{RETURNS_NOTE} A country's name opens its rows."),
    ], period)
    return page


def _drill_link(filters: Filters, kind: str) -> Callable[[str], str]:
    def link(value: str) -> str:
        return "/rows" + filters.query(**{kind: value})
    return link


def customers(reader: Reader, filters: Filters) -> PageView:
    page = PageView("customers", "Customers", f"standard RFM segments of the latest build ({RETAIL_CURRENCY}; not "
                                              f"filtered by date: RFM is as of the snapshot date)",
                    filters_used=("segment",))
    segment = filters.segment_of("rfm")
    order = " ".join(f"WHEN {literal(name).sql()} THEN {i}" for i, name in enumerate(RFM_SEGMENTS))
    named = reader.run(f"""
        WITH s AS (SELECT rfm_segment, count(*) AS count_customers, avg(recency_days) AS mean_recency_days,
                          avg(frequency) AS mean_frequency, sum(net_monetary) AS net_monetary
                   FROM gold.customer_rfm GROUP BY 1)
        SELECT rfm_segment, count_customers, count_customers / sum(count_customers) OVER () AS share_of_customers,
               mean_recency_days, mean_frequency, net_monetary,
               net_monetary / sum(net_monetary) OVER () AS share_of_net_monetary
        FROM s ORDER BY CASE rfm_segment {order} END""")
    where, params = where_clause([("rfm_segment = ?", segment)])
    cells = reader.run(f"SELECT r_score, fm_score, count(*) AS count_customers FROM gold.customer_rfm {where} "
                       f"GROUP BY ALL ORDER BY 1, 2", params)
    scores = reader.run("""
        SELECT f_score, count(*) AS count_customers, min(frequency) AS min_frequency, max(frequency) AS max_frequency
        FROM gold.customer_rfm GROUP BY 1 ORDER BY 1""")
    top = reader.run(f"""
        SELECT customer_id, rfm_segment, r_score, f_score, m_score, recency_days, frequency, net_monetary
        FROM gold.customer_rfm {where} ORDER BY net_monetary DESC, customer_id LIMIT 20""", params)
    missing = sorted(set(range(1, 6)) - {r["f_score"] for r in scores.rows})
    ties = ("F scores are quintiles of the average place of tied customers: score = ⌈5 × average place / n⌉ "
            "(docs/DATA_CONTRACT.md §9.1), so customers with the same number of invoices always share a score. ")
    if missing:
        ties += (f"Here no customer has F score {', '.join(map(str, missing))}: a tie is larger than a fifth of "
                 f"the customers, and its average place falls in the next score up.")
    else:
        ties += "Here every F score holds customers."
    link = _drill_link(filters, "segment")
    chosen = f"segment = {segment}; " if segment else ""
    page.sections += [
        chart("customers-segments", "Customers per RFM segment", named,
              charts.bars(named.rows, "rfm_segment", "count_customers", horizontal=True),
              "the R × FM grid of the data contract (R = recency score, FM = ⌈(F + M) / 2⌉)"),
        chart("customers-segments-value", f"Net revenue per RFM segment ({RETAIL_CURRENCY})", named,
              charts.bars(named.rows, "rfm_segment", "net_monetary", kind="money", currency=RETAIL_CURRENCY,
                          horizontal=True), "net of returns"),
        chart("customers-rfm-grid", "Customers per recency score (R) and frequency-monetary score (FM)", cells,
              charts.heatmap(cells.rows, "fm_score", "r_score", "count_customers", x_title="FM score",
                             y_title="R score (5 = most recent)", top_first=False), f"{chosen}integer counts"),
        table("customers-f-scores", "Why some F scores may be empty: customers per F score", scores, note=ties),
        table("customers-named", "RFM segments: size, recency, frequency and value", named, currency=RETAIL_CURRENCY,
              links={"rfm_segment": lambda r: link(f"rfm:{r['rfm_segment']}")},
              note="a segment's name opens its customers"),
        table("customers-top", "Top customers by net monetary value", top, currency=RETAIL_CURRENCY,
              note=chosen.rstrip("; ")),
    ]
    return page


def _reason_kind_sql(column: str) -> str:
    """The kind of a recommendation reason: its text up to the id or category it names."""
    return (f"CASE WHEN {column} LIKE 'bought with %' THEN 'bought with a product the user bought' "
            f"WHEN {column} LIKE 'bought together by %' THEN 'bought together' "
            f"WHEN {column} LIKE 'carted or bought by the same users%' THEN 'carted or bought by the same users' "
            f"WHEN {column} LIKE 'popular in %' THEN 'popular in the category' ELSE {column} END")


def recommendations(reader: Reader, filters: Filters) -> PageView:
    page = PageView("recommendations", "Recommendations",
                    "latest scoring of the recommender champion (gold.user_recommendations, gold.similar_products; "
                    "not filtered by date: lists are as of the model's cutoff)",
                    filters_used=("category", "brand", "user", "product"))
    products = "LEFT JOIN gold.product_performance AS f ON f.product_id = r.product_id"
    where, params = where_clause(_product_filters(filters, "f"))
    meta = reader.one("SELECT model_name, model_version, cutoff_at, count(DISTINCT user_id) AS count_users, "
                      "count(*) AS count_rows FROM gold.user_recommendations GROUP BY ALL "
                      "ORDER BY model_version DESC LIMIT 1")
    if meta:
        cutoff = meta["cutoff_at"].strftime("%Y-%m-%d %H:%M UTC") if meta.get("cutoff_at") else "?"
        page.scope += (f". Model {meta['model_name']} v{meta['model_version']}, cutoff {cutoff}: "
                       f"{formats.shown(meta['count_users'])} active users with a list. A product the user "
                       f"already bought is never recommended; scores rank within one user's list only.")
    # The user shown: the chosen one, else the user whose first recommendation scores highest.
    user = filters.user
    if user is None:
        first = reader.one(f"SELECT r.user_id FROM gold.user_recommendations AS r {products} {where} "
                           f"ORDER BY (r.rank = 1) DESC, r.score DESC, r.user_id LIMIT 1", params)
        user = first.get("user_id")
    user_where, user_params = where_clause([("r.user_id = ?", user), *_product_filters(filters, "f")])
    for_user = reader.run(f"""
        SELECT r.rank, r.product_id, f.category_code, f.brand, r.score, r.reason, r.model_version
        FROM gold.user_recommendations AS r {products} {user_where} ORDER BY r.rank""", user_params)
    product = filters.product
    if product is None:
        top = reader.one(f"SELECT r.product_id FROM gold.similar_products AS r {products} {where} "
                         f"ORDER BY f.count_purchases DESC NULLS LAST, r.product_id LIMIT 1", params)
        product = top.get("product_id")
    similar = reader.run("""
        SELECT r.rank, r.similar_product_id, f.category_code, f.brand, f.count_purchases, r.score, r.reason
        FROM gold.similar_products AS r LEFT JOIN gold.product_performance AS f ON f.product_id = r.similar_product_id
        WHERE r.product_id = ? ORDER BY r.rank""", [product])
    reasons = reader.run(f"""
        SELECT {_reason_kind_sql('r.reason')} AS reason, count(*) AS count_recommendations,
               count(*) / sum(count(*)) OVER () AS share_of_recommendations
        FROM gold.user_recommendations AS r {products} {where} GROUP BY 1 ORDER BY 2 DESC, 1""", params)
    most = reader.run(f"""
        SELECT r.product_id, f.category_code, f.brand, count(*) AS count_users, avg(r.rank) AS mean_rank
        FROM gold.user_recommendations AS r {products} {where} GROUP BY ALL ORDER BY 4 DESC, 1 LIMIT 20""", params)
    users = reader.run(f"""
        SELECT r.user_id, count(*) AS count_recommendations, max(r.score) AS top_score
        FROM gold.user_recommendations AS r {products} {where} GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT 20""", params)
    chosen = "; ".join(f"{k} = {v}" for k, v in (("category", filters.category), ("brand", filters.brand)) if v)
    product_link = lambda row: "/recommendations" + filters.query(product=row["product_id"])  # noqa: E731
    page.sections += [
        table("recommendations-user", f"Top products for user {user if user is not None else '(none)'}", for_user,
              links={"product_id": product_link},
              note="rank 1 first; a product id opens its similar products"
                   + (f"; {chosen} (only the user's products in it)" if chosen else "")),
        table("recommendations-similar",
              f"Products similar to product {product if product is not None else '(none)'}", similar,
              links={"similar_product_id": lambda row: "/recommendations" + filters.query(
                  product=row["similar_product_id"])},
              note="carted or bought by the same users first, then the most bought of its category"),
        chart("recommendations-reasons", "Why products are recommended (share of all list entries)", reasons,
              charts.bars(reasons.rows, "reason", "share_of_recommendations", kind="rate", horizontal=True), chosen),
        table("recommendations-products", "Most recommended products (users whose list holds them)", most,
              links={"product_id": product_link}, note=chosen),
        table("recommendations-users", "Users with the highest-scoring lists", users,
              links={"user_id": lambda row: "/recommendations" + filters.query(user=row["user_id"])},
              note="a user id opens the user's list"),
    ]
    return page


_CLV_HORIZON_NOTE = ("Expected net revenue in the 12 months after the cutoff (BG/NBD purchases × Gamma-Gamma spend, "
                     "returns netted); low / high: the 80 % interval of each customer's expectation over the "
                     "model's parameter uncertainty (per customer: the intervals of a sum are not sums of them).")


def lifetime_value(reader: Reader, filters: Filters) -> PageView:
    page = PageView("clv", "Lifetime value", f"latest scoring of the CLV champion (gold.customer_clv, "
                                             f"{RETAIL_CURRENCY}; not filtered by date: as of the model's cutoff)",
                    filters_used=("segment",))
    segment = filters.segment_of("rfm")
    joins = "FROM gold.customer_clv AS c LEFT JOIN gold.customer_rfm AS s USING (customer_id)"
    where, params = where_clause([("s.rfm_segment = ?", segment)])
    meta = reader.one("SELECT model_name, model_version, cutoff_at FROM gold.customer_clv "
                      "ORDER BY model_version DESC LIMIT 1")
    if meta:
        cutoff = meta["cutoff_at"].strftime("%Y-%m-%d") if meta.get("cutoff_at") else "?"
        page.scope += f". Model {meta['model_name']} v{meta['model_version']}, cutoff {cutoff}."
    summary = reader.run(f"""
        SELECT count(*) AS count_customers, sum(c.expected_value_12m) AS expected_value_12m,
               sum(c.expected_purchases_12m) AS expected_purchases_12m,
               avg(c.probability_alive) AS mean_probability_alive,
               quantile_cont(c.expected_value_12m, 0.5) AS median_expected_value_12m,
               count_if(c.spend_basis = 'population') AS count_population_spend
        {joins} {where}""", params)
    # Value bins on a log scale: a few customers are worth hundreds of times the median.
    bins = reader.run(f"""
        WITH b AS (SELECT floor(log10(greatest(c.expected_value_12m, 1)) * 4) AS bin, count(*) AS count_customers
                   {joins} {where} GROUP BY 1)
        SELECT CASE WHEN bin = 0 THEN 0 ELSE pow(10, bin / 4) END AS value_low, pow(10, (bin + 1) / 4) AS value_high,
               count_customers
        FROM b ORDER BY bin""", params)
    binned = [{"value_range": f"{formats.shown(r['value_low'], 'money', RETAIL_CURRENCY)}–"
                              f"{formats.shown(r['value_high'], 'money', RETAIL_CURRENCY)}",
               "count_customers": r["count_customers"]} for r in bins.rows]
    top = reader.run(f"""
        SELECT c.customer_id, s.rfm_segment, c.expected_value_12m, c.expected_value_12m_low,
               c.expected_value_12m_high, c.expected_purchases_12m, c.probability_alive, c.net_value, c.frequency
        {joins} {where} ORDER BY c.expected_value_12m DESC, c.customer_id LIMIT 20""", params)
    by_segment = reader.run("""
        SELECT s.rfm_segment, count(*) AS count_customers, avg(c.expected_value_12m) AS mean_expected_value_12m,
               sum(c.expected_value_12m) AS expected_value_12m, avg(c.probability_alive) AS mean_probability_alive
        FROM gold.customer_clv AS c LEFT JOIN gold.customer_rfm AS s USING (customer_id)
        GROUP BY 1 ORDER BY 4 DESC NULLS LAST""")
    chosen = f"RFM segment = {segment}" if segment else ""
    top_rows = [{**r, "customer": str(r["customer_id"])} for r in top.rows]
    page.sections += [
        table("clv-summary", "Customers scored and their expected value over 12 months", summary,
              currency=RETAIL_CURRENCY, note=(chosen + "; " if chosen else "") +
              "count_population_spend: customers valued at the mean spend (their returns reach their purchases)"),
        chart("clv-distribution", f"Customers by expected 12-month value ({RETAIL_CURRENCY}, log-scale bins)", bins,
              charts.bars(binned, "value_range", "count_customers"), chosen),
        chart("clv-top", f"Top customers by expected 12-month value with 80 % intervals ({RETAIL_CURRENCY})", top,
              charts.bars(top_rows, "customer", "expected_value_12m", kind="money", currency=RETAIL_CURRENCY,
                          horizontal=True, error=("expected_value_12m_low", "expected_value_12m_high")),
              _CLV_HORIZON_NOTE),
        table("clv-top-table", "Top customers: expected value, interval and what it rests on", top,
              currency=RETAIL_CURRENCY, note=chosen),
        chart("clv-segments", f"Expected 12-month value per RFM segment ({RETAIL_CURRENCY})", by_segment,
              charts.bars(by_segment.rows, "rfm_segment", "expected_value_12m", kind="money",
                          currency=RETAIL_CURRENCY, horizontal=True), "all customers (the segment filter marks none)"),
    ]
    return page


def _model_meaning(reader: Reader, rows: list[dict]) -> str:
    """What a probability means, from the model version's recorded parameters in MLflow."""
    if not rows:
        return ""
    from shoplake.ml.tracking import Tracker

    row = rows[0]
    try:
        tracker = Tracker(reader.lake.settings)
        ref = tracker.version(row["model_name"], int(row["model_version"]))
        params = tracker.run_record(ref.run_id)[0] if ref.run_id else {}
    except Exception as exc:  # the registry is optional for the page: say what is not known
        log.warning("model registry unavailable for %s: %s", row["model_name"], exc)
        return (f"model {row['model_name']} v{row['model_version']}: its recorded parameters could not be read "
                f"({type(exc).__name__}), so the horizon is not shown")
    horizon = params.get("window.horizon_days", "?")
    cutoff = row["cutoff_at"].strftime("%Y-%m-%d %H:%M UTC") if row.get("cutoff_at") else "?"
    candidates = params.get("candidates", "")
    return (f"Each probability is the chance that the user buys that product within {horizon} days after the "
            f"cutoff {cutoff} (label: {params.get('label', '?')}). Pairs scored: {candidates or 'as recorded'}. "
            f"Model {row['model_name']} v{row['model_version']} ({params.get('chosen_model', 'model')}, "
            f"calibrated: {params.get('calibration', '?')}), read from its MLflow run's parameters.")


def predictions(reader: Reader, filters: Filters) -> PageView:
    page = PageView("predictions", "Predictions", "latest scoring of the conversion model (not filtered by date)",
                    filters_used=("category", "brand", "segment"))
    joins = ("FROM gold.conversion_predictions AS p LEFT JOIN gold.product_performance AS f USING (product_id) "
             "LEFT JOIN gold.user_segments AS u USING (user_id)")
    where, params = where_clause([*_product_filters(filters, "f"), ("u.segment_name = ?", filters.segment_of("users"))])
    meta = reader.rows("SELECT model_name, model_version, cutoff_at FROM gold.conversion_predictions "
                       "ORDER BY scored_at DESC LIMIT 1")
    top = reader.run(f"""
        SELECT p.user_id, p.product_id, p.probability, p.user_rank, f.category_code, f.brand, u.segment_name,
               p.model_version
        {joins} {where} ORDER BY p.probability DESC, p.user_id, p.product_id LIMIT 25""", params)
    # Bins of a fifth of a decade (0.1% to 0.16%, ...): most pairs sit near 0, where equal-width bins put
    # nearly all of them in the first bar.
    bins = reader.run(f"""
        WITH b AS (SELECT greatest(floor(log10(greatest(p.probability, 1e-6)) * 5), -30) AS bin, count(*) AS count_pairs
                   {joins} {where} GROUP BY 1)
        SELECT pow(10, bin / 5) AS bin_low, least(pow(10, (bin + 1) / 5), 1.0) AS bin_high, count_pairs
        FROM b ORDER BY bin""", params)
    quantiles = reader.run(f"""
        SELECT count(*) AS count_pairs, quantile_cont(p.probability, 0.5) AS median_probability,
               quantile_cont(p.probability, 0.9) AS p90_probability,
               quantile_cont(p.probability, 0.99) AS p99_probability, max(p.probability) AS max_probability,
               avg(p.probability) AS mean_probability, count_if(p.probability >= 0.5) AS count_pairs_over_half
        {joins} {where}""", params)
    chosen = "; ".join(f"{k} = {v}" for k, v in (("category", filters.category), ("brand", filters.brand),
                                                  ("user segment", filters.segment_of("users"))) if v)
    meaning = _model_meaning(reader, meta)
    page.scope += f". {meaning}" if meaning else ""
    empty = "no scored pair matches the filters" if chosen else ""
    sections = [
        chart("predictions-distribution", "Predicted purchase probability of every scored pair (log count scale)",
              bins, charts.histogram_bins(bins.rows, "bin_low", "bin_high", "count_pairs"),
              f"{chosen + '; ' if chosen else ''}bins a fifth of a decade wide (log scale), counts on a log scale too, "
              f"so the few pairs with a high probability stay visible beside the many near 0", wide=True),
        table("predictions-quantiles", "The distribution in numbers", quantiles, note=chosen),
        table("predictions-top", "Highest-propensity user-product pairs", top, note=chosen),
        plain_table("predictions-models", "Models behind the predictions (MLflow registry)", _model_rows(reader),
                    kinds={"value": "number"}),
    ]
    for section in sections:
        section.empty_text = empty
    page.sections += sections
    return page


def _model_rows(reader: Reader) -> list[dict]:
    """Model, scored version, champion version and key validation metrics, per prediction table."""
    scored = reader.rows("""
        SELECT 'gold.conversion_predictions' AS "table", min(model_name) AS model, max(model_version) AS version
        FROM gold.conversion_predictions HAVING count(*) > 0
        UNION ALL
        SELECT 'gold.user_segments', min(model_name), max(model_version) FROM gold.user_segments
        HAVING count(*) > 0
        UNION ALL
        SELECT 'gold.customer_segments', min(model_name), max(model_version) FROM gold.customer_segments
        HAVING count(*) > 0""")
    if not scored:
        return []
    from shoplake.catalog.models import KEY_METRICS, KIND_OF_MODEL
    from shoplake.ml.tracking import Tracker

    tracker = Tracker(reader.lake.settings)
    out = []
    for row in scored:
        metric = KEY_METRICS.get(KIND_OF_MODEL.get(row["model"], ""), "")
        entry = {**row, "champion": "-", "key_metric": metric, "value": None, "other_metrics": ""}
        try:
            champion = tracker.champion(row["model"])
            entry["champion"] = f"v{champion.version}" if champion else "-"
            ref = tracker.version(row["model"], int(row["version"]))
            metrics = tracker.run_metrics(ref.run_id) if ref.run_id else {}
            entry["value"] = metrics.get(metric)
            entry["other_metrics"] = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                               if k.startswith("val_") and k != metric)[:300]
        except Exception as exc:  # the registry is optional for the page: show what is known
            log.warning("model registry unavailable for %s: %s", row["model"], exc)
            entry["other_metrics"] = f"registry unavailable: {type(exc).__name__}"
        out.append(entry)
    return out


def health(reader: Reader, filters: Filters) -> PageView:
    page = PageView("health", "Data health", "freshness, ledger, quality checks, job runs, lineage and versions "
                                             "(latest; not filtered)")
    lake = reader.lake
    fresh = reader.one(f"""
        SELECT (SELECT max(event_date) FROM {_CLICK}) AS clickstream_through,
               (SELECT max(invoice_date) FROM {_SALES}) AS retail_through,
               (SELECT max(ended_at) FROM ops.job_runs) AS last_attempt""")
    # A run succeeded when the last attempt of each of its tasks did.
    success = reader.one("""
        SELECT job, run_id, max(ended_at) AS ended_at
        FROM (SELECT *, row_number() OVER (PARTITION BY run_id, task ORDER BY attempt DESC) AS k FROM ops.job_runs)
        WHERE k = 1 GROUP BY job, run_id HAVING bool_and(status IN ('succeeded', 'skipped'))
        ORDER BY ended_at DESC LIMIT 1""")
    quality = reader.run("""
        SELECT table_name, rule, action, rows_checked, rows_failed, passed, checked_at FROM ops.data_quality
        QUALIFY row_number() OVER (PARTITION BY table_name, rule ORDER BY checked_at DESC) = 1
        ORDER BY passed, rows_failed DESC, table_name, rule""")
    flagged = [r for r in quality.rows if r["passed"] is False]
    failing = [r for r in flagged if r["action"] == "fail"]  # stopped a write; quarantine/warn rules kept going
    last_success, last_attempt = success.get("ended_at"), fresh.get("last_attempt")
    attempt = "" if last_success == last_attempt else f"; last task attempt {formats.shown(last_attempt)}"
    checks = (f"{len(failing)} failing check(s): " + ", ".join(f"{r['table_name']} {r['rule']}" for r in failing[:5])
              if failing else "No failing check.")
    if flagged and len(flagged) > len(failing):
        checks += (f" {len(flagged) - len(failing)} check(s) flagged rows that were quarantined or warned about "
                   f"(highlighted below).")
    page.banner = (f"Data through {fresh.get('clickstream_through') or '-'} (clickstream) and "
                   f"{fresh.get('retail_through') or '-'} (retail). Last successful run: "
                   + (f"{success['job']} {success['run_id']}, ended {formats.shown(last_success)} UTC" if success
                      else "none yet") + f"{attempt}. {checks}")
    page.banner_tone = "bad" if failing else "warn" if flagged else "ok"
    diverted = reader.run("""
        SELECT table_name || ': ' || reason AS diversion, table_name, reason,
               sum(CAST(json_extract_string(diverted, '$."' || reason || '"') AS BIGINT)) AS rows_diverted
        FROM (SELECT table_name, diverted, unnest(json_keys(diverted)) AS reason FROM ops.ledger
              WHERE rows_diverted > 0)
        GROUP BY ALL ORDER BY rows_diverted DESC, diversion""")
    ledger = reader.run("SELECT recorded_at, run_id, table_name, table_version, rows_in, rows_out, rows_diverted, "
                        "diverted, rows_written, is_balanced FROM ops.ledger ORDER BY recorded_at DESC, table_name "
                        "LIMIT 40")
    runs = reader.run("SELECT run_id, job, task, attempt, status, started_at, ended_at, rows_written, error "
                      "FROM ops.job_runs ORDER BY started_at DESC NULLS LAST, task LIMIT 40")
    statuses = reader.run("SELECT status, count(*) AS attempts FROM ops.job_runs GROUP BY 1 ORDER BY 2 DESC, 1")
    writes = reader.run("SELECT table_name, sum(rows_written) AS rows_written FROM ops.ledger GROUP BY 1 "
                        "ORDER BY 2 DESC, 1")
    versions = []
    for spec in lake.catalog.ordered():
        exists = lake.store.exists(spec.name)
        last = lake.store.history(spec.name, 1)[0] if exists else None
        versions.append({"table": spec.name, "layer": spec.layer, "version": lake.store.version(spec.name) if exists
                         else None, "rows": lake.store.row_count(spec.name) if exists else None,
                         "last_commit": last.timestamp if last else None,
                         "operation": last.operation if last else "not written yet"})
    edges = [(source, spec.name) for spec in lake.catalog for source in spec.inputs]
    lineage = Section("health-lineage", "Table lineage (inputs → outputs)",
                      figure=charts.to_json(charts.lineage(edges, {s.name: s.layer for s in lake.catalog})), wide=True,
                      note="from the catalog's declarations (no SQL)")
    lineage.columns, lineage.data = ["input", "output"], [list(e) for e in edges]
    page.sections += [
        table("health-quality", "Data quality: latest result per table and rule (failing first)", quality,
              row_class=lambda r: "fail" if r["passed"] is False else ""),
        chart("health-diverted", "Rows diverted, by table and reason (all runs)", diverted,
              charts.bars(diverted.rows, "diversion", "rows_diverted", horizontal=True),
              "rows kept out of a table, each with its reason (quarantine, duplicates, exclusions)", wide=True),
        _model_drift(reader),
        lineage,
        chart("health-job-status", "Job task attempts by status", statuses,
              charts.bars(statuses.rows, "status", "attempts")),
        chart("health-rows-written", "Rows written per table (ledger)", writes,
              charts.bars(writes.rows, "table_name", "rows_written", horizontal=True)),
        table("health-ledger", "Ledger: latest writes", ledger,
              row_class=lambda r: "fail" if r["is_balanced"] is False else ""),
        table("health-job-runs", "Job runs: latest attempts", runs,
              row_class=lambda r: "fail" if r["status"] not in ("succeeded", "skipped", "running") else ""),
        plain_table("health-versions", "Table versions", versions,
                    note="from the Delta logs (no SQL); a table's name opens its column profile",
                    links={"table": lambda r: f"/profile/{r['table']}"}),
    ]
    return page


def _model_drift(reader: Reader) -> Section:
    """The latest scoring of each model from ops.model_monitoring; inputs above the PSI threshold first."""
    result = reader.run("""
        SELECT model_name, model_version, input_name, psi, psi_threshold, is_drifted, scored_at, run_id
        FROM ops.model_monitoring
        QUALIFY scored_at = max(scored_at) OVER (PARTITION BY model_name)
        ORDER BY is_drifted DESC, psi DESC NULLS LAST, model_name, input_name""")
    drifted = [f"{r['model_name']}: {r['input_name']} (PSI {r['psi']:.2f})" for r in result.rows if r["is_drifted"]]
    note = (f"DRIFT: {len(drifted)} input(s) above the PSI threshold: {'; '.join(drifted)}" if drifted
            else "no input above the PSI threshold in the latest scoring of each model")
    return table("health-model-drift", "Model drift: latest scoring per model (PSI against training)", result,
                 note=note, row_class=lambda r: "fail" if r["is_drifted"] else "")


def rows_page(reader: Reader, filters: Filters) -> PageView:
    """The rows behind a country (its daily sales in the period) or an RFM segment (its customers)."""
    segment = filters.segment_of("rfm")
    if filters.country:
        period = filters.resolve(reader, _SALES, "invoice_date")
        page = PageView("rows", f"Rows: {filters.country}", f"{_SALES} rows of the country; {period or 'no data'}",
                        filters_used=("dates", "country"), periods=[period] if period else [])
        where, params = where_clause([date_condition("invoice_date", period), ("country = ?", filters.country)])
        found = reader.run(f"SELECT * FROM {_SALES} {where} ORDER BY invoice_date", params) if period else None
        page.sections += in_period([table("rows-country", f"{filters.country}: sales per day", found,
                                          currency=RETAIL_CURRENCY, note=RETURNS_NOTE)], period)
        return page
    if segment:
        page = PageView("rows", f"Rows: {segment}", "gold.customer_rfm rows of the RFM segment (the 500 of highest "
                                                    "net monetary value)", filters_used=("segment",))
        found = reader.run("SELECT * FROM gold.customer_rfm WHERE rfm_segment = ? ORDER BY net_monetary DESC, "
                           "customer_id LIMIT 500", [segment])
        page.sections.append(table("rows-segment", f"{segment}: customers", found, currency=RETAIL_CURRENCY))
        return page
    raise FilterError("the rows page needs a country or an RFM segment (rfm:<segment>) to show")


def filter_options(reader: Reader) -> dict[str, list[tuple[str, str]]]:
    """The values offered by the filter bar: (value, label) per filter."""
    def values(sql: str) -> list[tuple[str, str]]:
        return [(str(r["v"]), str(r["v"])) for r in reader.rows(sql) if r["v"] is not None]

    return {
        "country": values(f"SELECT DISTINCT country AS v FROM {_SALES} ORDER BY 1"),
        "category": values("SELECT DISTINCT split_part(category_code, '.', 1) AS v FROM gold.product_performance "
                           "WHERE category_code IS NOT NULL ORDER BY 1"),
        "brand": values("SELECT brand AS v FROM gold.product_performance WHERE brand IS NOT NULL GROUP BY 1 "
                        "ORDER BY sum(revenue) DESC, 1 LIMIT 60"),
        "segment": [(f"rfm:{name}", f"RFM: {name}") for name in RFM_SEGMENTS]
                   + [(f"users:{v}", f"Users: {label}") for v, label in
                      values("SELECT DISTINCT segment_name AS v FROM gold.user_segments ORDER BY 1")],
    }


PageBuilder = Callable[[Reader, Filters], PageView]
PAGES: dict[str, tuple[str, PageBuilder]] = {
    "overview": ("Overview", overview),
    "funnel": ("Funnel", funnel),
    "retention": ("Retention", retention),
    "segments": ("Segments", segments),
    "products": ("Products", products),
    "sales": ("Sales", sales),
    "customers": ("Customers", customers),
    "predictions": ("Predictions", predictions),
    "recommendations": ("Recommendations", recommendations),
    "clv": ("Lifetime value", lifetime_value),
    "health": ("Data health", health),
}
HIDDEN_PAGES: dict[str, tuple[str, PageBuilder]] = {"rows": ("Rows", rows_page)}


def build_page(lake: Lake, key: str, filters: Filters, *, options: bool = True) -> PageView:
    """Build one page on its own engine session.

    Raises:
        FilterError: the chosen start lies after the data of every dated table of the page.
    """
    reader = Reader(lake)
    try:
        page = {**PAGES, **HIDDEN_PAGES}[key][1](reader, filters)
        if page.periods and all(p.beyond for p in page.periods):
            spans = "; ".join(sorted({f"{p.data_from} to {p.data_to}" for p in page.periods}))
            raise FilterError(f"the start {filters.start} is after the last date with data on this page "
                              f"(the data covers {spans}): choose an earlier start")
        if options:
            page.options = filter_options(reader)
        return page
    finally:
        reader.close()
