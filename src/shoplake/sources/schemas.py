"""The three raw sources: their columns, accepted header variants and how each value is parsed.

Parsing is declared as SQL over the raw text of a field (`{raw}`), so that the same rules run on
either engine. A non-empty field whose parse returns NULL makes the row unparseable: the row goes to
`quarantine.<source>` with reason `invalid_<column>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shoplake.errors import SourceFormatError


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: str  # declared SQL type in bronze
    parse: str  # SQL over the raw VARCHAR value `{raw}`
    # Timestamps: the sane range; a parsed value outside [earliest, now + days_ahead] is refused.
    earliest: str | None = None
    days_ahead: int | None = None


def judge_sql(columns: Sequence[SourceColumn], *, now: datetime | None = None,
              ) -> tuple[list[str], list[str]]:
    """DuckDB SQL that types each raw field (`"r_<name>"`) and the `CASE` branches naming why a row is refused.

    Returns (typed select items `... AS "<name>"`, `WHEN ... THEN '<reason>'` branches): a non-empty field
    that does not parse is `invalid_<column>`, a timestamp outside the column's range `out_of_range_<column>`.
    Both engines run these (Spark through the sqlglot translation).
    """
    now = now or datetime.now(UTC)
    typed, reasons = [], []
    for column in columns:
        raw, value = f'"r_{column.name}"', f'"{column.name}"'
        typed.append(f"CAST({column.parse.format(raw=raw)} AS {column.type}) AS {value}")
        reasons.append(f"WHEN {raw} IS NOT NULL AND {value} IS NULL THEN 'invalid_{column.name}'")
        if column.earliest is not None:
            latest = (now + timedelta(days=column.days_ahead or 0)).strftime("%Y-%m-%d %H:%M:%S")
            reasons.append(f"WHEN {value} < CAST('{column.earliest} 00:00:00+00' AS TIMESTAMPTZ) "
                           f"OR {value} > CAST('{latest}+00' AS TIMESTAMPTZ) THEN 'out_of_range_{column.name}'")
    return typed, reasons


@dataclass(frozen=True)
class Source:
    name: str
    columns: tuple[SourceColumn, ...]
    # Each variant maps the header as found to canonical column names; missing columns become NULL.
    variants: tuple[dict[str, str], ...]
    description: str
    # The currency of its money columns (ISO 4217), when the source documents one.
    currency: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def match_header(self, header: list[str], *, file: str) -> dict[str, str]:
        """The variant whose header equals `header` (names only, order free), or a one-line error."""
        found = [h.strip() for h in header]
        for variant in self.variants:
            if sorted(found) == sorted(variant):
                return variant
        expected = " or ".join(",".join(v) for v in self.variants)
        raise SourceFormatError(f"{file}: header {','.join(found)!r} is not a {self.name} header; "
                                f"expected {expected}")


def _text(name: str) -> SourceColumn:
    return SourceColumn(name, "VARCHAR", "{raw}")


def _bigint(name: str) -> SourceColumn:
    # Digits only (an allow-list): a cast alone would round `1.5` to 2 and `123.5` to 124 without a word,
    # and read `1e3`, `1_000` and `0x10` as numbers. Most values are already the cast's own spelling, a
    # cheap test; the pattern (anchored, so that Spark's RLIKE matches the same) runs only on the others.
    return SourceColumn(name, "BIGINT",
                        "CASE WHEN CAST(TRY_CAST({raw} AS BIGINT) AS VARCHAR) = {raw} "
                        "OR regexp_matches({raw}, '^ *[+-]?[0-9]+ *$') THEN TRY_CAST({raw} AS BIGINT) END")


def _double(name: str) -> SourceColumn:
    # Finite values only: NaN, inf and overflowing literals (1e309) would poison every sum downstream.
    # `v - v = 0` holds exactly for finite v on both engines (NaN - NaN and inf - inf are NaN).
    return SourceColumn(name, "DOUBLE",
                        "CASE WHEN TRY_CAST({raw} AS DOUBLE) - TRY_CAST({raw} AS DOUBLE) = 0 "
                        "THEN TRY_CAST({raw} AS DOUBLE) END")


# Shop data before 2000 or more than a day in the future is a broken clock or a mistyped year.
SANE_EARLIEST = "2000-01-01"
SANE_DAYS_AHEAD = 1


def _timestamp(name: str, *formats: str) -> SourceColumn:
    listed = ", ".join(f"'{f}'" for f in formats)
    return SourceColumn(name, "TIMESTAMPTZ", f"CAST(TRY_STRPTIME({{raw}}, [{listed}]) AS TIMESTAMPTZ)",
                        earliest=SANE_EARLIEST, days_ahead=SANE_DAYS_AHEAD)


# Accept a float-formatted integer (`17850.0`, as in the UCI file) but not `17850.5`.
_INTEGRAL_FROM_FLOAT = ("CASE WHEN TRY_CAST({raw} AS DOUBLE) = FLOOR(TRY_CAST({raw} AS DOUBLE)) "
                        "AND abs(TRY_CAST({raw} AS DOUBLE)) < 1e15 "
                        "THEN CAST(TRY_CAST({raw} AS DOUBLE) AS BIGINT) END")

CLICKSTREAM = Source(
    name="clickstream",
    columns=(
        _timestamp("event_time", "%Y-%m-%d %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"),
        _text("event_type"),
        _bigint("product_id"),
        _bigint("category_id"),
        _text("category_code"),
        _text("brand"),
        _double("price"),
        _bigint("user_id"),
        _text("user_session"),
    ),
    variants=(
        {c: c for c in ("event_time", "event_type", "product_id", "category_id", "category_code", "brand",
                        "price", "user_id", "user_session")},
        # The cosmetics variant: categories and brands come from the products source.
        {c: c for c in ("event_time", "event_type", "product_id", "price", "user_id", "user_session")},
    ),
    description="REES46 clickstream events",
    currency=None,  # REES46 does not state the currency of `price`
)

PRODUCTS = Source(
    name="products",
    columns=(_bigint("product_id"), _bigint("category_id"), _text("category_code"), _text("brand")),
    variants=({c: c for c in ("product_id", "category_id", "category_code", "brand")},),
    description="product catalog (the latest ingested row of a product wins)",
)

RETAIL = Source(
    name="retail",
    columns=(
        _text("InvoiceNo"),
        _text("StockCode"),
        _text("Description"),
        _bigint("Quantity"),
        _timestamp("InvoiceDate", "%Y-%m-%d %H:%M:%S", "%m/%d/%Y %H:%M", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M:%S"),
        _double("UnitPrice"),
        SourceColumn("CustomerID", "BIGINT", _INTEGRAL_FROM_FLOAT),
        _text("Country"),
    ),
    variants=(
        {c: c for c in ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                        "CustomerID", "Country")},
        # Online Retail II names the same columns differently.
        {"Invoice": "InvoiceNo", "StockCode": "StockCode", "Description": "Description", "Quantity": "Quantity",
         "InvoiceDate": "InvoiceDate", "Price": "UnitPrice", "Customer ID": "CustomerID", "Country": "Country"},
    ),
    description="UCI Online Retail invoice lines",
    currency="GBP",  # UCI's description of the data set: UnitPrice is the price per unit in sterling
)

# The source registry: every other list of source names derives from it.
SOURCES: dict[str, Source] = {s.name: s for s in (CLICKSTREAM, PRODUCTS, RETAIL)}


def sources_text(conjunction: str = "or") -> str:
    """`clickstream, products or retail`: the source names for help texts."""
    names = list(SOURCES)
    return f"{', '.join(names[:-1])} {conjunction} {names[-1]}"


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceFormatError(f"unknown source {name!r}: expected one of {', '.join(SOURCES)}") from None
