-- gold.user_features: one row per user_id. recency_days counts whole days from the user's last event
-- to the latest event_at in silver.events: `latest`, a shared relation computed over every user's events
-- before this query runs, so the table can be built in parts of users (`split_by`).
SELECT
    e.user_id,
    count(DISTINCT e.session_id)                               AS count_sessions,
    count(*)                                                   AS count_events,
    count(*) FILTER (WHERE e.event_type = 'view')              AS count_views,
    count(*) FILTER (WHERE e.event_type = 'cart')              AS count_carts,
    count(*) FILTER (WHERE e.event_type = 'remove_from_cart')  AS count_remove_from_cart,
    count(*) FILTER (WHERE e.event_type = 'purchase')          AS count_purchases,
    coalesce(sum(e.price) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue,
    count(DISTINCT e.product_id) FILTER (WHERE e.event_type = 'view')  AS count_products_viewed,
    min(e.event_at)                                            AS first_event_at,
    max(e.event_at)                                            AS last_event_at,
    CAST(floor(epoch(any_value(l.latest_event_at) - max(e.event_at)) / 86400) AS BIGINT) AS recency_days
FROM silver.events AS e
CROSS JOIN latest AS l
GROUP BY e.user_id
