"""Silver: cleaned, typed, deduplicated records. Incremental over new Bronze batches."""

from __future__ import annotations

from shoplake.catalog.spec import TableSpec, accepted_values, col, in_range, not_null, row_rule

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")

_RETAIL_IS_RETURN = "(coalesce(starts_with(InvoiceNo, 'C'), false) OR coalesce(Quantity < 0, false))"

PRODUCTS = TableSpec(
    name="silver.products",
    description=("One row per distinct product record ingested (product_id, category_id, category_code, "
                 "brand); is_current marks the latest ingested record of each product_id."),
    grain=("product_id", "category_id", "category_code", "brand"),
    columns=(
        col("product_id", "BIGINT"),
        col("category_id", "BIGINT"),
        col("category_code", "VARCHAR"),
        col("brand", "VARCHAR"),
        col("category_l1", "VARCHAR"),
        col("first_ingested_at", "TIMESTAMPTZ"),
        col("last_ingested_at", "TIMESTAMPTZ"),
        col("is_current", "BOOLEAN", "the latest ingested record of this product_id"),
    ),
    inputs=("bronze.products",),
    build="full",
    sql_file="silver/products.sql",
    checks=(not_null("product_id", action="warn"),),
    accounting_sql="""
        SELECT (SELECT count(*) FROM bronze.products) AS rows_in,
               (SELECT count(*) FROM candidate) AS rows_out,
               (SELECT count(*) FROM bronze.products)
                 - (SELECT count(*) FROM (SELECT DISTINCT product_id, category_id, category_code, brand
                                          FROM bronze.products)) AS duplicate
    """,
)

EVENTS = TableSpec(
    name="silver.events",
    description="One row per distinct clickstream event (exact duplicates removed within and across batches).",
    grain=("event_at", "event_type", "product_id", "category_id", "category_code", "brand", "price",
           "user_id", "session_id"),
    columns=(
        col("event_at", "TIMESTAMPTZ"),
        col("event_date", "DATE"),
        col("event_hour", "INTEGER", "0-23, UTC"),
        col("day_of_week", "INTEGER", "ISO: 1 = Monday ... 7 = Sunday"),
        col("event_type", "VARCHAR"),
        col("product_id", "BIGINT"),
        col("category_id", "BIGINT"),
        col("category_code", "VARCHAR"),
        col("category_l1", "VARCHAR"),
        col("category_l2", "VARCHAR"),
        col("category_l3", "VARCHAR"),
        col("brand", "VARCHAR"),
        col("price", "DOUBLE"),
        col("user_id", "BIGINT"),
        col("session_id", "VARCHAR", "the source user_session; a session is (user_id, session_id)"),
    ),
    inputs=("bronze.clickstream", "silver.products"),
    build="incremental",
    sql_file="silver/events.sql",
    source="clickstream",
    checks=(
        not_null("event_at", action="quarantine"),
        not_null("event_type", action="quarantine"),
        accepted_values("event_type", EVENT_TYPES, action="quarantine"),
        not_null("product_id", action="quarantine"),
        not_null("user_id", action="quarantine"),
        in_range("price", low=0, action="quarantine", name="negative_price"),
        not_null("price", action="warn"),
        not_null("session_id", action="warn"),
    ),
)

_SALE_COLUMNS = (
    col("invoice_id", "VARCHAR"),
    col("stock_code", "VARCHAR"),
    col("description", "VARCHAR"),
    col("quantity", "BIGINT"),
    col("invoiced_at", "TIMESTAMPTZ"),
    col("invoice_date", "DATE"),
    col("unit_price", "DOUBLE"),
    col("line_revenue", "DOUBLE"),
    col("customer_id", "BIGINT", "NULL for guest sales"),
    col("country", "VARCHAR"),
    col("hour_of_day", "INTEGER"),
    col("day_of_week", "INTEGER", "ISO: 1 = Monday ... 7 = Sunday"),
)

SALES = TableSpec(
    name="silver.sales",
    description=("One row per distinct valid retail sale line: invoice not starting with C, quantity > 0, "
                 "unit_price > 0; line_revenue = quantity * unit_price."),
    grain=tuple(c.name for c in _SALE_COLUMNS),
    columns=_SALE_COLUMNS,
    inputs=("bronze.retail",),
    build="incremental",
    sql_file="silver/sales.sql",
    source="retail",
    owns_rows=f"NOT {_RETAIL_IS_RETURN}",
    checks=(
        not_null("invoice_id", action="quarantine"),
        not_null("stock_code", action="quarantine"),
        not_null("invoiced_at", action="quarantine"),
        row_rule("non_positive_quantity", "quantity IS NULL OR quantity <= 0", action="quarantine"),
        row_rule("non_positive_unit_price", "unit_price IS NULL OR unit_price <= 0", action="quarantine"),
        not_null("country", action="warn"),
    ),
)

RETURNS = TableSpec(
    name="silver.returns",
    description=("One row per distinct cancellation (invoice starting with C) or negative-quantity line; "
                 "line_revenue is negative."),
    grain=tuple(c.name for c in _SALE_COLUMNS),
    columns=_SALE_COLUMNS,
    inputs=("bronze.retail",),
    build="incremental",
    sql_file="silver/returns.sql",
    source="retail",
    owns_rows=_RETAIL_IS_RETURN,
    checks=(
        not_null("invoiced_at", action="quarantine"),
        not_null("quantity", action="quarantine"),
        in_range("line_revenue", high=0, action="quarantine", name="returns_are_negative"),
    ),
)

TABLES = (PRODUCTS, EVENTS, SALES, RETURNS)
