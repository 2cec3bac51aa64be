-- silver.events: one row per distinct clickstream event (the runner removes exact duplicates).
-- Rows from the category-less source variant take category and brand from the current product catalog.
SELECT
    e.event_time                                   AS event_at,
    CAST(e.event_time AS DATE)                     AS event_date,
    CAST(hour(e.event_time) AS INTEGER)            AS event_hour,
    CAST(isodow(e.event_time) AS INTEGER)          AS day_of_week,
    e.event_type,
    e.product_id,
    CASE WHEN e.no_catalog THEN p.category_id ELSE e.category_id END     AS category_id,
    CASE WHEN e.no_catalog THEN p.category_code ELSE e.category_code END AS category_code,
    NULLIF(split_part(CASE WHEN e.no_catalog THEN p.category_code ELSE e.category_code END, '.', 1), '')
                                                   AS category_l1,
    NULLIF(split_part(CASE WHEN e.no_catalog THEN p.category_code ELSE e.category_code END, '.', 2), '')
                                                   AS category_l2,
    NULLIF(split_part(CASE WHEN e.no_catalog THEN p.category_code ELSE e.category_code END, '.', 3), '')
                                                   AS category_l3,
    CASE WHEN e.no_catalog THEN p.brand ELSE e.brand END                 AS brand,
    e.price,
    e.user_id,
    e.user_session                                 AS session_id,
    e._batch_id,
    e._source_row
FROM (
    SELECT *, (category_id IS NULL AND category_code IS NULL AND brand IS NULL) AS no_catalog
    FROM bronze.clickstream
) AS e
-- A plain equality join (at most one current record per product), so engines can hash-join it;
-- the CASEs above decide which rows take the catalog's values.
LEFT JOIN (SELECT product_id, category_id, category_code, brand FROM silver.products WHERE is_current) AS p
    ON p.product_id = e.product_id
