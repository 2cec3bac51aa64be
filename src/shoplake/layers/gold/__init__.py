"""Gold: business tables, recomputed from Silver when (and only when) an input changed."""

from __future__ import annotations

from shoplake.catalog.spec import TableSpec, accepted_values, col, in_range, not_null, query_rule, unique

_RATE_RANGE: dict[str, float] = {"low": 0.0, "high": 1.0}
# The standard RFM segments, best first (gold.customer_rfm.rfm_segment).
RFM_SEGMENTS = ("Champions", "Loyal", "Potential loyalist", "New", "Promising", "Need attention",
                "About to sleep", "At risk", "Can't lose them", "Hibernating", "Lost")

DAILY_FUNNEL = TableSpec(
    name="gold.daily_funnel",
    description="One row per event_date: event counts by type, users, sessions, revenue and funnel rates.",
    grain=("event_date",),
    columns=(
        col("event_date", "DATE"),
        col("count_views", "BIGINT"),
        col("count_carts", "BIGINT"),
        col("count_remove_from_cart", "BIGINT"),
        col("count_purchases", "BIGINT"),
        col("count_users", "BIGINT", "distinct user_id with any event that date"),
        col("count_sessions", "BIGINT", "distinct (user_id, session_id); NULL session ids not counted"),
        col("count_purchasing_sessions", "BIGINT", "distinct (user_id, session_id) with a purchase"),
        col("revenue", "DOUBLE", "sum of price over purchase events"),
        col("view_to_cart_rate", "DOUBLE", "count_carts / count_views"),
        col("cart_to_purchase_rate", "DOUBLE", "count_purchases / count_carts (may exceed 1)"),
        col("view_to_purchase_rate", "DOUBLE", "count_purchases / count_views"),
        col("session_conversion_rate", "DOUBLE", "count_purchasing_sessions / count_sessions"),
        col("count_events", "BIGINT", "all events that date (reconciles with silver.events)"),
    ),
    inputs=("silver.events",),
    sql_file="gold/daily_funnel.sql",
    checks=(
        unique("event_date"),
        in_range("view_to_cart_rate", low=_RATE_RANGE["low"], high=_RATE_RANGE["high"]),
        in_range("view_to_purchase_rate", low=_RATE_RANGE["low"], high=_RATE_RANGE["high"]),
        in_range("session_conversion_rate", low=_RATE_RANGE["low"], high=_RATE_RANGE["high"], action="fail"),
    ),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.events) AS rows_in,
               (SELECT coalesce(sum(count_events), 0) FROM candidate) AS rows_out
    """,
)

USER_FEATURES = TableSpec(
    name="gold.user_features",
    description="One row per user_id: activity counts, revenue, first/last event and recency.",
    grain=("user_id",),
    columns=(
        col("user_id", "BIGINT"),
        col("count_sessions", "BIGINT"),
        col("count_events", "BIGINT"),
        col("count_views", "BIGINT"),
        col("count_carts", "BIGINT"),
        col("count_remove_from_cart", "BIGINT"),
        col("count_purchases", "BIGINT"),
        col("revenue", "DOUBLE"),
        col("count_products_viewed", "BIGINT", "distinct products viewed"),
        col("first_event_at", "TIMESTAMPTZ"),
        col("last_event_at", "TIMESTAMPTZ"),
        col("recency_days", "BIGINT", "whole days from last_event_at to the latest event_at in silver.events"),
    ),
    inputs=("silver.events",),
    sql_file="gold/user_features.sql",
    # Each user's row comes from that user's events, but for the latest event of all (recency_days): that
    # one is computed first, whole, so many events are aggregated in parts of users, whose spill no longer
    # grows with the data (22.3 GB at 100M events in one query: bench/RESULTS.md).
    shared_relations=(("latest", "SELECT max(event_at) AS latest_event_at FROM silver.events"),),
    split_by="user_id",
    checks=(unique("user_id"), in_range("recency_days", low=0, action="fail")),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.events) AS rows_in,
               (SELECT coalesce(sum(count_events), 0) FROM candidate) AS rows_out
    """,
)

PRODUCT_PERFORMANCE = TableSpec(
    name="gold.product_performance",
    description="One row per product_id: views, carts, purchases, users, revenue and view-to-purchase rate.",
    grain=("product_id",),
    columns=(
        col("product_id", "BIGINT"),
        col("category_code", "VARCHAR",
            "most frequent non-NULL category_code on the product's events (a tie: the first in sort order)"),
        col("brand", "VARCHAR",
            "most frequent non-NULL brand on the product's events (a tie: the first in sort order)"),
        col("count_views", "BIGINT"),
        col("count_carts", "BIGINT"),
        col("count_purchases", "BIGINT"),
        col("count_users", "BIGINT"),
        col("revenue", "DOUBLE"),
        col("view_to_purchase_rate", "DOUBLE", "count_purchases / count_views (may exceed 1)"),
        col("count_events", "BIGINT"),
    ),
    inputs=("silver.events",),
    sql_file="gold/product_performance.sql",
    checks=(unique("product_id"),),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.events) AS rows_in,
               (SELECT coalesce(sum(count_events), 0) FROM candidate) AS rows_out
    """,
)

DAILY_SALES_BY_COUNTRY = TableSpec(
    name="gold.daily_sales_by_country",
    description="One row per (invoice_date, country) with sales or returns: invoices, customers, units, revenue.",
    grain=("invoice_date", "country"),
    columns=(
        col("invoice_date", "DATE"),
        col("country", "VARCHAR"),
        col("count_invoices", "BIGINT", "distinct sale invoices"),
        col("count_customers", "BIGINT", "distinct non-NULL customers"),
        col("units", "BIGINT"),
        col("gross_revenue", "DOUBLE"),
        col("returns_value", "DOUBLE", "sum of silver.returns.line_revenue (<= 0)"),
        col("net_revenue", "DOUBLE", "gross_revenue + returns_value"),
        col("count_sale_lines", "BIGINT"),
        col("count_return_lines", "BIGINT"),
    ),
    inputs=("silver.sales", "silver.returns"),
    sql_file="gold/daily_sales_by_country.sql",
    checks=(unique("invoice_date", "country"), in_range("returns_value", high=0.0, action="fail")),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.sales) + (SELECT count(*) FROM silver.returns) AS rows_in,
               (SELECT coalesce(sum(count_sale_lines + count_return_lines), 0) FROM candidate) AS rows_out
    """,
)

CUSTOMER_RFM = TableSpec(
    name="gold.customer_rfm",
    description="One row per customer_id with at least one sale line: recency, frequency, monetary and scores.",
    grain=("customer_id",),
    columns=(
        col("customer_id", "BIGINT"),
        col("snapshot_date", "DATE", "the day after the latest invoice_date in silver.sales"),
        col("last_purchase_date", "DATE"),
        col("recency_days", "BIGINT", "snapshot_date - last_purchase_date"),
        col("frequency", "BIGINT", "distinct sale invoices"),
        col("monetary", "DOUBLE", "sum of sale line_revenue (gross)"),
        col("returns_value", "DOUBLE", "sum of returns line_revenue (<= 0)"),
        col("net_monetary", "DOUBLE", "monetary + returns_value"),
        col("r_score", "INTEGER", "1-5, 5 = most recent"),
        col("f_score", "INTEGER", "1-5, 5 = most frequent"),
        col("m_score", "INTEGER", "1-5, 5 = highest net_monetary"),
        col("count_sale_lines", "BIGINT"),
        col("fm_score", "INTEGER", "ceil((f_score + m_score) / 2): the grid's second axis"),
        col("rfm_segment", "VARCHAR", "the standard named segment of the R x FM grid (docs/DATA_CONTRACT.md)"),
    ),
    inputs=("silver.sales", "silver.returns"),
    sql_file="gold/customer_rfm.sql",
    checks=(
        unique("customer_id"),
        in_range("recency_days", low=1, action="fail"),
        query_rule("scores_between_1_and_5",
                   "SELECT * FROM candidate WHERE r_score NOT BETWEEN 1 AND 5 OR f_score NOT BETWEEN 1 AND 5 "
                   "OR m_score NOT BETWEEN 1 AND 5", action="fail"),
        accepted_values("rfm_segment", RFM_SEGMENTS, action="fail"),
        not_null("rfm_segment", action="fail"),
    ),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.sales) AS rows_in,
               (SELECT coalesce(sum(count_sale_lines), 0) FROM candidate) AS rows_out,
               (SELECT count(*) FROM silver.sales WHERE customer_id IS NULL) AS guest_sale
    """,
)

PRODUCT_SALES = TableSpec(
    name="gold.product_sales",
    description="One row per stock_code with at least one sale line: units, revenue, invoices, customers, returns.",
    grain=("stock_code",),
    columns=(
        col("stock_code", "VARCHAR"),
        col("description", "VARCHAR", "most frequent description of its sale lines"),
        col("units", "BIGINT"),
        col("gross_revenue", "DOUBLE"),
        col("count_invoices", "BIGINT"),
        col("count_customers", "BIGINT"),
        col("returned_units", "BIGINT", "units on return lines (positive)"),
        col("count_sale_lines", "BIGINT"),
    ),
    inputs=("silver.sales", "silver.returns"),
    sql_file="gold/product_sales.sql",
    checks=(unique("stock_code"),),
    accounting_sql="""
        SELECT (SELECT count(*) FROM silver.sales) AS rows_in,
               (SELECT coalesce(sum(count_sale_lines), 0) FROM candidate) AS rows_out
    """,
)

CART_ABANDONMENT = TableSpec(
    name="gold.cart_abandonment",
    description=("One row per event_date with a cart event: carts, carts abandoned (no purchase of the same "
                 "product by the same user within 7 days), the rate with its Wilson 95 % interval, value."),
    grain=("event_date",),
    columns=(
        col("event_date", "DATE", "UTC date of the cart event"),
        col("count_carts", "BIGINT", "distinct (user_id, session_id, product_id, event_at, price) cart events"),
        col("count_abandoned_carts", "BIGINT", "carts with no purchase of that product by that user in "
                                               "[cart event_at, event_at + 7 days]"),
        col("abandonment_rate", "DOUBLE", "count_abandoned_carts / count_carts"),
        col("abandonment_low", "DOUBLE", "Wilson 95 % lower bound"),
        col("abandonment_high", "DOUBLE", "Wilson 95 % upper bound"),
        col("abandoned_value", "DOUBLE", "sum of price over abandoned carts"),
        col("count_carting_users", "BIGINT"),
        col("count_abandoning_users", "BIGINT", "users with at least one abandoned cart that date"),
        col("is_window_complete", "BOOLEAN", "the date's last cart + 7 days <= latest event_at in silver.events"),
    ),
    inputs=("silver.events",),
    sql_file="gold/cart_abandonment.sql",
    checks=(
        unique("event_date"),
        in_range("abandonment_rate", low=0.0, high=1.0, action="fail"),
        in_range("abandonment_low", low=0.0, high=1.0, action="fail"),
        in_range("abandonment_high", low=0.0, high=1.0, action="fail"),
    ),
    accounting_sql="""
        SELECT (SELECT count(*) FROM (SELECT DISTINCT user_id, session_id, product_id, event_at, price
                                      FROM silver.events WHERE event_type = 'cart') AS c) AS rows_in,
               (SELECT coalesce(sum(count_carts), 0) FROM candidate) AS rows_out
    """,
)

RETENTION_COHORTS = TableSpec(
    name="gold.retention_cohorts",
    description=("One row per (cohort_week, week_number): users whose first event fell in cohort_week (ISO "
                 "week, Monday) and how many were active, and bought, in week week_number after it."),
    grain=("cohort_week", "week_number"),
    columns=(
        col("cohort_week", "DATE", "Monday of the ISO week of the user's first event"),
        col("week_number", "INTEGER", "0 = the cohort's own week; k = the week starting cohort_week + 7k"),
        col("activity_week", "DATE", "cohort_week + 7 * week_number"),
        col("cohort_users", "BIGINT"),
        col("active_users", "BIGINT", "cohort users with any event in activity_week"),
        col("purchasing_users", "BIGINT", "cohort users with a purchase event in activity_week"),
        col("retention_rate", "DOUBLE", "active_users / cohort_users"),
        col("purchase_rate", "DOUBLE", "purchasing_users / cohort_users"),
        col("is_complete", "BOOLEAN", "the data reaches the Sunday of activity_week"),
    ),
    inputs=("silver.events",),
    sql_file="gold/retention_cohorts.sql",
    checks=(
        unique("cohort_week", "week_number"),
        in_range("retention_rate", low=0.0, high=1.0, action="fail"),
        in_range("purchase_rate", low=0.0, high=1.0, action="fail"),
        query_rule("week_zero_is_everyone",
                   "SELECT * FROM candidate WHERE week_number = 0 AND active_users <> cohort_users", action="fail"),
    ),
    accounting_sql="""
        SELECT (SELECT count(DISTINCT user_id) FROM silver.events) AS rows_in,
               (SELECT coalesce(sum(cohort_users), 0) FROM candidate WHERE week_number = 0) AS rows_out
    """,
)

CUSTOMER_COHORTS = TableSpec(
    name="gold.customer_cohorts",
    description=("One row per (cohort_month, month_number): customers whose first sale invoice fell in "
                 "cohort_month, how many bought in month month_number after it, the share who had made a "
                 "repeat purchase by then, and their revenue that month net of returns."),
    grain=("cohort_month", "month_number"),
    columns=(
        col("cohort_month", "DATE", "first day of the month of the customer's first sale invoice"),
        col("month_number", "INTEGER", "0 = the cohort's own month; k = cohort_month + k months"),
        col("activity_month", "DATE"),
        col("cohort_customers", "BIGINT"),
        col("active_customers", "BIGINT", "cohort customers with a sale line in activity_month"),
        col("repeat_customers", "BIGINT",
            "cohort customers whose second distinct sale invoice is in or before activity_month"),
        col("repeat_purchase_rate", "DOUBLE", "repeat_customers / cohort_customers"),
        col("gross_revenue", "DOUBLE", "sale line_revenue of the cohort's customers in activity_month"),
        col("returns_value", "DOUBLE", "return line_revenue (<= 0) of the cohort's customers in activity_month"),
        col("net_revenue", "DOUBLE", "gross_revenue + returns_value"),
        col("net_revenue_per_customer", "DOUBLE", "net_revenue / cohort_customers"),
        col("count_sale_lines", "BIGINT"),
        col("count_return_lines", "BIGINT"),
        col("is_complete", "BOOLEAN", "the data reaches the last day of activity_month"),
    ),
    inputs=("silver.sales", "silver.returns"),
    sql_file="gold/customer_cohorts.sql",
    checks=(
        unique("cohort_month", "month_number"),
        in_range("repeat_purchase_rate", low=0.0, high=1.0, action="fail"),
        in_range("returns_value", high=0.0, action="fail"),
    ),
    accounting_sql="""
        WITH firsts AS (SELECT customer_id, CAST(date_trunc('month', min(invoice_date)) AS DATE) AS cohort_month
                        FROM silver.sales WHERE customer_id IS NOT NULL GROUP BY customer_id),
             r AS (SELECT f.cohort_month, CAST(date_trunc('month', r.invoice_date) AS DATE) AS month
                   FROM silver.returns AS r LEFT JOIN firsts AS f ON f.customer_id = r.customer_id
                   WHERE r.customer_id IS NOT NULL)
        SELECT (SELECT count(*) FROM silver.sales) + (SELECT count(*) FROM silver.returns) AS rows_in,
               (SELECT coalesce(sum(count_sale_lines + count_return_lines), 0) FROM candidate) AS rows_out,
               (SELECT count(*) FROM silver.sales WHERE customer_id IS NULL)
                 + (SELECT count(*) FROM silver.returns WHERE customer_id IS NULL) AS guest_line,
               (SELECT count(*) FROM r WHERE cohort_month IS NULL) AS return_without_sale,
               (SELECT count(*) FROM r WHERE month < cohort_month) AS return_before_cohort
    """,
)

TABLES = (DAILY_FUNNEL, USER_FEATURES, PRODUCT_PERFORMANCE, DAILY_SALES_BY_COUNTRY, CUSTOMER_RFM, PRODUCT_SALES,
          CART_ABANDONMENT, RETENTION_COHORTS, CUSTOMER_COHORTS)
