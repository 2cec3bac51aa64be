"""The serving app: dashboard pages, the SQL API and OpenAPI docs, from one FastAPI process.

`create_app(settings)` builds it; `shoplake serve` runs it with uvicorn; `export_dashboard` renders
every page into one self-contained HTML file (plotly.js inlined).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

import jinja2
import plotly
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, HTMLResponse

from shoplake.config import Settings
from shoplake.errors import ConfigError
from shoplake.lake import Lake
from shoplake.serve.api import TokenStore, build_router
from shoplake.serve.pages import EMPTY_MESSAGE, PAGES, DateRange, PageView, build_page
from shoplake.serve.querylog import QueryLog
from shoplake.serve.security import tokens_file

log = logging.getLogger(__name__)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
_STATIC = resources.files("shoplake.serve") / "static"
_STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_NAV = [(key, title) for key, (title, _) in PAGES.items()]


def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("shoplake.serve", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]))


def parse_dates(start: str | None, end: str | None) -> DateRange:
    """The date filter from `YYYY-MM-DD` strings (empty = open)."""
    try:
        return DateRange(date.fromisoformat(start) if start else None, date.fromisoformat(end) if end else None)
    except ValueError as exc:
        raise ConfigError(f"dates must look like 2019-10-31: {exc}") from exc


def render(pages: list[PageView], dates: DateRange, *, export: bool) -> str:
    """The dashboard HTML for `pages` (one page when serving, all of them when exporting)."""
    context = {"pages": pages, "nav": _NAV, "dates": dates, "export": export, "empty_message": EMPTY_MESSAGE,
               "query": "?" + urlencode({k: v for k, v in (("start", dates.start), ("end", dates.end)) if v})
               if dates.start or dates.end else ""}
    if export:
        context |= {"css": (_STATIC / "dashboard.css").read_text(), "js": (_STATIC / "dashboard.js").read_text(),
                    "plotly_js": PLOTLY_JS.read_text().replace("</script", "<\\/script"),
                    "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    return _templates().get_template("dashboard.html").render(**context)


def export_dashboard(lake: Lake, path: Path, dates: DateRange) -> list[str]:
    """Write every page into one self-contained HTML file. Returns the page titles written."""
    pages = [build_page(lake, key, dates) for key in PAGES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(pages, dates, export=True), encoding="utf-8")
    return [page.title for page in pages]


def create_app(settings: Settings, *, query_log_interval: float = 1.0) -> FastAPI:
    """The FastAPI app over the lake named by `settings`."""
    lake = Lake(settings)
    lake.ensure_operational_tables()
    query_log = QueryLog(lake.store, interval_seconds=query_log_interval)
    token_store = TokenStore(tokens_file(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        query_log.start()
        try:
            yield
        finally:
            query_log.close()

    app = FastAPI(title="shoplake", lifespan=lifespan,
                  description="Dashboard and SQL API over the shoplake lakehouse. Every `/api/v1` call needs "
                              "`Authorization: Bearer <token>` (create one with `shoplake serve-token add`).")
    app.state.lake = lake
    app.state.query_log = query_log
    app.include_router(build_router(lake, token_store, query_log))

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> HTMLResponse:
        if name not in _STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return HTMLResponse((_STATIC / name).read_text(), media_type=_STATIC_FILES[name])

    def page(key: str):
        def show(start: str | None = Query(None, description="first date, YYYY-MM-DD"),
                 end: str | None = Query(None, description="last date, YYYY-MM-DD")) -> HTMLResponse:
            try:
                dates = parse_dates(start, end)
            except ConfigError as exc:
                raise HTTPException(400, str(exc)) from None
            return HTMLResponse(render([build_page(lake, key, dates)], dates, export=False))

        show.__name__ = f"page_{key}"
        return show

    for key, (title, _) in PAGES.items():
        app.get("/" if key == "overview" else f"/{key}", response_class=HTMLResponse, summary=title,
                tags=["dashboard"])(page(key))
    return app
