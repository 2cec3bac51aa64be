#!/usr/bin/env python3
"""Lean reference job in Polars: the work of `lean_duckdb.py` (clickstream CSV(.gz) -> Silver events ->
gold.daily_funnel and gold.product_performance), written with Polars' lazy API.

The same rules as shoplake, translated by hand: each field parsed as the clickstream source parses it (a
row with the wrong field count or a field that does not parse is left out), `silver.events`'s columns, its
quarantine checks as a filter, exact duplicates removed, and the two Gold tables' aggregates (the most
frequent category_code and brand per product, a tie going to the value that sorts first). Columns are cast
to the declared types of the table specs. Silver and Gold are written as Parquet files.

Lines are split at commas rather than read by Polars' CSV reader, because that reader cannot tell a row
that lost its last field from one whose last field is empty; so quoted fields are not supported (generated
and REES46 files have none).

    python bench/lean_polars.py bench/.cache/clickstream-1000000/clickstream.csv.gz [--out DIR]

Prints one JSON line: {"rows": Silver rows, "tables": {table: rows}, "seconds": ...}.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from shoplake.catalog.spec import TableSpec
from shoplake.layers.gold import DAILY_FUNNEL, PRODUCT_PERFORMANCE
from shoplake.layers.silver import EVENT_TYPES, EVENTS
from shoplake.sources.schemas import CLICKSTREAM, SANE_DAYS_AHEAD, SANE_EARLIEST

_TYPES: dict[str, pl.DataType] = {
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"), "DATE": pl.Date(), "INTEGER": pl.Int32(), "BIGINT": pl.Int64(),
    "DOUBLE": pl.Float64(), "VARCHAR": pl.String(), "BOOLEAN": pl.Boolean()}
# The formats listed in the source's TRY_STRPTIME of event_time, read from the declaration, not copied.
_TIME_FORMATS = tuple(re.findall(r"'([^']+)'", next(c.parse for c in CLICKSTREAM.columns if c.name == "event_time")))
_BIGINT = r"^ *[+-]?[0-9]+ *$"  # the source's allow-list for integers: digits only


def typed(frame: pl.LazyFrame, spec: TableSpec) -> pl.LazyFrame:
    """The declared columns of `spec`, in order, cast to their declared types."""
    return frame.select([pl.col(c.name).cast(_TYPES[c.type]) for c in spec.columns])


def _parsed(name: str, raw: pl.Expr) -> pl.Expr:
    """The value of one raw text field, parsed as shoplake parses that column; NULL when it does not parse."""
    kind = next(c.type for c in CLICKSTREAM.columns if c.name == name)
    if kind == "TIMESTAMPTZ":
        tries = [raw.str.strptime(pl.Datetime("us"), f, strict=False) for f in _TIME_FORMATS]
        return pl.coalesce(tries).dt.replace_time_zone("UTC")
    if kind == "BIGINT":
        return pl.when(raw.str.contains(_BIGINT)).then(raw.str.strip_chars(" ").cast(pl.Int64, strict=False))
    if kind == "DOUBLE":
        value = raw.str.strip_chars(" ").cast(pl.Float64, strict=False)
        return pl.when(value.is_finite()).then(value)  # NaN and inf would poison every sum
    return raw


def bronze(path: Path) -> pl.LazyFrame:
    """The file's rows that parse, typed, with the source's column names (rows that do not are left out)."""
    names = CLICKSTREAM.column_names
    # One column per line; \x1f (unit separator) never occurs in the data.
    lines = pl.scan_csv(path, has_header=False, skip_rows=1, separator="\x1f", quote_char=None,
                        schema={"line": pl.String})
    fields = pl.col("line").str.split_exact(",", len(names)).struct
    raw = lines.select(
        # A short line lacks its last field (NULL; an empty field is ""), a long one has an extra field.
        (fields.field(f"field_{len(names) - 1}").is_not_null()
         & fields.field(f"field_{len(names)}").is_null()).alias("_fields_ok"),
        *[fields.field(f"field_{i}").replace("", None).alias(f"r_{n}") for i, n in enumerate(names)],
    )
    latest = datetime.now(UTC).replace(microsecond=0) + timedelta(days=SANE_DAYS_AHEAD)
    earliest = datetime.fromisoformat(SANE_EARLIEST).replace(tzinfo=UTC)
    parsed = raw.with_columns([_parsed(n, pl.col(f"r_{n}")).alias(n) for n in names])
    # A non-empty field that does not parse refuses the row, as does a timestamp outside the sane range.
    refused = pl.any_horizontal([pl.col(f"r_{n}").is_not_null() & pl.col(n).is_null() for n in names])
    at = pl.col("event_time")
    out_of_range = at.is_not_null() & ((at < earliest) | (at > latest))
    return parsed.filter(pl.col("_fields_ok") & ~refused & ~out_of_range.fill_null(False)).select(names)


def silver(events: pl.LazyFrame) -> pl.LazyFrame:
    """`silver.events` from typed clickstream rows: its columns, its quarantine checks as a filter, deduplicated."""
    at, code = pl.col("event_time"), pl.col("category_code")
    level = [code.str.split(".").list.get(i, null_on_oob=True).replace("", None) for i in range(3)]
    shaped = events.select(
        at.alias("event_at"), at.dt.date().alias("event_date"), at.dt.hour().alias("event_hour"),
        at.dt.weekday().alias("day_of_week"),  # ISO: 1 = Monday ... 7 = Sunday, like isodow
        "event_type", "product_id", "category_id", "category_code",
        level[0].alias("category_l1"), level[1].alias("category_l2"), level[2].alias("category_l3"),
        "brand", "price", "user_id", pl.col("user_session").alias("session_id"),
    )
    # The quarantine checks of silver.events (not_null, accepted_values, negative_price), as a filter.
    good = (pl.col("event_at").is_not_null() & pl.col("event_type").is_in(EVENT_TYPES)
            & pl.col("product_id").is_not_null() & pl.col("user_id").is_not_null()
            & ~(pl.col("price") < 0).fill_null(False))
    return typed(shaped.filter(good), EVENTS).unique()


def _counts(kind: str) -> pl.Expr:
    return (pl.col("event_type") == kind).sum()


def _purchase_revenue() -> pl.Expr:
    return pl.col("price").filter(pl.col("event_type") == "purchase").sum()  # 0 when none, NULL prices ignored


def _rate(numerator: str, denominator: str) -> pl.Expr:
    return pl.when(pl.col(denominator) != 0).then(pl.col(numerator) / pl.col(denominator))


def daily_funnel(events: pl.LazyFrame) -> pl.LazyFrame:
    """gold.daily_funnel: one row per event_date."""
    has_session = pl.col("session_id").is_not_null()
    session = pl.struct("user_id", "session_id")
    counts = events.group_by("event_date").agg(
        count_views=_counts("view"), count_carts=_counts("cart"),
        count_remove_from_cart=_counts("remove_from_cart"), count_purchases=_counts("purchase"),
        count_users=pl.col("user_id").n_unique(),  # never NULL in Silver
        count_sessions=session.filter(has_session).n_unique(),
        count_purchasing_sessions=session.filter(has_session & (pl.col("event_type") == "purchase")).n_unique(),
        revenue=_purchase_revenue(),
        count_events=pl.len(),
    )
    return typed(counts.with_columns(
        view_to_cart_rate=_rate("count_carts", "count_views"),
        cart_to_purchase_rate=_rate("count_purchases", "count_carts"),
        view_to_purchase_rate=_rate("count_purchases", "count_views"),
        session_conversion_rate=_rate("count_purchasing_sessions", "count_sessions"),
    ), DAILY_FUNNEL)


def _top_value(events: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """The most frequent non-NULL `column` per product_id, a tie going to the value that sorts first."""
    counted = events.filter(pl.col(column).is_not_null()).group_by("product_id", column).agg(n=pl.len())
    return counted.group_by("product_id").agg(
        pl.col(column).sort_by(["n", column], descending=[True, False]).first())


def product_performance(events: pl.LazyFrame) -> pl.LazyFrame:
    """gold.product_performance: one row per product_id."""
    per_product = events.group_by("product_id").agg(
        count_views=_counts("view"), count_carts=_counts("cart"), count_purchases=_counts("purchase"),
        count_users=pl.col("user_id").n_unique(), revenue=_purchase_revenue(), count_events=pl.len(),
    )
    joined = (per_product.join(_top_value(events, "category_code"), on="product_id", how="left")
              .join(_top_value(events, "brand"), on="product_id", how="left"))
    return typed(joined.with_columns(view_to_purchase_rate=_rate("count_purchases", "count_views")),
                 PRODUCT_PERFORMANCE)


def run(path: Path, out_dir: Path) -> dict[str, int]:
    """Build Silver and the two Gold tables from `path` into `out_dir/<table>.parquet`; rows per table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    silver_file = out_dir / "silver_events.parquet"
    silver(bronze(path)).sink_parquet(silver_file)
    # Gold reads Silver back from its file, as it would from the lake; both in one streaming run.
    events = pl.scan_parquet(silver_file)
    gold = {DAILY_FUNNEL: daily_funnel(events), PRODUCT_PERFORMANCE: product_performance(events)}
    counts = {EVENTS.name: pl.scan_parquet(silver_file).select(pl.len()).collect().item()}
    for spec, frame in zip(gold, pl.collect_all(list(gold.values()), engine="streaming"), strict=True):
        frame.write_parquet(out_dir / f"{spec.name.split('.')[1]}.parquet")
        counts[spec.name] = frame.height
    return counts


if __name__ == "__main__":
    import _lean_cli  # a sibling file: bench/ is on sys.path when this runs as a script

    _lean_cli.main(run, __doc__)
