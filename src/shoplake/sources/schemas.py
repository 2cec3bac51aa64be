"""The three raw sources: their columns, accepted header variants and how each value is parsed.

Parsing is declared as SQL over the raw text of a field (`{raw}`), so that the same rules run on
either engine. A non-empty field whose parse returns NULL makes the row unparseable: the row goes to
`quarantine.<source>` with reason `invalid_<column>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoplake.errors import SourceFormatError


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: str  # declared SQL type in bronze
    parse: str  # SQL over the raw VARCHAR value `{raw}`


@dataclass(frozen=True)
class Source:
    name: str
    columns: tuple[SourceColumn, ...]
    # Each variant maps the header as found to canonical column names; missing columns become NULL.
    variants: tuple[dict[str, str], ...]
    description: str

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
    return SourceColumn(name, "BIGINT", "TRY_CAST({raw} AS BIGINT)")


def _double(name: str) -> SourceColumn:
    return SourceColumn(name, "DOUBLE", "TRY_CAST({raw} AS DOUBLE)")


def _timestamp(name: str, *formats: str) -> SourceColumn:
    listed = ", ".join(f"'{f}'" for f in formats)
    return SourceColumn(name, "TIMESTAMPTZ", f"CAST(TRY_STRPTIME({{raw}}, [{listed}]) AS TIMESTAMPTZ)")


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
)

SOURCES: dict[str, Source] = {s.name: s for s in (CLICKSTREAM, PRODUCTS, RETAIL)}


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise SourceFormatError(f"unknown source {name!r}: expected one of {', '.join(SOURCES)}") from None
