"""How the dashboard writes a value: counts with thousands separators, shares as %, money with its currency.

One place for the rules, used by the HTML tables, the KPI cards and the charts' axes and labels. A column's
kind comes from its name (the data contract's conventions: `count_*`, `*_rate`, `share_*`, money columns)
unless the page says otherwise.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from shoplake.sources.schemas import SOURCES

Kind = Literal["count", "money", "rate", "number", "label", "seconds"]

SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€"}
RETAIL_CURRENCY = SOURCES["retail"].currency
CLICK_CURRENCY = SOURCES["clickstream"].currency
# REES46 does not say which currency its prices are in: its money figures say so instead of guessing.
UNSTATED = "price units"

_MONEY_WORDS = ("revenue", "monetary", "value", "price", "mean_net")
_RATE_WORDS = ("rate", "share", "probability")
_BOUNDS = ("_low", "_high")


def kind_of(column: str) -> Kind:
    """The kind of a column by its name (ids and versions are labels: no separators).

    An interval bound (`*_low`, `*_high`) is of its estimate's kind when that is money, a count or seconds
    (`expected_value_12m_low` is money); otherwise a share (`conversion_low`, `bin_low` of a probability)."""
    name = column.lower()
    if name.endswith("_id") or name.endswith("version") or name in ("rfm", "step"):
        return "label"
    if name.endswith(_BOUNDS):
        estimate = kind_of(name.rsplit("_", 1)[0])
        return estimate if estimate in ("money", "count", "seconds") else "rate"
    if any(word in name for word in _RATE_WORDS):
        return "rate"
    if "seconds" in name:
        return "seconds"
    if any(word in name for word in _MONEY_WORDS):
        return "money"
    if name.startswith("count_") or name in ("units", "invoices", "attempts", "entrants", "drop_off", "rows",
                                             "customers", "users") or name.startswith("rows_"):
        return "count"
    return "number"


def currency_label(currency: str | None) -> str:
    return currency or UNSTATED


def money(value: float, currency: str | None, *, decimals: int = 0) -> str:
    """`£1,234` for a known currency (`-£52` when negative); `1,234 price units` when the source states none."""
    amount = f"{abs(value):,.{decimals}f}"
    sign = "−" if value < 0 else ""
    if currency in SYMBOLS:
        return f"{sign}{SYMBOLS[currency]}{amount}"
    return f"{sign}{amount} {currency or UNSTATED}"


def number(value: float) -> str:
    """Separators; two decimals at most; no trailing zeros of an exact integer; 0 as 0."""
    if value == 0:
        return "0"
    if float(value).is_integer():
        return f"{value:,.0f}"
    if abs(value) < 0.01:
        return f"{value:.2g}"
    return f"{value:,.2f}"


def shown(value: Any, kind: Kind = "number", currency: str | None = None) -> str:
    """A value as the dashboard writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):  # instants in UTC, like the data contract's *_at columns
        return (value.astimezone(UTC) if value.tzinfo else value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if not isinstance(value, int | float):
        return str(value)
    if kind == "label":
        return str(value)
    if kind == "rate":
        if abs(value) < 1e-9:  # a float's rounding (a Wilson bound of 0 successes), not a share
            return "0%"
        return f"{value:.2%}" if abs(value) >= 0.0001 else f"{value * 100:.2g}%"
    if kind == "money":
        return money(value, currency, decimals=0 if abs(value) >= 1000 else 2)
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "seconds":
        return duration(value)
    return number(value)


def duration(seconds: float) -> str:
    """Seconds as the largest sensible unit: 45 s, 12.5 min, 3.2 h, 1.5 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def plain(value: Any) -> Any:
    """A value for the page's JSON data (CSV download): dates as ISO text, decimals as floats."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value
