-- silver.returns: one row per distinct cancellation or negative-quantity line; line_revenue is negative.
SELECT
    InvoiceNo                                  AS invoice_id,
    StockCode                                  AS stock_code,
    Description                                AS description,
    Quantity                                   AS quantity,
    InvoiceDate                                AS invoiced_at,
    CAST(InvoiceDate AS DATE)                  AS invoice_date,
    UnitPrice                                  AS unit_price,
    -abs(Quantity * UnitPrice)                 AS line_revenue,
    CustomerID                                 AS customer_id,
    Country                                    AS country,
    CAST(hour(InvoiceDate) AS INTEGER)         AS hour_of_day,
    CAST(isodow(InvoiceDate) AS INTEGER)       AS day_of_week,
    _batch_id,
    _source_row
FROM bronze.retail
