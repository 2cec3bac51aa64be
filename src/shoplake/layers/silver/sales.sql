-- silver.sales: one row per distinct valid sale line (not a cancellation, quantity > 0, unit_price > 0).
-- The runner hands this table only the bronze rows it owns (not returns); the quantity and price checks
-- quarantine what is left over (zero quantities, free or adjustment lines).
SELECT
    InvoiceNo                                  AS invoice_id,
    StockCode                                  AS stock_code,
    Description                                AS description,
    Quantity                                   AS quantity,
    InvoiceDate                                AS invoiced_at,
    CAST(InvoiceDate AS DATE)                  AS invoice_date,
    UnitPrice                                  AS unit_price,
    Quantity * UnitPrice                       AS line_revenue,
    CustomerID                                 AS customer_id,
    Country                                    AS country,
    CAST(hour(InvoiceDate) AS INTEGER)         AS hour_of_day,
    CAST(isodow(InvoiceDate) AS INTEGER)       AS day_of_week,
    _batch_id,
    _source_row
FROM bronze.retail
