-- gold.customer_rfm: one row per customer_id with at least one sale line. Scores are quintiles of the
-- cumulative distribution, ceil(5 * cume_dist): 5 = most recent / most frequent / highest spend, equal
-- measures always get equal scores (so a heavily tied value, such as frequency 1, can leave a score
-- unused), and the result needs no tie-breaker, so it is the same on every engine. It is computed from
-- integer counts, floor((5k + n - 1) / n), because 5 * 0.6 is 3.0000000000000004 in floating point.
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
),
ranked AS (
    SELECT *,
           count(*) OVER ()                              AS n,
           -- rows at or below this one (peers included): the cumulative count behind cume_dist
           count(*) OVER (ORDER BY recency_days DESC)   AS r_rank,
           count(*) OVER (ORDER BY frequency)           AS f_rank,
           count(*) OVER (ORDER BY monetary)            AS m_rank
    FROM measured
)
SELECT
    customer_id, snapshot_date, last_purchase_date, recency_days, frequency, monetary, returns_value,
    net_monetary,
    CAST(floor((5 * r_rank + n - 1) / n) AS INTEGER) AS r_score,
    CAST(floor((5 * f_rank + n - 1) / n) AS INTEGER) AS f_score,
    CAST(floor((5 * m_rank + n - 1) / n) AS INTEGER) AS m_score,
    count_sale_lines
FROM ranked
