"""Quarantine and operations tables: written by the runner, declared here like every other table."""

from __future__ import annotations

from shoplake.catalog.spec import TableSpec, col
from shoplake.sources.schemas import SOURCES, Source


def _quarantine(source: Source) -> TableSpec:
    raw_columns = tuple(col(c.name, "VARCHAR", "the raw value as found") for c in source.columns)
    return TableSpec(
        name=f"quarantine.{source.name}",
        description=(f"One row per {source.name} source row that could not be accepted, with the raw row "
                     f"and a machine-readable reason. Rows stopped at ingestion (unparseable) have stage "
                     f"'ingest'; rows refused by a Silver check have stage 'silver'."),
        grain=("_batch_id", "_source_row", "_source_line", "reason"),
        columns=raw_columns + (
            col("_raw_line", "VARCHAR", "the raw CSV line as text, when the row could not be split into "
                                        "columns and its bytes decode in the file's encoding"),
            col("_raw_bytes", "BLOB", "the refused line's bytes exactly as in the file (whole, any length "
                                      "or encoding), when the row could not be split into columns"),
            col("reason", "VARCHAR", "why the row was refused, e.g. invalid_price, wrong_column_count"),
            col("_stage", "VARCHAR", "ingest or silver"),
            col("_source_file", "VARCHAR"),
            col("_source_line", "BIGINT", "physical line number in the file (the header is line 1)"),
            col("_source_lines", "BIGINT", "physical lines the row spans (1 unless a quoted field holds "
                                           "line breaks)"),
            col("_source_row", "BIGINT", "position among readable rows (matches bronze), when known"),
            col("_batch_id", "VARCHAR"),
            col("_ingested_at", "TIMESTAMPTZ"),
            col("_quarantined_at", "TIMESTAMPTZ"),
        ),
        build="external",
        source=source.name,
    )


QUARANTINE_TABLES = tuple(_quarantine(s) for s in SOURCES.values())

LEDGER = TableSpec(
    name="ops.ledger",
    description=("One row per run and table write: rows in, rows out and rows diverted (by reason), so that "
                 "rows_in = rows_out + rows_diverted. For aggregates, rows_out counts input rows folded "
                 "into the table and rows_written the rows it holds."),
    grain=("write_key",),
    columns=(
        col("run_id", "VARCHAR"),
        col("recorded_at", "TIMESTAMPTZ"),
        col("table_name", "VARCHAR"),
        col("table_version", "BIGINT"),
        col("write_key", "VARCHAR", "identifies the write; a retried write keeps its key"),
        col("inputs", "VARCHAR", "JSON: input tables and versions or batches"),
        col("rows_in", "BIGINT"),
        col("rows_out", "BIGINT"),
        col("rows_diverted", "BIGINT"),
        col("diverted", "VARCHAR", "JSON object: reason -> rows"),
        col("rows_written", "BIGINT"),
        col("is_balanced", "BOOLEAN", "rows_in = rows_out + rows_diverted"),
    ),
    build="external",
)

DATA_QUALITY = TableSpec(
    name="ops.data_quality",
    description="One row per run, table and rule: rows checked, rows failed and the action taken.",
    grain=("run_id", "table_name", "rule"),
    columns=(
        col("run_id", "VARCHAR"),
        col("checked_at", "TIMESTAMPTZ"),
        col("table_name", "VARCHAR"),
        col("rule", "VARCHAR"),
        col("rule_sql", "VARCHAR"),
        col("action", "VARCHAR", "warn, quarantine or fail"),
        col("rows_checked", "BIGINT"),
        col("rows_failed", "BIGINT"),
        col("passed", "BOOLEAN"),
    ),
    build="external",
)

JOB_RUNS = TableSpec(
    name="ops.job_runs",
    description=("One row per job run, task and attempt: status, start, end, rows written and error. "
                 "A task skipped because an upstream task failed has one row with attempt 0."),
    grain=("run_id", "task", "attempt"),
    columns=(
        col("run_id", "VARCHAR"),
        col("job", "VARCHAR"),
        col("task", "VARCHAR"),
        col("attempt", "BIGINT", "1, 2, ... per task within the run (a resumed run continues the count)"),
        col("status", "VARCHAR", "succeeded, failed, retrying (failed, another attempt follows) or skipped"),
        col("started_at", "TIMESTAMPTZ"),
        col("ended_at", "TIMESTAMPTZ"),
        col("rows_written", "BIGINT"),
        col("error", "VARCHAR"),
        col("trigger", "VARCHAR", "manual, resume, watch or schedule"),
        col("detail", "VARCHAR", "what the attempt did, e.g. files ingested and skipped, tables built"),
        col("cpu_seconds", "DOUBLE", "processor time of the attempt (user + system, its threads and the "
            "processes it waited for); NULL when it did not report it (killed, or a lake from before)"),
    ),
    build="external",
)

QUERY_LOG = TableSpec(
    name="ops.query_log",
    description=("One row per query sent to the SQL API of `shoplake serve`: who sent it (token name), when, "
                 "the query, rows returned, duration and outcome. Written in small batches by the server."),
    grain=("query_id",),
    columns=(
        col("query_id", "VARCHAR", "unique id of the request, also returned in the API response"),
        col("token_name", "VARCHAR", "name of the bearer token used (NULL when none or an unknown one)"),
        col("role", "VARCHAR", "analyst or engineer (NULL when the token was refused)"),
        col("started_at", "TIMESTAMPTZ"),
        col("query", "VARCHAR", "the SQL text as sent (unauthenticated requests: its first KiB and its length)"),
        col("rows", "BIGINT", "rows returned (after the cap); 0 when refused or failed"),
        col("truncated", "BOOLEAN", "TRUE when the row or byte cap cut the result"),
        col("duration_ms", "DOUBLE"),
        col("status", "VARCHAR", "the status sent: ok, refused (400), unauthorized (401), forbidden (403), timeout "
                                 "(408), too_large (413), invalid (422), rate_limited (429), error (500), busy or "
                                 "unavailable (503)"),
        col("error", "VARCHAR", "the message returned to the client when status is not ok"),
    ),
    build="external",
)

BATCH_EXCLUSIONS = TableSpec(
    name="ops.batch_exclusions",
    description=("One row per operator decision on a bronze batch: `exclude` keeps builds from consuming it, "
                 "`include` reverses that; the latest decision per batch is in force (`shoplake batches`)."),
    grain=("batch_id", "decided_at"),
    columns=(
        col("batch_id", "VARCHAR"),
        col("source", "VARCHAR", "clickstream, products or retail"),
        col("action", "VARCHAR", "exclude or include"),
        col("reason", "VARCHAR", "why, as the operator gave it"),
        col("decided_at", "TIMESTAMPTZ"),
        col("decided_by", "VARCHAR", "the operating-system user who ran the command"),
    ),
    build="external",
)

TABLES = QUARANTINE_TABLES + (LEDGER, DATA_QUALITY, JOB_RUNS, QUERY_LOG, BATCH_EXCLUSIONS)
