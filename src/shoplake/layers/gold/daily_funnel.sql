-- gold.daily_funnel: one row per event_date. Rates are NULL when their denominator is 0.
WITH counts AS (
    SELECT
        event_date,
        count(*) FILTER (WHERE event_type = 'view')             AS count_views,
        count(*) FILTER (WHERE event_type = 'cart')             AS count_carts,
        count(*) FILTER (WHERE event_type = 'remove_from_cart') AS count_remove_from_cart,
        count(*) FILTER (WHERE event_type = 'purchase')         AS count_purchases,
        count(DISTINCT user_id)                                 AS count_users,
        count(DISTINCT CASE WHEN session_id IS NOT NULL THEN struct_pack(u := user_id, s := session_id) END)
                                                                AS count_sessions,
        count(DISTINCT CASE WHEN session_id IS NOT NULL AND event_type = 'purchase'
                            THEN struct_pack(u := user_id, s := session_id) END)
                                                                AS count_purchasing_sessions,
        coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0)  AS revenue,
        count(*)                                                AS count_events
    FROM silver.events
    GROUP BY event_date
)
SELECT
    event_date, count_views, count_carts, count_remove_from_cart, count_purchases, count_users,
    count_sessions, count_purchasing_sessions, revenue,
    count_carts / NULLIF(count_views, 0)                   AS view_to_cart_rate,
    count_purchases / NULLIF(count_carts, 0)               AS cart_to_purchase_rate,
    count_purchases / NULLIF(count_views, 0)               AS view_to_purchase_rate,
    count_purchasing_sessions / NULLIF(count_sessions, 0)  AS session_conversion_rate,
    count_events
FROM counts
