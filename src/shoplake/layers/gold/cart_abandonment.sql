-- gold.cart_abandonment: one row per event_date with a cart event. A cart event is abandoned when the same
-- user does not buy the same product at or after the cart's time and within 7 days (604800 s) of it.
-- abandonment_low / _high: the Wilson score 95 % interval (z = 1.959963984540054, z² = 3.8414588206941254;
-- shoplake.catalog.funnels.wilson_sql writes the same formula). A cart is a distinct (user_id, session_id, product_id, event_at, price) cart event.
WITH data_end AS (SELECT max(event_at) AS end_at FROM silver.events),
carts AS (
    SELECT DISTINCT user_id, session_id, product_id, event_at, event_date, price
    FROM silver.events WHERE event_type = 'cart'
),
purchases AS (SELECT user_id, product_id, event_at FROM silver.events WHERE event_type = 'purchase'),
judged AS (
    SELECT c.user_id, c.session_id, c.product_id, c.event_at, c.event_date, c.price,
           count(p.event_at) = 0 AS is_abandoned
    FROM carts AS c
    LEFT JOIN purchases AS p
      ON p.user_id = c.user_id AND p.product_id = c.product_id AND p.event_at >= c.event_at
     AND epoch(p.event_at) <= epoch(c.event_at) + 604800
    GROUP BY c.user_id, c.session_id, c.product_id, c.event_at, c.event_date, c.price
),
daily AS (
    SELECT event_date,
           count(*)                                                        AS count_carts,
           count(*) FILTER (WHERE is_abandoned)                            AS count_abandoned_carts,
           coalesce(sum(price) FILTER (WHERE is_abandoned), 0)             AS abandoned_value,
           count(DISTINCT user_id)                                         AS count_carting_users,
           count(DISTINCT CASE WHEN is_abandoned THEN user_id END)         AS count_abandoning_users,
           max(event_at)                                                   AS last_cart_at
    FROM judged
    GROUP BY event_date
)
SELECT d.event_date, d.count_carts, d.count_abandoned_carts,
       CAST(d.count_abandoned_carts AS DOUBLE) / d.count_carts AS abandonment_rate,
       CASE WHEN d.count_carts > 0 THEN greatest(0.0, (CAST(d.count_abandoned_carts AS DOUBLE) + 3.8414588206941254 / 2) / (CAST(d.count_carts AS DOUBLE) + 3.8414588206941254)
           - 1.959963984540054 / (CAST(d.count_carts AS DOUBLE) + 3.8414588206941254) * sqrt(CAST(d.count_abandoned_carts AS DOUBLE) * (CAST(d.count_carts AS DOUBLE) - CAST(d.count_abandoned_carts AS DOUBLE)) / CAST(d.count_carts AS DOUBLE) + 3.8414588206941254 / 4)) END AS abandonment_low,
       CASE WHEN d.count_carts > 0 THEN least(1.0, (CAST(d.count_abandoned_carts AS DOUBLE) + 3.8414588206941254 / 2) / (CAST(d.count_carts AS DOUBLE) + 3.8414588206941254)
           + 1.959963984540054 / (CAST(d.count_carts AS DOUBLE) + 3.8414588206941254) * sqrt(CAST(d.count_abandoned_carts AS DOUBLE) * (CAST(d.count_carts AS DOUBLE) - CAST(d.count_abandoned_carts AS DOUBLE)) / CAST(d.count_carts AS DOUBLE) + 3.8414588206941254 / 4)) END AS abandonment_high,
       d.abandoned_value, d.count_carting_users, d.count_abandoning_users,
       epoch(d.last_cart_at) + 604800 <= epoch(e.end_at) AS is_window_complete
FROM daily AS d
CROSS JOIN data_end AS e
