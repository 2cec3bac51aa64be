"""Bronze: one row per source row that could be read, typed, with lineage. Append-only, never deduplicated."""

from __future__ import annotations

from shoplake.catalog.spec import Column, TableSpec, col
from shoplake.sources.schemas import CLICKSTREAM, PRODUCTS, RETAIL, Source

LINEAGE_COLUMNS = (
    col("_source_file", "VARCHAR", "file or URL the row was read from"),
    col("_source_row", "BIGINT", "1-based position of the row among the file's readable data rows"),
    col("_source_lines", "BIGINT", "physical lines of the file the row spans: 1, or more when a quoted "
                                   "field holds line breaks"),
    col("_batch_id", "VARCHAR", "ingestion batch: one per distinct file content"),
    col("_ingested_at", "TIMESTAMPTZ", "when the batch was ingested (UTC)"),
)


def _bronze(source: Source) -> TableSpec:
    columns = tuple(Column(c.name, c.type) for c in source.columns) + LINEAGE_COLUMNS
    return TableSpec(
        name=f"bronze.{source.name}",
        description=(f"One row per {source.description} source row that could be read, typed per the "
                     f"source schema, with lineage. Append-only; never deduplicated."),
        grain=("_batch_id", "_source_row"),
        columns=columns,
        build="ingest",
        source=source.name,
    )


BRONZE_CLICKSTREAM = _bronze(CLICKSTREAM)
BRONZE_PRODUCTS = _bronze(PRODUCTS)
BRONZE_RETAIL = _bronze(RETAIL)

TABLES = (BRONZE_CLICKSTREAM, BRONZE_PRODUCTS, BRONZE_RETAIL)
