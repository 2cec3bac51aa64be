"""The Profile view of the dashboard: `shoplake profile` for one table, as a page (`/profile/<table>`)."""

from __future__ import annotations

from typing import Any

from shoplake.lake import Lake
from shoplake.profile import ColumnProfile, TableProfile, profile_table
from shoplake.serve import charts
from shoplake.serve.pages import PageView, Section, chart, table


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


def _summary_row(column: ColumnProfile) -> dict[str, Any]:
    most = column.top[0] if column.top else None
    return {"column": column.name, "type": column.type, "nulls": f"{column.null_share:.1%}",
            "NaN": f"{column.nans:,}" if column.nans else "", "distinct": f"{column.distinct:,}",
            "min": _value(column.minimum), "median": _value(column.quantiles.get("p50")),
            "max": _value(column.maximum),
            "most frequent": f"{_value(most[0])} ({column.share(most[1]):.1%})" if most else ""}


def _column_sections(column: ColumnProfile) -> list[Section]:
    sections: list[Section] = []
    key = "".join(ch if ch.isalnum() else "-" for ch in column.name)
    if column.histogram:
        bins = [{"range": _value(low) if low == high else f"{_value(low)} – {_value(high)}", "rows": count}
                for low, high, count in column.histogram]
        sections.append(chart(f"profile-{key}-histogram", f"{column.name}: histogram", bins,
                              charts.bars(bins, "range", "rows")))
    if column.top:
        rows = [{"value": _value(value), "rows": f"{count:,}", "share": f"{column.share(count):.2%}"}
                for value, count in column.top]
        quantiles = ", ".join(f"{name} {_value(value)}" for name, value in column.quantiles.items())
        sections.append(table(f"profile-{key}-top", f"{column.name}: top {len(column.top)} values", rows,
                              note=f"quantiles: {quantiles}" if quantiles else ""))
    return sections


def profile_page(lake: Lake, name: str, column: str | None = None) -> PageView:
    """The profile of table `name` (one column's details when `column` is given, else every column's)."""
    found: TableProfile = profile_table(lake, name, columns=[column] if column else None)
    source = "from the cache" if found.cached else f"computed in {found.seconds:.2f} s"
    version = "not written yet" if found.version is None else f"version {found.version}"
    page = PageView("profile", f"Profile: {found.table}", f"{version}, {found.rows:,} rows; one scan, {source}; "
                    f"`shoplake profile {found.table}` prints the same")
    page.sections.append(table("profile-summary", "Columns", [_summary_row(c) for c in found.columns],
                               note="nulls and NaN are left out of distinct, min, max, quantiles and histograms; "
                                    "quantiles are values that occur (quantile_disc)"))
    for profiled in found.columns:
        page.sections += _column_sections(profiled)
    return page
