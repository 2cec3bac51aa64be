"""The dashboard pages: what each shows, read from Gold, ML and ops tables through the catalog.

Each page is built on its own engine session (`Reader`), which binds every catalog table a query
names as the files of one Delta snapshot, so a page is consistent while jobs write. Pages whose
tables have a date (funnel, sales) follow the date range; the others show the latest state and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlglot
from sqlglot import exp

from shoplake.engines.base import Capability
from shoplake.lake import Lake
from shoplake.serve import charts

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "no data yet: run `shoplake run daily`"
DEFAULT_DAYS = 30


class Reader:
    """One engine session; binds the catalog tables a query names, once each."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.engine = lake.engine(Capability.EMBEDDED_SQL)
        self._bound: set[str] = set()

    def close(self) -> None:
        self.engine.close()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        for table in sqlglot.parse_one(sql, dialect="duckdb").find_all(exp.Table):
            name = f"{table.db}.{table.name}".lower()
            if table.db and name not in self._bound:
                self.engine.bind(self.lake.catalog.get(name))
                self._bound.add(name)
        return self.engine.table(sql, list(params)).to_pylist()

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict:
        found = self.rows(sql, params)
        return found[0] if found else {}


@dataclass(frozen=True)
class DateRange:
    """The dashboard's date filter; an open end means the data's own first or last date."""

    start: date | None = None
    end: date | None = None

    def resolve(self, reader: Reader, table: str, column: str) -> Period | None:
        """The period to show for `table`: the chosen range, or the last 30 days of its data."""
        span = reader.one(f"SELECT min({column}) AS first, max({column}) AS last FROM {table}")
        if not span or span["last"] is None:
            return None
        end = self.end or span["last"]
        start = self.start or (span["first"] if self.end else max(span["first"], end - timedelta(DEFAULT_DAYS - 1)))
        if start > end:
            start, end = end, start
        return Period(start, end, span["first"], span["last"])


@dataclass(frozen=True)
class Period:
    start: date
    end: date
    data_from: date | None = None  # the first date with data, to flag a partly empty previous period
    data_to: date | None = None  # the last date with data

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Period:
        """The period of equal length just before this one."""
        return Period(self.start - timedelta(self.days), self.start - timedelta(1), self.data_from, self.data_to)

    def nothing_in_range(self) -> str:
        """What an empty chart of this period says: the table has data, only not in the chosen dates."""
        covers = f" (the data covers {self.data_from.isoformat()} to {self.data_to.isoformat()})" \
            if self.data_from and self.data_to else ""
        return f"no rows from {self.start.isoformat()} to {self.end.isoformat()}{covers}"

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()} ({self.days} days)"


@dataclass
class Kpi:
    key: str
    label: str
    value: float | None
    previous: float | None
    kind: str = "count"  # count, money or rate

    @property
    def change(self) -> float | None:
        if self.value is None or not self.previous:
            return None
        return (self.value - self.previous) / abs(self.previous)

    def shown(self, value: float | None = None) -> str:
        value = self.value if value is None else value
        if value is None:
            return "-"
        if self.kind == "rate":
            return f"{value:.2%}"
        if self.kind == "money":
            return f"{value:,.0f}"
        return f"{value:,.0f}"


@dataclass
class Grid:
    """A table shown as HTML."""

    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    id: str
    title: str
    figure: str | None = None
    grid: Grid | None = None
    note: str = ""
    wide: bool = False  # a chart across the whole page (tables always are)
    empty_text: str = ""  # shown when there is nothing to draw; the lake-wide "no data yet" otherwise

    @property
    def empty(self) -> bool:
        return self.figure is None and (self.grid is None or not self.grid.rows)


@dataclass
class KpiGroup:
    title: str
    period: str
    kpis: list[Kpi]


@dataclass
class PageView:
    key: str
    title: str
    scope: str
    kpi_groups: list[KpiGroup] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)


def _is_identifier(column: str) -> bool:
    """Ids and version numbers are labels, not quantities: shown without thousands separators."""
    return column.endswith("_id") or column.endswith("version")


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if _is_identifier(column):
        return str(value)
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def grid(rows: list[dict], columns: Sequence[str] | None = None) -> Grid:
    names = list(columns or (rows[0].keys() if rows else []))
    return Grid(names, [[_cell(r[c], c) for c in names] for r in rows])


def chart(section_id: str, title: str, figure, note: str = "", *, wide: bool = False) -> Section:
    return Section(section_id, title, figure=charts.to_json(figure), note=note, wide=wide)


def in_period(sections: Sequence[Section], period: Period | None) -> list[Section]:
    """Date-filtered sections: when the table has data but none in the period, they say so."""
    if period is not None:
        for section in sections:
            section.empty_text = period.nothing_in_range()
    return list(sections)


def table(section_id: str, title: str, rows: list[dict], columns: Sequence[str] | None = None,
          note: str = "") -> Section:
    return Section(section_id, title, grid=grid(rows, columns), note=note)


# -- pages ---------------------------------------------------------------------------------------------
_FUNNEL_KPIS = (
    ("events", "Events", "sum(count_events)", "count"),
    ("sessions", "Sessions", "sum(count_sessions)", "count"),
    ("purchases", "Purchases", "sum(count_purchases)", "count"),
    ("revenue", "Revenue", "sum(revenue)", "money"),
    ("session_conversion", "Session conversion", "sum(count_purchasing_sessions) / nullif(sum(count_sessions), 0)",
     "rate"),
)
_SALES_KPIS = (
    ("net_revenue", "Net revenue", "sum(net_revenue)", "money"),
    ("gross_revenue", "Gross revenue", "sum(gross_revenue)", "money"),
    ("returns_value", "Returns", "sum(returns_value)", "money"),
    ("invoices", "Invoices", "sum(count_invoices)", "count"),
    ("units", "Units", "sum(units)", "count"),
)


def _kpi_group(reader: Reader, title: str, prefix: str, table: str, column: str, period: Period | None,
               measures) -> KpiGroup | None:
    if period is None:
        return None
    select = ", ".join(f"{sql} AS {key}" for key, _, sql, _ in measures)
    query = f"SELECT {select} FROM {table} WHERE {column} BETWEEN ? AND ?"
    now = reader.one(query, [period.start, period.end])
    before_period = period.previous()
    before = reader.one(query, [before_period.start, before_period.end])
    kpis = [Kpi(f"{prefix}-{key}", label, now.get(key), before.get(key), kind) for key, label, _, kind in measures]
    caveat = ""
    if period.data_from and before_period.start < period.data_from:
        caveat = f" (data only from {period.data_from.isoformat()})"
    return KpiGroup(title, f"{period}; change vs {before_period}{caveat}", kpis)


def overview(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("overview", "Overview", "headline KPIs of the period, with the change vs the previous period "
                                            "of equal length")
    click = dates.resolve(reader, "gold.daily_funnel", "event_date")
    sales = dates.resolve(reader, "gold.daily_sales_by_country", "invoice_date")
    groups = [_kpi_group(reader, "Clickstream", "click", "gold.daily_funnel", "event_date", click, _FUNNEL_KPIS),
              _kpi_group(reader, "Retail sales", "sales", "gold.daily_sales_by_country", "invoice_date", sales,
                         _SALES_KPIS)]
    page.kpi_groups = [g for g in groups if g]
    revenue = reader.rows("SELECT event_date, revenue, count_purchases FROM gold.daily_funnel "
                          "WHERE event_date BETWEEN ? AND ? ORDER BY 1", [click.start, click.end]) if click else []
    page.sections += in_period([chart("overview-click-revenue", "Clickstream revenue per day", charts.lines(
        revenue, "event_date", {"revenue": "revenue"}, "", y_title="revenue"))], click)
    net = reader.rows("SELECT invoice_date, sum(net_revenue) AS net_revenue FROM gold.daily_sales_by_country "
                      "WHERE invoice_date BETWEEN ? AND ? GROUP BY 1 ORDER BY 1",
                      [sales.start, sales.end]) if sales else []
    page.sections += in_period([chart("overview-net-revenue", "Retail net revenue per day", charts.lines(
        net, "invoice_date", {"net_revenue": "net revenue"}, ""))], sales)
    return page


def funnel(reader: Reader, dates: DateRange) -> PageView:
    period = dates.resolve(reader, "gold.daily_funnel", "event_date")
    page = PageView("funnel", "Funnel", f"daily views, carts and purchases; {period or 'no data'}")
    days = reader.rows("SELECT * FROM gold.daily_funnel WHERE event_date BETWEEN ? AND ? ORDER BY event_date",
                       [period.start, period.end]) if period else []
    totals = {k: sum(r[k] or 0 for r in days) for k in ("count_views", "count_carts", "count_purchases")}
    page.sections += in_period([
        chart("funnel-stages", "Views → carts → purchases (period total)",
              charts.funnel([("views", totals["count_views"]), ("carts", totals["count_carts"]),
                             ("purchases", totals["count_purchases"])], "")),
        chart("funnel-daily", "Events per day", charts.lines(
            days, "event_date", {"count_views": "views", "count_carts": "carts", "count_purchases": "purchases"}, "")),
        chart("funnel-rates", "Conversion rates per day", charts.lines(
            days, "event_date", {"view_to_cart_rate": "view → cart", "view_to_purchase_rate": "view → purchase",
                                 "session_conversion_rate": "session conversion"}, "", percent=True)),
        chart("funnel-sessions", "Sessions per day", charts.lines(
            days, "event_date", {"count_sessions": "sessions", "count_purchasing_sessions": "purchasing sessions"},
            "")),
    ], period)
    return page


def segments(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("segments", "Segments", "latest scoring of the segment models (not filtered by date)")
    users = reader.rows("SELECT * FROM gold.user_segment_profiles ORDER BY segment_id")
    customers = reader.rows("SELECT * FROM gold.customer_segment_profiles ORDER BY segment_id")
    page.sections += [
        chart("segments-users-share", "Clickstream users by segment",
              charts.pie(users, "segment_name", "count_users", "")),
        chart("segments-users-engagement", "Engagement by segment (per session)", charts.grouped_bars(
            users, "segment_name", {"mean_views_per_session": "views", "mean_carts_per_session": "carts",
                                    "mean_purchases_per_session": "purchases"}, "")),
        table("segments-users-profile", "User segment profiles and recommended actions", users,
              ["segment_name", "count_users", "share_of_users", "mean_recency_days", "mean_frequency",
               "mean_monetary", "mean_count_purchases", "recommended_action", "model_version"]),
        chart("segments-customers-share", "Retail customers by RFM segment",
              charts.pie(customers, "segment_name", "count_customers", "")),
        chart("segments-customers-value", "Share of net revenue by RFM segment",
              charts.bars(customers, "segment_name", "share_of_net_monetary", "", percent=True)),
        table("segments-customers-profile", "Customer segment profiles and recommended actions", customers,
              ["segment_name", "count_customers", "share_of_customers", "mean_recency_days", "mean_frequency",
               "mean_net_monetary", "share_of_net_monetary", "recommended_action", "model_version"]),
    ]
    return page


def products(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("products", "Products", "all time (product tables have no date)")
    top = reader.rows("SELECT product_id, coalesce(brand, '(no brand)') AS brand, category_code, revenue, "
                      "count_purchases, view_to_purchase_rate FROM gold.product_performance "
                      "ORDER BY revenue DESC, product_id LIMIT 15")
    for row in top:
        row["label"] = f"{row['product_id']} {row['brand']}"
    categories = reader.rows(
        "SELECT coalesce(category_code, '(none)') AS category, sum(revenue) AS revenue, "
        "sum(count_purchases) / nullif(sum(count_views), 0) AS conversion FROM gold.product_performance "
        "GROUP BY 1 ORDER BY revenue DESC LIMIT 12")
    brands = reader.rows(
        "SELECT brand, sum(revenue) AS revenue, sum(count_purchases) / nullif(sum(count_views), 0) AS conversion "
        "FROM gold.product_performance WHERE brand IS NOT NULL GROUP BY 1 ORDER BY revenue DESC LIMIT 12")
    retail = reader.rows("SELECT stock_code, description, gross_revenue, units, count_customers, returned_units "
                         "FROM gold.product_sales ORDER BY gross_revenue DESC, stock_code LIMIT 15")
    page.sections += [
        chart("products-top", "Top products by revenue (clickstream)",
              charts.bars(top, "label", "revenue", "", horizontal=True)),
        chart("products-categories", "Categories by revenue", charts.bars(categories, "category", "revenue", "")),
        chart("products-category-conversion", "Category view → purchase rate",
              charts.bars(categories, "category", "conversion", "", percent=True)),
        chart("products-brands", "Brands by revenue", charts.bars(brands, "brand", "revenue", "")),
        table("products-retail", "Top retail products by gross revenue", retail),
    ]
    return page


def sales(reader: Reader, dates: DateRange) -> PageView:
    period = dates.resolve(reader, "gold.daily_sales_by_country", "invoice_date")
    page = PageView("sales", "Sales", f"retail sales and returns; {period or 'no data'}")
    params = [period.start, period.end] if period else []
    window = "SELECT * FROM gold.daily_sales_by_country WHERE invoice_date BETWEEN ? AND ?"
    by_country = reader.rows(f"""
        WITH p AS ({window}),
        top AS (SELECT country FROM p GROUP BY 1 ORDER BY sum(net_revenue) DESC LIMIT 5)
        SELECT invoice_date, CASE WHEN country IN (SELECT country FROM top) THEN country ELSE 'Other' END AS country,
               sum(net_revenue) AS net_revenue
        FROM p GROUP BY ALL ORDER BY invoice_date, country""", params) if period else []
    returns = reader.rows(f"SELECT invoice_date, -sum(returns_value) AS returned_value, sum(count_return_lines) AS "
                          f"return_lines FROM ({window}) GROUP BY 1 ORDER BY 1", params) if period else []
    countries = reader.rows(f"SELECT country, sum(net_revenue) AS net_revenue, sum(gross_revenue) AS gross_revenue, "
                            f"sum(returns_value) AS returns_value, sum(count_invoices) AS invoices, "
                            f"sum(units) AS units "
                            f"FROM ({window}) GROUP BY 1 ORDER BY net_revenue DESC LIMIT 20", params) if period else []
    page.sections += in_period([
        chart("sales-by-country", "Net revenue per day by country (top 5 and other)",
              charts.grouped_lines(by_country, "invoice_date", "country", "net_revenue", "")),
        chart("sales-returns", "Returned value per day", charts.bars(returns, "invoice_date", "returned_value", "")),
        table("sales-countries", "Countries in the period", countries),
    ], period)
    return page


def customers(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("customers", "Customers", "RFM scores of the latest build (not filtered by date)")
    cells = reader.rows("SELECT r_score, f_score, count(*) AS customers, round(avg(net_monetary), 0) AS mean_net "
                        "FROM gold.customer_rfm GROUP BY ALL")
    top = reader.rows("""
        SELECT r.customer_id, s.segment_name, r.rfm_cell_text AS rfm, r.recency_days, r.frequency, r.net_monetary
        FROM (SELECT *, concat(r_score, f_score, m_score) AS rfm_cell_text FROM gold.customer_rfm) AS r
        LEFT JOIN gold.customer_segments AS s USING (customer_id)
        ORDER BY r.net_monetary DESC, r.customer_id LIMIT 20""")
    page.sections += [
        chart("customers-rfm-grid", "RFM grid: customers per recency (R) and frequency (F) score",
              charts.heatmap(cells, "r_score", "f_score", "customers", "", text="customers")),
        chart("customers-rfm-value", "Mean net monetary value per R and F score",
              charts.heatmap(cells, "r_score", "f_score", "mean_net", "", text="mean_net")),
        table("customers-top", "Top customers by net monetary value", top),
    ]
    return page


def predictions(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("predictions", "Predictions", "latest scoring of the conversion model (not filtered by date)")
    top = reader.rows("""
        SELECT p.user_id, p.product_id, p.probability, p.user_rank, f.category_code, f.brand, p.cutoff_at,
               p.model_version
        FROM gold.conversion_predictions AS p LEFT JOIN gold.product_performance AS f USING (product_id)
        ORDER BY p.probability DESC, p.user_id, p.product_id LIMIT 25""")
    probabilities = [r["probability"] for r in reader.rows(
        "SELECT probability FROM gold.conversion_predictions ORDER BY hash(user_id, product_id) LIMIT 20000")]
    page.sections += [
        table("predictions-top", "Highest-propensity user-product pairs", top),
        chart("predictions-distribution", "Predicted purchase probability (sample of up to 20,000 pairs)",
              charts.histogram(probabilities, "", x_title="probability")),
        table("predictions-models", "Models behind the predictions (MLflow registry)", _model_rows(reader)),
    ]
    return page


def _model_rows(reader: Reader) -> list[dict]:
    """Model, scored version, champion version and key validation metrics, per prediction table."""
    scored = reader.rows("""
        SELECT 'gold.conversion_predictions' AS "table", any_value(model_name) AS model, max(model_version) AS version
        FROM gold.conversion_predictions HAVING count(*) > 0
        UNION ALL
        SELECT 'gold.user_segments', any_value(model_name), max(model_version) FROM gold.user_segments
        HAVING count(*) > 0
        UNION ALL
        SELECT 'gold.customer_segments', any_value(model_name), max(model_version) FROM gold.customer_segments
        HAVING count(*) > 0""")
    if not scored:
        return []
    from shoplake.catalog.models import KEY_METRICS, KIND_OF_MODEL
    from shoplake.ml.tracking import Tracker

    tracker = Tracker(reader.lake.settings)
    out = []
    for row in scored:
        metric = KEY_METRICS.get(KIND_OF_MODEL.get(row["model"], ""), "")
        entry = {**row, "champion": "-", "key_metric": metric, "value": None, "other_metrics": ""}
        try:
            champion = tracker.champion(row["model"])
            entry["champion"] = f"v{champion.version}" if champion else "-"
            ref = tracker.version(row["model"], int(row["version"]))
            metrics = tracker.run_metrics(ref.run_id) if ref.run_id else {}
            entry["value"] = metrics.get(metric)
            entry["other_metrics"] = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                               if k.startswith("val_") and k != metric)[:300]
        except Exception as exc:  # the registry is optional for the page: show what is known
            log.warning("model registry unavailable for %s: %s", row["model"], exc)
            entry["other_metrics"] = f"registry unavailable: {type(exc).__name__}"
        out.append(entry)
    return out


def health(reader: Reader, dates: DateRange) -> PageView:
    page = PageView("health", "Data health", "ledger, quality checks, job runs, lineage and versions (latest)")
    lake = reader.lake
    ledger = reader.rows("SELECT recorded_at, run_id, table_name, table_version, rows_in, rows_out, rows_diverted, "
                         "rows_written, is_balanced FROM ops.ledger ORDER BY recorded_at DESC, table_name LIMIT 40")
    quality = reader.rows("""
        SELECT table_name, rule, action, rows_checked, rows_failed, passed, checked_at FROM ops.data_quality
        QUALIFY row_number() OVER (PARTITION BY table_name, rule ORDER BY checked_at DESC) = 1
        ORDER BY passed, rows_failed DESC, table_name, rule""")
    runs = reader.rows("SELECT run_id, job, task, attempt, status, started_at, ended_at, rows_written, error "
                       "FROM ops.job_runs ORDER BY started_at DESC NULLS LAST, task LIMIT 40")
    statuses = reader.rows("SELECT status, count(*) AS attempts FROM ops.job_runs GROUP BY 1 ORDER BY 2 DESC")
    writes = reader.rows("SELECT table_name, sum(rows_written) AS rows_written FROM ops.ledger GROUP BY 1 "
                         "ORDER BY 2 DESC")
    versions = []
    for spec in lake.catalog.ordered():
        exists = lake.store.exists(spec.name)
        last = lake.store.history(spec.name, 1)[0] if exists else None
        versions.append({"table": spec.name, "layer": spec.layer, "version": lake.store.version(spec.name) if exists
                         else None, "rows": lake.store.row_count(spec.name) if exists else None,
                         "last_commit": last.timestamp if last else None,
                         "operation": last.operation if last else "not written yet"})
    edges = [(source, spec.name) for spec in lake.catalog for source in spec.inputs]
    page.sections += [
        _model_drift(reader),
        chart("health-lineage", "Table lineage (inputs → outputs)",
              charts.lineage(edges, {spec.name: spec.layer for spec in lake.catalog}, ""), wide=True),
        chart("health-job-status", "Job task attempts by status", charts.bars(statuses, "status", "attempts", "")),
        chart("health-rows-written", "Rows written per table (ledger)",
              charts.bars(writes, "table_name", "rows_written", "", horizontal=True)),
        table("health-quality", "Data quality: latest result per table and rule", quality),
        table("health-ledger", "Ledger: latest writes", ledger),
        table("health-job-runs", "Job runs: latest attempts", runs),
        table("health-versions", "Table versions", versions),
    ]
    return page


def _model_drift(reader: Reader) -> Section:
    """The latest scoring of each model from ops.model_monitoring; inputs above the PSI threshold first."""
    rows = reader.rows("""
        SELECT model_name, model_version, input_name, psi, psi_threshold, is_drifted, scored_at, run_id
        FROM ops.model_monitoring
        QUALIFY scored_at = max(scored_at) OVER (PARTITION BY model_name)
        ORDER BY is_drifted DESC, psi DESC NULLS LAST, model_name, input_name""")
    drifted = [f"{r['model_name']}: {r['input_name']} (PSI {r['psi']:.2f})" for r in rows if r["is_drifted"]]
    note = (f"DRIFT: {len(drifted)} input(s) above the PSI threshold: {'; '.join(drifted)}" if drifted
            else "no input above the PSI threshold in the latest scoring of each model")
    return table("health-model-drift", "Model drift: latest scoring per model (PSI against training)", rows,
                 note=note)


PageBuilder = Callable[[Reader, DateRange], PageView]
PAGES: dict[str, tuple[str, PageBuilder]] = {
    "overview": ("Overview", overview),
    "funnel": ("Funnel", funnel),
    "segments": ("Segments", segments),
    "products": ("Products", products),
    "sales": ("Sales", sales),
    "customers": ("Customers", customers),
    "predictions": ("Predictions", predictions),
    "health": ("Data health", health),
}


def build_page(lake: Lake, key: str, dates: DateRange) -> PageView:
    """Build one page on its own engine session."""
    reader = Reader(lake)
    try:
        return PAGES[key][1](reader, dates)
    finally:
        reader.close()
