-- gold.daily_sales_by_country: one row per (invoice_date, country) with sales or returns.
WITH sales AS (
    SELECT invoice_date, country,
           count(DISTINCT invoice_id)  AS count_invoices,
           count(DISTINCT customer_id) AS count_customers,
           sum(quantity)               AS units,
           sum(line_revenue)           AS gross_revenue,
           count(*)                    AS count_sale_lines
    FROM silver.sales
    GROUP BY invoice_date, country
),
returns AS (
    SELECT invoice_date, country, sum(line_revenue) AS returns_value, count(*) AS count_return_lines
    FROM silver.returns
    GROUP BY invoice_date, country
)
SELECT
    coalesce(s.invoice_date, r.invoice_date)   AS invoice_date,
    coalesce(s.country, r.country)             AS country,
    coalesce(s.count_invoices, 0)              AS count_invoices,
    coalesce(s.count_customers, 0)             AS count_customers,
    coalesce(s.units, 0)                       AS units,
    coalesce(s.gross_revenue, 0)               AS gross_revenue,
    coalesce(r.returns_value, 0)               AS returns_value,
    coalesce(s.gross_revenue, 0) + coalesce(r.returns_value, 0) AS net_revenue,
    coalesce(s.count_sale_lines, 0)            AS count_sale_lines,
    coalesce(r.count_return_lines, 0)          AS count_return_lines
FROM sales AS s
FULL OUTER JOIN returns AS r
    ON s.invoice_date = r.invoice_date AND s.country IS NOT DISTINCT FROM r.country
