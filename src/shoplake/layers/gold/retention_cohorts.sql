-- gold.retention_cohorts: one row per (cohort_week, week_number). A user's cohort is the ISO week (Monday)
-- of their first event; week k is the week starting cohort_week + 7k days. One row per cohort and per week
-- from the cohort's week to the last week holding events (weeks with no event at all are not listed).
WITH data_end AS (SELECT max(event_date) AS last_date FROM silver.events),
activity AS (
    SELECT user_id, CAST(date_trunc('week', event_date) AS DATE) AS activity_week,
           max(CASE WHEN event_type = 'purchase' THEN 1 ELSE 0 END) AS has_purchase
    FROM silver.events
    GROUP BY user_id, CAST(date_trunc('week', event_date) AS DATE)
),
first_seen AS (SELECT user_id, min(activity_week) AS cohort_week FROM activity GROUP BY user_id),
cohorts AS (SELECT cohort_week, count(*) AS cohort_users FROM first_seen GROUP BY cohort_week),
weeks AS (SELECT DISTINCT activity_week FROM activity),
returned AS (
    SELECT f.cohort_week, a.activity_week,
           count(*)            AS active_users,
           sum(a.has_purchase) AS purchasing_users
    FROM activity AS a
    JOIN first_seen AS f ON f.user_id = a.user_id
    GROUP BY f.cohort_week, a.activity_week
)
SELECT c.cohort_week,
       CAST(date_diff('day', c.cohort_week, w.activity_week) / 7 AS INTEGER) AS week_number,
       w.activity_week,
       c.cohort_users,
       coalesce(r.active_users, 0)                                          AS active_users,
       coalesce(r.purchasing_users, 0)                                      AS purchasing_users,
       CAST(coalesce(r.active_users, 0) AS DOUBLE) / c.cohort_users         AS retention_rate,
       CAST(coalesce(r.purchasing_users, 0) AS DOUBLE) / c.cohort_users     AS purchase_rate,
       date_diff('day', w.activity_week, d.last_date) >= 6                  AS is_complete
FROM cohorts AS c
JOIN weeks AS w ON w.activity_week >= c.cohort_week
CROSS JOIN data_end AS d
LEFT JOIN returned AS r ON r.cohort_week = c.cohort_week AND r.activity_week = w.activity_week
