-- gold.product_performance: one row per product_id; category_code and brand are the most frequent
-- non-NULL values seen on the product's events.
SELECT
    product_id,
    mode(category_code)                                      AS category_code,
    mode(brand)                                              AS brand,
    count(*) FILTER (WHERE event_type = 'view')              AS count_views,
    count(*) FILTER (WHERE event_type = 'cart')              AS count_carts,
    count(*) FILTER (WHERE event_type = 'purchase')          AS count_purchases,
    count(DISTINCT user_id)                                  AS count_users,
    coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue,
    count(*) FILTER (WHERE event_type = 'purchase') / NULLIF(count(*) FILTER (WHERE event_type = 'view'), 0)
                                                             AS view_to_purchase_rate,
    count(*)                                                 AS count_events
FROM silver.events
GROUP BY product_id
