"""The dashboard in a real browser (Debian chromium driven by Playwright): every page draws its charts
with data, logs no console error and asks nothing of a non-loopback host; the date range changes the
KPIs; the exported file renders offline. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import sync_playwright

from shoplake.query import run_query
from shoplake.serve.app import export_dashboard
from shoplake.serve.pages import PAGES, DateRange

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}

# Points drawn per chart: traces keep their data arrays in the DOM element's `data` property.
CHART_POINTS = """() => Array.from(document.querySelectorAll('.chart')).map(el => ({
    id: el.id,
    plotted: el.classList.contains('js-plotly-plot'),
    points: (el.data || []).reduce((n, t) => n + Math.max(
        (t.x || []).length, (t.y || []).length, (t.values || []).length, (t.z || []).length), 0),
}))"""


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

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
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

    def close(self) -> None:
        self.page.close()


def _expected_charts(served, key: str) -> set[str]:
    from shoplake.serve.pages import build_page

    return {f"chart-{s.id}" for s in build_page(served.lake, key, DateRange()).sections if s.figure}


@pytest.mark.parametrize("key", PAGES)
def test_every_page_draws_its_charts_with_data(browser, live_server, served, key):
    visit = Visit(browser)
    try:
        charts = visit.open(f"{live_server.url}/{'' if key == 'overview' else key}")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        visit.page.screenshot(path=str(SCREENSHOTS / f"{key}.png"), full_page=True)
        empty_messages = visit.page.locator(".empty").all_inner_texts()
    finally:
        visit.close()
    assert charts, f"{key}: no chart on the page"
    assert {c["id"] for c in charts} == _expected_charts(served, key)
    assert all(c["plotted"] and c["points"] > 0 for c in charts), charts
    assert not empty_messages, empty_messages
    assert visit.errors == []
    assert visit.hosts <= LOOPBACK


def _kpis(visit: Visit) -> dict[str, float]:
    found = visit.page.eval_on_selector_all("[data-kpi]", "els => els.map(e => [e.dataset.kpi, e.dataset.value])")
    return {key: float(value) for key, value in found if value}


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
        visit.page.screenshot(path=str(SCREENSHOTS / "overview-date-range.png"), full_page=True)
    finally:
        visit.close()
    assert visit.errors == []
    assert chosen["click-events"] != default["click-events"]

    def period_sums(first: date, final: date) -> dict:
        sums = run_query(lake, f"""SELECT sum(count_events) AS events, sum(count_purchases) AS purchases,
                                          sum(revenue) AS revenue FROM gold.daily_funnel
                                   WHERE event_date >= DATE '{first}' AND event_date <= DATE '{final}'""")
        return sums.to_pylist()[0]

    now = period_sums(start, end)
    before = period_sums(start - timedelta(days=7), start - timedelta(days=1))
    assert chosen["click-events"] == now["events"]
    assert chosen["click-purchases"] == now["purchases"]
    assert chosen["click-revenue"] == pytest.approx(now["revenue"])
    default_now = period_sums(last - timedelta(days=29), last)
    assert default["click-events"] == default_now["events"]
    assert before["events"] > 0  # the previous period exists, so the change shown is a real comparison


def test_the_exported_file_renders_offline(browser, served, tmp_path):
    target = tmp_path / "dashboard.html"
    export_dashboard(served.lake, target, DateRange())
    visit = Visit(browser)
    try:
        charts = visit.open(target.as_uri())
        visit.page.screenshot(path=str(SCREENSHOTS / "export.png"))
    finally:
        visit.close()
    expected = set().union(*(_expected_charts(served, key) for key in PAGES))
    assert {c["id"] for c in charts} == expected
    assert all(c["plotted"] and c["points"] > 0 for c in charts)
    assert visit.errors == []
    assert visit.hosts == set()  # not even loopback: everything is inside the file
