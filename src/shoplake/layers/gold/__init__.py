"""Gold: business tables, recomputed from Silver when (and only when) an input changed."""

from __future__ import annotations

from shoplake.catalog.spec import TableSpec, col, in_range, query_rule, unique

_RATE_RANGE: dict[str, float] = {"low": 0.0, "high": 1.0}

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
        col("m_score", "INTEGER", "1-5, 5 = highest monetary"),
        col("count_sale_lines", "BIGINT"),
    ),
    inputs=("silver.sales", "silver.returns"),
    sql_file="gold/customer_rfm.sql",
    checks=(
        unique("customer_id"),
        in_range("recency_days", low=1, action="fail"),
        query_rule("scores_between_1_and_5",
                   "SELECT * FROM candidate WHERE r_score NOT BETWEEN 1 AND 5 OR f_score NOT BETWEEN 1 AND 5 "
                   "OR m_score NOT BETWEEN 1 AND 5", action="fail"),
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

TABLES = (DAILY_FUNNEL, USER_FEATURES, PRODUCT_PERFORMANCE, DAILY_SALES_BY_COUNTRY, CUSTOMER_RFM, PRODUCT_SALES)
