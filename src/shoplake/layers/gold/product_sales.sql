-- gold.product_sales: one row per stock_code with at least one sale line. description is the most
-- frequent non-NULL description of its sale lines (ties: alphabetically first).
WITH described AS (
    SELECT stock_code, description,
           row_number() OVER (PARTITION BY stock_code ORDER BY count(*) DESC, description) AS rank
    FROM silver.sales
    WHERE description IS NOT NULL
    GROUP BY stock_code, description
),
sold AS (
    SELECT stock_code,
           sum(quantity)               AS units,
           sum(line_revenue)           AS gross_revenue,
           count(DISTINCT invoice_id)  AS count_invoices,
           count(DISTINCT customer_id) AS count_customers,
           count(*)                    AS count_sale_lines
    FROM silver.sales
    GROUP BY stock_code
),
returned AS (
    SELECT stock_code, sum(abs(quantity)) AS returned_units  -- a C line may carry a positive quantity
    FROM silver.returns
    GROUP BY stock_code
)
SELECT
    s.stock_code,
    d.description,
    s.units,
    s.gross_revenue,
    s.count_invoices,
    s.count_customers,
    coalesce(r.returned_units, 0) AS returned_units,
    s.count_sale_lines
FROM sold AS s
LEFT JOIN described AS d ON d.stock_code = s.stock_code AND d.rank = 1
LEFT JOIN returned AS r ON r.stock_code = s.stock_code
