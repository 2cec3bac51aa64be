-- gold.customer_rfm: one row per customer_id with at least one sale line. Scores 1-5 are quintiles of
-- the customers' average rank (ties share the mean of their places): ceil(5 * average_rank / n), 5 = most
-- recent / most frequent / highest net spend. Equal measures get equal scores, and a heavy tie sits in the
-- middle of its places, so every score is used (with plain cume_dist the ~35% of customers with one invoice
-- all got f_score 2 and f_score 1 was never used). m_score ranks monetary value net of returns, the value
-- the segments and their revenue shares use. No tie-breaker is needed, so every engine agrees. Computed
-- from integer counts, floor((5 * (2 * below + equal + 1) + 2n - 1) / 2n), because floating point would
-- put exact quintile boundaries on the wrong side (5 * 0.6 is 3.0000000000000004).
-- rfm_segment: the standard named segment of the R x FM grid, fm_score = ceil((f_score + m_score) / 2):
--   R 5: FM 1 New, 2-3 Potential loyalist, 4-5 Champions;  R 4: FM 1 Promising, 2-3 Potential loyalist,
--   4-5 Loyal;  R 3: FM 1-2 About to sleep, 3 Need attention, 4-5 Loyal;  R 2: FM 1-2 Hibernating,
--   3-4 At risk, 5 Can't lose them;  R 1: FM 1-2 Lost, 3-4 At risk, 5 Can't lose them.
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
           count(*) OVER ()                                        AS n,
           -- customers strictly below this one, and customers with the same measure (itself included)
           rank() OVER (ORDER BY recency_days DESC) - 1           AS r_below,
           count(*) OVER (PARTITION BY recency_days)              AS r_equal,
           rank() OVER (ORDER BY frequency) - 1                   AS f_below,
           count(*) OVER (PARTITION BY frequency)                 AS f_equal,
           rank() OVER (ORDER BY net_monetary) - 1                AS m_below,
           count(*) OVER (PARTITION BY net_monetary)              AS m_equal
    FROM measured
),
scored AS (
    SELECT
        customer_id, snapshot_date, last_purchase_date, recency_days, frequency, monetary, returns_value,
        net_monetary,
        CAST(floor((5 * (2 * r_below + r_equal + 1) + 2 * n - 1) / (2 * n)) AS INTEGER) AS r_score,
        CAST(floor((5 * (2 * f_below + f_equal + 1) + 2 * n - 1) / (2 * n)) AS INTEGER) AS f_score,
        CAST(floor((5 * (2 * m_below + m_equal + 1) + 2 * n - 1) / (2 * n)) AS INTEGER) AS m_score,
        count_sale_lines
    FROM ranked
),
graded AS (SELECT *, CAST(floor((f_score + m_score + 1) / 2) AS INTEGER) AS fm_score FROM scored)
SELECT *,
       CASE
           WHEN r_score = 5 AND fm_score = 1 THEN 'New'
           WHEN r_score = 4 AND fm_score = 1 THEN 'Promising'
           WHEN r_score >= 4 AND fm_score <= 3 THEN 'Potential loyalist'
           WHEN r_score = 5 THEN 'Champions'
           WHEN r_score >= 3 AND fm_score >= 4 THEN 'Loyal'
           WHEN r_score = 3 AND fm_score = 3 THEN 'Need attention'
           WHEN r_score = 3 THEN 'About to sleep'
           WHEN fm_score = 5 THEN 'Can''t lose them'
           WHEN fm_score >= 3 THEN 'At risk'
           WHEN r_score = 2 THEN 'Hibernating'
           ELSE 'Lost'
       END AS rfm_segment
FROM graded
