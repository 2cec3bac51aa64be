-- gold.product_performance: one row per product_id; category_code and brand are the most frequent
-- non-NULL values seen on the product's events, a tie going to the value that sorts first. (mode() would
-- break ties by whatever order the engine reads the rows in, so DuckDB and Spark could disagree.)
WITH value_counts AS (
    SELECT product_id, 'category_code' AS attribute, category_code AS value, count(*) AS n
    FROM silver.events
    WHERE category_code IS NOT NULL
    GROUP BY product_id, category_code
    UNION ALL
    SELECT product_id, 'brand' AS attribute, brand AS value, count(*) AS n
    FROM silver.events
    WHERE brand IS NOT NULL
    GROUP BY product_id, brand
),
top_values AS (
    SELECT product_id, attribute, value
    FROM (SELECT product_id, attribute, value,
                 row_number() OVER (PARTITION BY product_id, attribute ORDER BY n DESC, value) AS pick
          FROM value_counts) AS ranked
    WHERE pick = 1
),
per_product AS (
    SELECT
        product_id,
        count(*) FILTER (WHERE event_type = 'view')              AS count_views,
        count(*) FILTER (WHERE event_type = 'cart')              AS count_carts,
        count(*) FILTER (WHERE event_type = 'purchase')          AS count_purchases,
        count(DISTINCT user_id)                                  AS count_users,
        coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue,
        count(*)                                                 AS count_events
    FROM silver.events
    GROUP BY product_id
)
SELECT
    p.product_id,
    c.value                                                      AS category_code,
    b.value                                                      AS brand,
    p.count_views,
    p.count_carts,
    p.count_purchases,
    p.count_users,
    p.revenue,
    p.count_purchases / NULLIF(p.count_views, 0)                 AS view_to_purchase_rate,
    p.count_events
FROM per_product AS p
LEFT JOIN top_values AS c ON c.product_id = p.product_id AND c.attribute = 'category_code'
LEFT JOIN top_values AS b ON b.product_id = p.product_id AND b.attribute = 'brand'
