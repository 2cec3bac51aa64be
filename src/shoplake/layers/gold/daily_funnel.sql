-- gold.daily_funnel: one row per event_date. Rates are NULL when their denominator is 0.
-- Distinct users and sessions are counted as groups, in three plain aggregations (sessions, then users,
-- then days), not with count(DISTINCT ...): a distinct aggregate keeps every value of a day in memory and
-- cannot spill, which ran 100M events out of memory; grouped aggregations spill.
WITH sessions AS (
    -- One row per (day, user, session); events without a session id form one row per user and day.
    SELECT
        event_date,
        user_id,
        session_id,
        count(*) FILTER (WHERE event_type = 'view')             AS count_views,
        count(*) FILTER (WHERE event_type = 'cart')             AS count_carts,
        count(*) FILTER (WHERE event_type = 'remove_from_cart') AS count_remove_from_cart,
        count(*) FILTER (WHERE event_type = 'purchase')         AS count_purchases,
        sum(price) FILTER (WHERE event_type = 'purchase')       AS revenue,
        count(*)                                                AS count_events
    FROM silver.events
    GROUP BY event_date, user_id, session_id
),
users AS (
    SELECT
        event_date,
        user_id,
        sum(count_views) AS count_views,
        sum(count_carts) AS count_carts,
        sum(count_remove_from_cart) AS count_remove_from_cart,
        sum(count_purchases) AS count_purchases,
        count(session_id) AS count_sessions,
        count(session_id) FILTER (WHERE count_purchases > 0) AS count_purchasing_sessions,
        sum(revenue) AS revenue,
        sum(count_events) AS count_events
    FROM sessions
    GROUP BY event_date, user_id
),
counts AS (
    SELECT
        event_date,
        CAST(sum(count_views) AS BIGINT)                        AS count_views,
        CAST(sum(count_carts) AS BIGINT)                        AS count_carts,
        CAST(sum(count_remove_from_cart) AS BIGINT)             AS count_remove_from_cart,
        CAST(sum(count_purchases) AS BIGINT)                    AS count_purchases,
        count(user_id)                                          AS count_users,
        CAST(sum(count_sessions) AS BIGINT)                     AS count_sessions,
        CAST(sum(count_purchasing_sessions) AS BIGINT)          AS count_purchasing_sessions,
        coalesce(sum(revenue), 0)                               AS revenue,
        CAST(sum(count_events) AS BIGINT)                       AS count_events
    FROM users
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
