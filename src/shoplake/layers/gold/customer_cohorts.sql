-- gold.customer_cohorts: one row per (cohort_month, month_number). A customer's cohort is the calendar month
-- of their first sale invoice (silver.sales, customer_id not NULL); month k is cohort_month + k months. One
-- row per cohort and per month from the cohort's month to the last month holding sales or returns.
-- Returns are netted in the month they were invoiced; a return dated before its customer's cohort month, or
-- by a customer with no sale, belongs to no cohort month (the ledger's `return_before_cohort` and
-- `return_without_sale`).
WITH data_end AS (
    SELECT max(d) AS last_date FROM (
        SELECT max(invoice_date) AS d FROM silver.sales UNION ALL SELECT max(invoice_date) FROM silver.returns
    ) AS ends
),
sale_invoices AS (
    SELECT customer_id, invoice_id, min(invoiced_at) AS invoiced_at,
           CAST(date_trunc('month', min(invoice_date)) AS DATE) AS invoice_month
    FROM silver.sales
    WHERE customer_id IS NOT NULL
    GROUP BY customer_id, invoice_id
),
ordered AS (
    SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY invoiced_at, invoice_id) AS invoice_number
    FROM sale_invoices
),
customers AS (
    SELECT customer_id,
           min(invoice_month)                                              AS cohort_month,
           min(CASE WHEN invoice_number = 2 THEN invoice_month END)        AS repeat_month
    FROM ordered
    GROUP BY customer_id
),
cohorts AS (SELECT cohort_month, count(*) AS cohort_customers FROM customers GROUP BY cohort_month),
lines AS (
    SELECT customer_id, CAST(date_trunc('month', invoice_date) AS DATE) AS activity_month, invoice_id,
           line_revenue, 1 AS is_sale
    FROM silver.sales WHERE customer_id IS NOT NULL
    UNION ALL
    SELECT customer_id, CAST(date_trunc('month', invoice_date) AS DATE), invoice_id, line_revenue, 0
    FROM silver.returns WHERE customer_id IS NOT NULL
),
months AS (SELECT DISTINCT activity_month FROM lines),
monthly AS (
    SELECT c.cohort_month, l.activity_month,
           count(DISTINCT CASE WHEN l.is_sale = 1 THEN l.customer_id END)   AS active_customers,
           coalesce(sum(CASE WHEN l.is_sale = 1 THEN l.line_revenue END), 0) AS gross_revenue,
           coalesce(sum(CASE WHEN l.is_sale = 0 THEN l.line_revenue END), 0) AS returns_value,
           sum(l.is_sale)                                                   AS count_sale_lines,
           sum(1 - l.is_sale)                                               AS count_return_lines
    FROM lines AS l
    JOIN customers AS c ON c.customer_id = l.customer_id
    WHERE l.activity_month >= c.cohort_month
    GROUP BY c.cohort_month, l.activity_month
),
repeats AS (
    SELECT c.cohort_month, m.activity_month, count(c.repeat_month) AS repeat_customers
    FROM customers AS c
    JOIN months AS m ON m.activity_month >= c.cohort_month
    WHERE c.repeat_month <= m.activity_month
    GROUP BY c.cohort_month, m.activity_month
)
SELECT k.cohort_month,
       CAST((year(m.activity_month) * 12 + month(m.activity_month))
            - (year(k.cohort_month) * 12 + month(k.cohort_month)) AS INTEGER)        AS month_number,
       m.activity_month,
       k.cohort_customers,
       coalesce(y.active_customers, 0)                                             AS active_customers,
       coalesce(r.repeat_customers, 0)                                             AS repeat_customers,
       CAST(coalesce(r.repeat_customers, 0) AS DOUBLE) / k.cohort_customers        AS repeat_purchase_rate,
       coalesce(y.gross_revenue, 0)                                                AS gross_revenue,
       coalesce(y.returns_value, 0)                                                AS returns_value,
       coalesce(y.gross_revenue, 0) + coalesce(y.returns_value, 0)                 AS net_revenue,
       (coalesce(y.gross_revenue, 0) + coalesce(y.returns_value, 0)) / k.cohort_customers
                                                                                   AS net_revenue_per_customer,
       coalesce(y.count_sale_lines, 0)                                             AS count_sale_lines,
       coalesce(y.count_return_lines, 0)                                           AS count_return_lines,
       d.last_date >= last_day(m.activity_month)                                   AS is_complete
FROM cohorts AS k
JOIN months AS m ON m.activity_month >= k.cohort_month
CROSS JOIN data_end AS d
LEFT JOIN monthly AS y ON y.cohort_month = k.cohort_month AND y.activity_month = m.activity_month
LEFT JOIN repeats AS r ON r.cohort_month = k.cohort_month AND r.activity_month = m.activity_month
