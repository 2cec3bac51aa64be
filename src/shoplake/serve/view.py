"""The parts a dashboard page is made of: filters and periods, the SQL reader, KPIs, sections and tables.

`Reader` runs each query with its filter values written in as literals (checked against the SQL API's
allow-list), so every chart, table and KPI keeps the exact SQL that gave its rows: the page shows it
("view SQL", runnable in `shoplake sql` and the SQL API) and offers the rows as CSV.

Periods: by default a date table shows its last complete calendar month (else its last complete week,
else all its dates), and a change is shown only against a previous period the data fully covers; the page
says plainly when there is no comparison and why.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

import sqlglot
from sqlglot import exp

from shoplake.engines.base import Capability
from shoplake.errors import ShoplakeError
from shoplake.lake import Lake
from shoplake.serve import charts, formats
from shoplake.serve.allowlist import check_allowed
from shoplake.serve.formats import Kind

# Dates the dashboard accepts: any shop's data lies between these, and periods (and the previous period of
# equal length) computed from them stay far from the calendar's ends.
FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(2199, 12, 31)
FILTER_NAMES = ("start", "end", "country", "category", "brand", "segment", "user", "product")
SEGMENT_KINDS = {"rfm": "retail customers (RFM segment)", "users": "clickstream users (K-means segment)"}


class FilterError(ShoplakeError):
    """A filter the dashboard cannot apply (a date that is not a date, a start after the end or the data)."""


class Reader:
    """One engine session; binds the catalog tables a query names, once each."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.engine = lake.engine(Capability.EMBEDDED_SQL)
        self._bound: set[str] = set()

    def close(self) -> None:
        self.engine.close()

    def run(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run `sql` with `params` written into it as literals; the result keeps the SQL that ran.

        The SQL passes the SQL API's allow-list, so what the page shows under "view SQL" runs unchanged in
        `shoplake sql` and through the API.
        """
        tree = sqlglot.parse_one(_bind(sql, params), dialect="duckdb")
        check_allowed(tree)
        text = tree.sql(dialect="duckdb", pretty=True)
        for table in tree.find_all(exp.Table):
            name = f"{table.db}.{table.name}".lower()
            if table.db and name not in self._bound:
                self.engine.bind(self.lake.catalog.get(name))
                self._bound.add(name)
        return Result(text, self.engine.table(text, []).to_pylist())

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        return self.run(sql, params).rows

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict:
        found = self.rows(sql, params)
        return found[0] if found else {}


def _bind(sql: str, params: Sequence[Any]) -> str:
    """`sql` with each `?` (in the order written) replaced by its value as an SQL literal."""
    values = list(params)
    marks = [t for t in sqlglot.tokenize(sql, dialect="duckdb") if t.token_type == sqlglot.TokenType.PLACEHOLDER]
    if len(marks) != len(values):
        raise ValueError(f"{len(marks)} placeholders but {len(values)} values for: {sql}")
    for mark, value in reversed(list(zip(marks, values, strict=True))):
        sql = sql[:mark.start] + literal(value).sql(dialect="duckdb") + sql[mark.end + 1:]
    return sql


def literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.build("DATE"))
    if isinstance(value, int | float):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))


@dataclass
class Result:
    sql: str
    rows: list[dict]


@dataclass(frozen=True)
class Filters:
    """The dashboard's global filters; an open date means the data's default period."""

    start: date | None = None
    end: date | None = None
    country: str | None = None
    category: str | None = None
    brand: str | None = None
    segment: str | None = None  # "rfm:<segment>" or "users:<segment>"
    user: int | None = None  # the user whose recommendations the Recommendations page shows
    product: int | None = None  # the product whose similar products it shows

    @property
    def chosen_dates(self) -> bool:
        return self.start is not None or self.end is not None

    def segment_of(self, kind: str) -> str | None:
        """The chosen segment name when it is a segment of `kind` (rfm or users)."""
        if self.segment and self.segment.startswith(f"{kind}:"):
            return self.segment.split(":", 1)[1]
        return None

    def query(self, **changes: Any) -> str:
        """The URL query string of these filters (with `changes`), empty values left out."""
        values = {name: getattr(self, name) for name in FILTER_NAMES} | changes
        pairs = [(k, v.isoformat() if isinstance(v, date) else v) for k, v in values.items() if v not in (None, "")]
        return "?" + urlencode(pairs) if pairs else ""

    def resolve(self, reader: Reader, table: str, column: str) -> Period | None:
        """The period to show for `table`: the chosen dates, or the default period of its data."""
        span = reader.one(f"SELECT min({column}) AS first, max({column}) AS last FROM {table}")
        if not span or span["last"] is None:
            return None
        first, last = span["first"], span["last"]
        if not self.chosen_dates:
            return default_period(first, last)
        start, end = self.start or first, self.end or last
        if start > end:  # an open end is the data's last date: the start lies after the data
            return Period(start, start, first, last, beyond=True)
        return Period(start, end, first, last)


def parse_filters(values: dict[str, str | None]) -> Filters:
    """Filters from query parameters (`YYYY-MM-DD` dates; empty = not chosen)."""
    clean = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in values.items() if k in FILTER_NAMES}
    try:
        dates = {k: date.fromisoformat(clean[k]) if clean.get(k) else None for k in ("start", "end")}
    except ValueError as exc:
        raise FilterError(f"dates must look like 2019-10-31: {exc}") from exc
    for chosen in dates.values():
        if chosen is not None and not FIRST_DATE <= chosen <= LAST_DATE:
            raise FilterError(f"dates must lie between {FIRST_DATE} and {LAST_DATE}, got {chosen}")
    if dates["start"] and dates["end"] and dates["start"] > dates["end"]:
        raise FilterError(f"the start {dates['start']} is after the end {dates['end']}")
    segment = clean.get("segment")
    if segment and segment.split(":", 1)[0] not in SEGMENT_KINDS:
        raise FilterError(f"segment must look like rfm:Champions or users:<name>, got {segment!r}")
    ids: dict[str, int | None] = {}
    for name in ("user", "product"):
        text = clean.get(name)
        if text is not None and not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise FilterError(f"{name} must be a {name} id (digits only), got {text!r}")
        ids[name] = int(text) if text is not None else None
    return Filters(dates["start"], dates["end"], clean.get("country"), clean.get("category"), clean.get("brand"),
                   segment, ids["user"], ids["product"])


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def default_period(first: date, last: date) -> Period:
    """The last complete calendar month of data [first, last]; else the last complete Monday-Sunday week;
    else all of it."""
    month_end = last if last == _month_end(last) else last.replace(day=1) - timedelta(days=1)
    month_start = month_end.replace(day=1)
    if month_start >= first:
        return Period(month_start, month_end, first, last, kind="month")
    sunday = last - timedelta(days=last.isoweekday() % 7)
    if sunday - timedelta(days=6) >= first:
        return Period(sunday - timedelta(days=6), sunday, first, last, kind="week")
    return Period(first, last, first, last, kind="all")


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    data_from: date | None = None  # the first date with data
    data_to: date | None = None  # the last date with data
    kind: str = "chosen"  # month, week or all (defaults), chosen
    beyond: bool = False  # the chosen start lies after the data

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Period:
        """The calendar month or week before a default period; the days of equal length before a chosen one."""
        if self.kind == "month":
            end = self.start - timedelta(days=1)
            return replace(self, start=end.replace(day=1), end=end)
        return replace(self, start=self.start - timedelta(self.days), end=self.start - timedelta(1))

    @property
    def covered(self) -> bool:
        """The data holds every date of the period (its first date is on or before the start, and so on)."""
        return bool(self.data_from and self.data_to and self.data_from <= self.start and self.end <= self.data_to)

    def comparison(self) -> tuple[Period | None, str]:
        """The previous period to compare with, or None, and a sentence saying which or why not."""
        before = self.previous()
        if not self.covered:
            return None, (f"no comparison: the data covers only {self.data_from} to {self.data_to}, "
                          f"not all of this period")
        if not before.covered:
            return None, (f"no comparison: the previous period ({before.text()}) is not fully covered by the "
                          f"data, which starts on {self.data_from}")
        return before, f"change vs {before.text()}"

    def text(self) -> str:
        if self.kind == "month":
            return self.start.strftime("%B %Y")
        return f"{self.start.isoformat()} to {self.end.isoformat()}"

    def nothing_in_range(self) -> str:
        """What an empty chart of this period says: the table has data, only not in the chosen dates."""
        covers = f" (the data covers {self.data_from.isoformat()} to {self.data_to.isoformat()})" \
            if self.data_from and self.data_to else ""
        if self.beyond:
            return f"no rows on or after {self.start.isoformat()}{covers}"
        return f"no rows from {self.start.isoformat()} to {self.end.isoformat()}{covers}"

    def __str__(self) -> str:
        why = {"month": " (the last complete month of the data)", "week": " (the last complete week of the data)",
               "all": " (all the data: less than a complete week)"}.get(self.kind, "")
        days = f" ({self.days} day{'s' if self.days > 1 else ''})" if self.kind != "month" else ""
        return f"{self.text()}{days}{why}"


@dataclass
class Kpi:
    key: str
    label: str
    value: float | None
    previous: float | None = None
    kind: Kind = "count"
    currency: str | None = None
    sql: str = ""
    better: int = 1  # +1: more is good; -1: more is bad (returns); 0: neither

    @property
    def change(self) -> float | None:
        """Rates: the difference in percentage points; others: the relative change of the magnitude."""
        if self.value is None or self.previous is None:
            return None
        if self.kind == "rate":
            return (self.value - self.previous) * 100
        if not self.previous:
            return None
        return (abs(self.value) - abs(self.previous)) / abs(self.previous)

    @property
    def change_text(self) -> str:
        change = self.change
        if change is None:
            return ""
        before = self.shown(self.previous)
        if self.kind == "rate":
            return f"{change:+.2f} pp vs {before}"
        if self.value is not None and self.value < 0:  # returns: the change of their size
            return f"{abs(change) * 100:.1f}% {'larger' if change > 0 else 'smaller'} vs {before}"
        return f"{change * 100:+.1f}% vs {before}"

    @property
    def tone(self) -> str:
        """good, bad or empty: the colour of the change (a returns increase is bad, not good)."""
        change = self.change
        if not change or not self.better:
            return ""
        return "good" if change * self.better > 0 else "bad"

    def shown(self, value: float | None = None) -> str:
        value = self.value if value is None else value
        return "-" if value is None else formats.shown(value, self.kind, self.currency)


@dataclass
class Cell:
    text: str
    href: str | None = None
    numeric: bool = False


@dataclass
class Grid:
    """A table shown as HTML."""

    columns: list[str]
    rows: list[list[Cell]]
    row_classes: list[str] = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    figure: str | None = None
    grid: Grid | None = None
    note: str = ""
    wide: bool = False  # a chart across the whole page (tables always are)
    empty_text: str = ""  # shown when there is nothing to draw; the lake-wide "no data yet" otherwise
    sql: str = ""  # the query whose rows the section shows ("" when not read by SQL, e.g. the catalog)
    columns: list[str] = field(default_factory=list)  # the data behind it, for the CSV download
    data: list[list[Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.figure is None and (self.grid is None or not self.grid.rows)


@dataclass
class KpiGroup:
    title: str
    period: str
    kpis: list[Kpi]
    comparison: str = ""


@dataclass
class PageView:
    key: str
    title: str
    scope: str
    kpi_groups: list[KpiGroup] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    banner: str = ""  # a line above the page (the freshness banner)
    banner_tone: str = ""  # ok or bad
    filters_used: tuple[str, ...] = ()  # which global filters this page applies
    periods: list[Period] = field(default_factory=list)
    options: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def grid(rows: list[dict], columns: Sequence[str] | None = None, *, kinds: dict[str, Kind] | None = None,
         currency: str | None = None, links: dict[str, Callable[[dict], str | None]] | None = None,
         row_class: Callable[[dict], str] | None = None) -> Grid:
    """Rows as an HTML table: each column written by its kind (`formats.kind_of` unless given)."""
    names = list(columns or (rows[0].keys() if rows else []))
    kinds = {c: (kinds or {}).get(c) or formats.kind_of(c) for c in names}
    links = links or {}
    out = []
    for row in rows:
        out.append([Cell(formats.shown(row[c], kinds[c], currency), links[c](row) if c in links else None,
                         isinstance(row[c], int | float) and not isinstance(row[c], bool) and kinds[c] != "label")
                    for c in names])
    return Grid(names, out, [row_class(r) for r in rows] if row_class else [])


def _data(section: Section, result: Result | list[dict] | None) -> Section:
    """The section's CSV data: a query's rows with its SQL, or rows made without SQL (a list)."""
    if isinstance(result, list):
        section.columns = list(result[0].keys()) if result else []
        section.data = [[formats.plain(v) for v in row.values()] for row in result]
    elif result is not None:
        section.sql = result.sql
        section.columns = list(result.rows[0].keys()) if result.rows else []
        section.data = [[formats.plain(v) for v in row.values()] for row in result.rows]
    return section


def chart(section_id: str, title: str, result: Result | list[dict] | None, figure, note: str = "", *,
          wide: bool = False) -> Section:
    return _data(Section(section_id, title, figure=charts.to_json(figure), note=note, wide=wide), result)


def table(section_id: str, title: str, result: Result | list[dict] | None, columns: Sequence[str] | None = None,
          note: str = "", **options: Any) -> Section:
    rows = result.rows if isinstance(result, Result) else result or []
    return _data(Section(section_id, title, grid=grid(rows, columns, **options), note=note), result)


def plain_table(section_id: str, title: str, rows: list[dict], note: str = "", **options: Any) -> Section:
    """A table not read by SQL (the catalog, the model registry): CSV, no SQL."""
    return table(section_id, title, rows, note=note, **options)


def in_period(sections: Sequence[Section], period: Period | None) -> list[Section]:
    """Date-filtered sections: when the table has data but none in the period, they say so."""
    if period is not None:
        for section in sections:
            section.empty_text = period.nothing_in_range()
    return list(sections)


def where_clause(conditions: Sequence[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """`WHERE a AND b` of the conditions whose value is chosen (each condition has one or two `?`)."""
    chosen = [(sql, value) for sql, value in conditions if value is not None]
    params: list[Any] = []
    for _, value in chosen:
        params += list(value) if isinstance(value, tuple) else [value]
    return ("WHERE " + " AND ".join(sql for sql, _ in chosen) if chosen else ""), params


def date_condition(column: str, period: Period | None) -> tuple[str, Any]:
    return f"{column} BETWEEN ? AND ?", (period.start, period.end) if period else None


def kpi_group(reader: Reader, title: str, prefix: str, table: str, column: str, period: Period | None,
               measures: Sequence[tuple[str, str, str, Kind, int]], *, currency: str | None,
               extra: Sequence[tuple[str, Any]] = ()) -> KpiGroup | None:
    """One KPI per measure over the period (and the previous period, when the data covers it fully)."""
    if period is None:
        return None
    before, comparison = period.comparison()
    kpis = []
    for key, label, sql, kind, better in measures:
        where, params = where_clause([date_condition(column, period), *extra])
        now = reader.run(f"SELECT {sql} AS {key} FROM {table} {where}", params)
        previous = None
        if before is not None:
            where, params = where_clause([date_condition(column, before), *extra])
            previous = reader.one(f"SELECT {sql} AS {key} FROM {table} {where}", params).get(key)
        value = now.rows[0][key] if now.rows else None
        kpis.append(Kpi(f"{prefix}-{key}", label, value, previous, kind, currency, now.sql, better))
    if period.beyond:
        comparison = period.nothing_in_range()
    return KpiGroup(title, str(period), kpis, comparison)
