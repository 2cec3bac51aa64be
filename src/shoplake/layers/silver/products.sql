-- silver.products: one row per distinct product record ever ingested; is_current marks the latest
-- ingested record of each product_id (later batch, then later row in the file, wins).
WITH ranked AS (
    SELECT
        product_id, category_id, category_code, brand,
        min(_ingested_at) AS first_ingested_at,
        max(_ingested_at) AS last_ingested_at,
        max(struct_pack(t := _ingested_at, b := _batch_id, r := _source_row)) AS last_seen
    FROM bronze.products
    GROUP BY product_id, category_id, category_code, brand
)
SELECT
    product_id, category_id, category_code, brand,
    NULLIF(split_part(category_code, '.', 1), '') AS category_l1,
    first_ingested_at,
    last_ingested_at,
    last_seen = max(last_seen) OVER (PARTITION BY product_id) AS is_current
FROM ranked
