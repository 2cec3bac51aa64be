-- gold.customer_rfm: one row per customer_id with at least one sale line. Scores are quintiles
-- (5 = most recent / most frequent / highest spend); ties are broken by customer_id so the scores are
-- deterministic on every engine.
WITH snapshot AS (SELECT max(invoice_date) + 1 AS snapshot_date FROM silver.sales),
customers AS (
    SELECT customer_id,
           max(invoice_date)          AS last_purchase_date,
           count(DISTINCT invoice_id) AS frequency,
           sum(line_revenue)          AS monetary,
           count(*)                   AS count_sale_lines
    FROM silver.sales
    WHERE customer_id IS NOT NULL
    GROUP BY customer_id
),
returned AS (
    SELECT customer_id, sum(line_revenue) AS returns_value
    FROM silver.returns
    WHERE customer_id IS NOT NULL
    GROUP BY customer_id
),
measured AS (
    SELECT c.customer_id, s.snapshot_date, c.last_purchase_date,
           CAST(s.snapshot_date - c.last_purchase_date AS BIGINT) AS recency_days,
           c.frequency, c.monetary,
           coalesce(r.returns_value, 0) AS returns_value,
           c.monetary + coalesce(r.returns_value, 0) AS net_monetary,
           c.count_sale_lines
    FROM customers AS c
    CROSS JOIN snapshot AS s
    LEFT JOIN returned AS r ON r.customer_id = c.customer_id
)
SELECT
    customer_id, snapshot_date, last_purchase_date, recency_days, frequency, monetary, returns_value,
    net_monetary,
    CAST(ntile(5) OVER (ORDER BY recency_days DESC, customer_id) AS INTEGER) AS r_score,
    CAST(ntile(5) OVER (ORDER BY frequency, customer_id) AS INTEGER)         AS f_score,
    CAST(ntile(5) OVER (ORDER BY monetary, customer_id) AS INTEGER)          AS m_score,
    count_sale_lines
FROM measured
