"""The dashboard in a real browser (Debian chromium driven by Playwright), at 1440 px and 390 px.

Every page draws its charts with data, logs no console error, asks nothing of a non-loopback host and has no
horizontal overflow; each chart's and table's CSV download holds its rows, and its "view SQL" text, sent to
the SQL API, returns the same numbers; filters change the charts; the default Overview compares only with a
fully covered period; the exported file renders offline. One server and one browser for the module.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import sync_playwright

from shoplake.query import run_query
from shoplake.serve.app import export_dashboard
from shoplake.serve.pages import PAGES, build_page
from shoplake.serve.view import Filters, default_period

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
WIDTHS = {"desktop": 1440, "phone": 390}

# Points drawn per chart: traces keep their data arrays in the DOM element's `data` property; the most
# points of one trace (a band's edges repeat the line's), non-empty heatmap cells counted one by one.
CHART_POINTS = """() => Array.from(document.querySelectorAll('.chart')).map(el => ({
    id: el.id,
    plotted: el.classList.contains('js-plotly-plot'),
    points: (el.data || []).reduce((n, t) => Math.max(n, t.z ? t.z.flat().filter(v => v !== null).length
        : Math.max((t.x || []).length, (t.y || []).length, (t.values || []).length)), 0),
    signature: JSON.stringify((el.data || []).map(t => [t.x, t.y, t.z, t.values])),
}))"""
# Chromium lets a page start 10 downloads in a row and silently drops the 11th (its multiple-download
# limiter); the funnel page has 11 CSV buttons, so the page is reloaded after every 10.
DOWNLOADS_PER_LOAD = 10
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Visit:
    """A browser page that records console errors, page errors and every requested host."""

    def __init__(self, browser, width: int = 1440):
        self.context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)

    def _route(self, route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss"):
            self.hosts.add(url.hostname or "")
            if url.hostname not in LOOPBACK:
                route.abort()
                return
        route.continue_()

    def open(self, url: str) -> list[dict]:
        self.page.goto(url, wait_until="load")
        self.page.wait_for_function("() => Array.from(document.querySelectorAll('.chart'))"
                                    ".every(el => el.classList.contains('js-plotly-plot'))", timeout=30_000)
        return self.page.evaluate(CHART_POINTS)

    def reload(self) -> None:
        self.page.reload(wait_until="load")
        self.page.wait_for_function("() => Array.from(document.querySelectorAll('.chart'))"
                                    ".every(el => el.classList.contains('js-plotly-plot'))", timeout=30_000)

    def close(self) -> None:
        self.context.close()


def _expected_charts(served, key: str) -> set[str]:
    return {f"chart-{s.id}" for s in build_page(served.lake, key, Filters()).sections if s.figure}


def _path(key: str) -> str:
    return "/" if key == "overview" else f"/{key}"


def _same(text: str, value) -> bool:
    """A CSV field against the API's JSON value: numbers by value, timestamps skipped (formats differ)."""
    if value is None:
        return text == ""
    if isinstance(value, bool):
        return text == str(value).lower()
    if isinstance(value, int | float):
        return math.isclose(float(text), float(value), rel_tol=1e-9, abs_tol=1e-12)
    return ":" in text or text == str(value)


def _check_csv_and_sql(visit: Visit, live_server, served, charts: list[dict]) -> int:
    """Every section's CSV holds its rows (one per point drawn), and its SQL through the API gives them."""
    points = {c["id"].removeprefix("chart-"): c["points"] for c in charts}
    headers = served.headers("analyst")
    checked = checked_downloads = 0
    for section in visit.page.locator(".section").all():
        name = section.get_attribute("data-section")
        button = section.locator("button.csv")
        if not button.count():
            continue
        if checked_downloads and checked_downloads % DOWNLOADS_PER_LOAD == 0:
            visit.reload()
        with visit.page.expect_download() as download:
            button.click()
        checked_downloads += 1
        assert download.value.suggested_filename == f"{name}.csv"
        found = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
        header, rows = found[0], found[1:]
        if name in points and name != "health-lineage":
            assert points[name] == len(rows), (name, points[name], len(rows))
        sql = section.locator("pre.sql-text")
        if not sql.count():
            continue
        answer = visit.page.request.post(f"{live_server.url}/api/v1/sql", headers=headers,
                                         data={"query": sql.text_content()})
        assert answer.ok, (name, answer.text())
        body = answer.json()
        assert [c["name"] for c in body["columns"]] == header, name
        assert body["row_count"] == len(rows), name
        for got, want in zip(rows, body["rows"], strict=True):
            values = want.values() if isinstance(want, dict) else want
            assert all(_same(a, b) for a, b in zip(got, values, strict=True)), (name, got, want)
        checked += 1
    for kpi in visit.page.locator("[data-kpi]").all():
        answer = visit.page.request.post(f"{live_server.url}/api/v1/sql", headers=headers,
                                         data={"query": kpi.locator("pre.sql-text").text_content()})
        shown = kpi.get_attribute("data-value")
        value = next(iter(answer.json()["rows"][0].values())) if isinstance(answer.json()["rows"][0], dict) \
            else answer.json()["rows"][0][0]
        assert _same(shown, value), (kpi.get_attribute("data-kpi"), shown, value)
        checked += 1
    return checked


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("key", PAGES)
def test_every_page_draws_its_charts_with_data_and_fits_the_width(browser, live_server, served, key, width):
    visit = Visit(browser, WIDTHS[width])
    try:
        charts = visit.open(f"{live_server.url}{_path(key)}")
        overflow = visit.page.evaluate(OVERFLOW)
        empty_messages = visit.page.locator(".empty").all_inner_texts()
        checked = _check_csv_and_sql(visit, live_server, served, charts) if width == "desktop" else None
    finally:
        visit.close()
    assert charts, f"{key}: no chart on the page"
    assert {c["id"] for c in charts} == _expected_charts(served, key)
    assert all(c["plotted"] and c["points"] > 0 for c in charts), charts
    assert not empty_messages, empty_messages
    assert overflow <= 0, f"{key} at {WIDTHS[width]} px: {overflow} px of horizontal overflow"
    assert visit.errors == []
    assert visit.hosts <= LOOPBACK
    assert checked is None or checked > 0


def _kpis(visit: Visit) -> dict[str, float]:
    found = visit.page.eval_on_selector_all("[data-kpi]", "els => els.map(e => [e.dataset.kpi, e.dataset.value])")
    return {key: float(value) for key, value in found if value}


def test_the_default_overview_compares_only_with_a_fully_covered_period(browser, live_server, served):
    lake = served.lake
    first, last = run_query(lake, "SELECT min(event_date) AS a, max(event_date) AS b FROM gold.daily_funnel"
                            ).to_pylist()[0].values()
    visit = Visit(browser)
    try:
        visit.open(live_server.url)
        groups = visit.page.locator(".kpi-group").all()
        said = {g.locator("h2").inner_text().split("\n")[0]: (g.locator(".comparison").inner_text(),
                                                              g.locator(".kpi .change").all_inner_texts())
                for g in groups}
    finally:
        visit.close()
    click_said, click_changes = next(v for k, v in said.items() if k.startswith("Clickstream"))
    shown = default_period(first, last)
    before = shown.previous()
    if before.start < first:  # the previous period is partly before the data: no change may be shown
        assert click_said.startswith("no comparison:"), click_said
        assert all(text.strip() == "" for text in click_changes), click_changes
    else:
        assert click_said == f"change vs {before.text()}"
        assert all(text.strip() for text in click_changes), click_changes
    assert visit.errors == []


def test_changing_the_date_range_changes_the_kpis(browser, live_server, served):
    lake = served.lake
    last = run_query(lake, "SELECT max(event_date) AS d FROM gold.daily_funnel").column("d")[0].as_py()
    start, end = last - timedelta(days=9), last - timedelta(days=3)
    visit = Visit(browser)
    try:
        default = (visit.open(live_server.url), _kpis(visit))[1]
        visit.page.fill("#date-start", start.isoformat())
        visit.page.fill("#date-end", end.isoformat())
        with visit.page.expect_navigation():
            visit.page.click("#date-apply")
        visit.page.wait_for_function("() => document.querySelector('.chart.js-plotly-plot') !== null")
        chosen = _kpis(visit)
    finally:
        visit.close()
    assert visit.errors == []
    assert chosen["click-events"] != default["click-events"]
    sums = run_query(lake, f"""SELECT sum(count_events) AS events, sum(count_purchases) AS purchases,
                                      sum(revenue) AS revenue FROM gold.daily_funnel
                               WHERE event_date >= DATE '{start}' AND event_date <= DATE '{end}'""").to_pylist()[0]
    assert chosen["click-events"] == sums["events"]
    assert chosen["click-purchases"] == sums["purchases"]
    assert chosen["click-revenue"] == pytest.approx(sums["revenue"])


@pytest.mark.parametrize(("key", "select", "chart", "prefix"), [
    ("sales", "country", "chart-sales-daily", ""),
    ("products", "brand", "chart-products-categories", ""),
    ("funnel", "category", "chart-funnel-view_cart_purchase-steps", ""),
    ("funnel", "segment", "chart-funnel-view_cart_purchase-steps", "users:"),
    ("customers", "segment", "chart-customers-rfm-grid", ""),
])
def test_a_filter_changes_the_charts(browser, live_server, key, select, chart, prefix):
    visit = Visit(browser)
    try:
        before = {c["id"]: c["signature"] for c in visit.open(f"{live_server.url}{_path(key)}")}
        options = [o.get_attribute("value") for o in visit.page.locator(f"#filter-{select} option").all()]
        value = next(v for v in options[1:] if v.startswith(prefix))  # the first value after "all"
        visit.page.select_option(f"#filter-{select}", value)
        with visit.page.expect_navigation():
            visit.page.click("#date-apply")
        after = {c["id"]: c["signature"] for c in visit.open(visit.page.url)}
        url = visit.page.url
    finally:
        visit.close()
    assert visit.errors == []
    assert f"{select}=" in url
    assert after[chart] != before[chart], f"{select}={value} did not change {chart}"


def test_the_funnel_over_a_long_range_draws_weeks_and_its_csv_and_sql_agree(browser, live_server, served):
    first, last = run_query(served.lake, "SELECT min(event_date) AS a, max(event_date) AS b FROM gold.daily_funnel"
                            ).to_pylist()[0].values()
    start = first - timedelta(days=40)  # a range over 62 days: the funnels' weekly rows
    weeks = run_query(served.lake, f"""SELECT count(DISTINCT period_start) AS n FROM gold.funnel_view_cart_purchase
                                       WHERE grain = 'week' AND period_start BETWEEN DATE '{start}'
                                         AND DATE '{last}'""").column("n")[0].as_py()
    visit = Visit(browser)
    try:
        charts = visit.open(f"{live_server.url}/funnel?start={start}&end={last}")
        checked = _check_csv_and_sql(visit, live_server, served, charts)
        tables = visit.page.locator("#section-funnel-view_cart_purchase-time tbody tr").count()
    finally:
        visit.close()
    drawn = {c["id"]: c["points"] for c in charts}
    assert drawn["chart-funnel-view_cart_purchase-over-time"] == weeks > 1
    assert tables == 2 and checked > 0  # time to convert: the cart and purchase steps
    assert visit.errors == []


def test_a_country_opens_its_rows(browser, live_server):
    visit = Visit(browser)
    try:
        visit.open(f"{live_server.url}/sales")
        link = visit.page.locator("#table-sales-countries a.drill").first
        country = link.inner_text()
        with visit.page.expect_navigation():
            link.click()
        cells = visit.page.locator("#table-rows-country tbody tr").count()
        title = visit.page.locator("h1").inner_text()
    finally:
        visit.close()
    assert title == f"Rows: {country}" and cells > 0
    assert visit.errors == []


def test_the_exported_file_renders_offline(browser, served, tmp_path):
    target = tmp_path / "dashboard.html"
    export_dashboard(served.lake, target, Filters())
    visit = Visit(browser)
    try:
        charts = visit.open(target.as_uri())
        with visit.page.expect_download() as download:
            visit.page.locator("#section-sales-countries button.csv").click()
        exported_rows = Path(download.value.path()).read_text().count("\n") - 1
    finally:
        visit.close()
    expected = set().union(*(_expected_charts(served, key) for key in PAGES))
    assert {c["id"] for c in charts} == expected
    assert all(c["plotted"] and c["points"] > 0 for c in charts)
    assert exported_rows > 0
    assert visit.errors == []
    assert visit.hosts == set()  # not even loopback: everything is inside the file
