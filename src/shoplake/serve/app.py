"""The serving app: dashboard pages, the SQL API and OpenAPI docs, from one FastAPI process.

`create_app(settings)` builds it; `shoplake serve` runs it with uvicorn; `export_dashboard` renders
every page into one self-contained HTML file (plotly.js inlined).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import jinja2
import plotly
import uvicorn
from fastapi import HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.middleware.trustedhost import TrustedHostMiddleware

from shoplake.config import Settings
from shoplake.errors import ConfigError
from shoplake.lake import Lake
from shoplake.serve.api import build_router
from shoplake.serve.pages import EMPTY_MESSAGE, PAGES, build_page
from shoplake.serve.service import QueryService
from shoplake.serve.view import FILTER_NAMES, FilterError, Filters, PageView, parse_filters
from shoplake.serve.web import LOOPBACK_HOSTS, BodyLimit, SecurityHeaders

log = logging.getLogger(__name__)

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
_STATIC = resources.files("shoplake.serve") / "static"
_STATIC_FILES = {"dashboard.css": "text/css", "dashboard.js": "text/javascript", "favicon.svg": "image/svg+xml"}
_NAV = [(key, title) for key, (title, _) in PAGES.items()]
# plotly.js (4.8 MB) is served under a name that changes with its content, so browsers may keep it for a year.
IMMUTABLE = "public, max-age=31536000, immutable"


@functools.cache
def plotly_name() -> str:
    """`plotly-<first 12 hex of its SHA-256>.min.js`."""
    return f"plotly-{hashlib.sha256(PLOTLY_JS.read_bytes()).hexdigest()[:12]}.min.js"


@functools.cache
def _templates() -> jinja2.Environment:
    # One environment for the process: it compiles the template once, not on every page view.
    return jinja2.Environment(loader=jinja2.PackageLoader("shoplake.serve", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]))


def render(pages: list[PageView], filters: Filters, *, export: bool, notice: str | None = None) -> str:
    """The dashboard HTML for `pages` (one page when serving, all of them when exporting).

    Args:
        notice: a message shown above the page (a failing query log).
    """
    context = {"pages": pages, "nav": _NAV, "filters": filters, "export": export, "empty_message": EMPTY_MESSAGE,
               "notice": notice, "query": filters.query(), "plotly_name": plotly_name(),
               "options": pages[0].options if pages else {}}
    if export:
        context |= {"css": (_STATIC / "dashboard.css").read_text(), "js": (_STATIC / "dashboard.js").read_text(),
                    "plotly_js": PLOTLY_JS.read_text().replace("</script", "<\\/script"),
                    "favicon": (_STATIC / "favicon.svg").read_text(),
                    "generated_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    return _templates().get_template("dashboard.html").render(**context)


def render_error(message: str, filters_query: str = "") -> str:
    """A friendly HTML page for a request the dashboard cannot answer (a bad date, a start after the data)."""
    return _templates().get_template("error.html").render(message=message, nav=_NAV, query=filters_query)


def export_dashboard(lake: Lake, path: Path, filters: Filters) -> list[str]:
    """Write every page into one self-contained HTML file. Returns the page titles written.

    The file keeps what works offline: charts, KPIs, tables, "view SQL" and CSV downloads (made in the
    browser from the data in the file); the filter bar and drill-down links need the server and are left out.
    """
    pages = [build_page(lake, key, filters) for key in PAGES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(pages, filters, export=True), encoding="utf-8")
    return [page.title for page in pages]


def make_server(app: FastAPIOffline, *, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for `app` whose shutdown first stops the query workers.

    So every API request in flight answers at once (503, logged) instead of holding the shutdown until its
    deadline; then uvicorn closes the connections and the app writes the query log.
    """

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            app.state.service.stop_queries()
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3))


def run_server(app: FastAPIOffline, *, host: str, port: int) -> None:
    """Serve `app` until SIGTERM or Ctrl-C."""
    make_server(app, host=host, port=port).run()


def create_app(settings: Settings, *, query_log_interval: float = 1.0,
               allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS, pg: dict | None = None) -> FastAPIOffline:
    """The FastAPI app over the lake named by `settings`.

    Args:
        allowed_hosts: the host names clients may use (Host header); others get 400, which stops DNS
            rebinding. Loopback by default.
        pg: also serve the PostgreSQL endpoint on the same query service while the app runs: the keyword
            arguments of `shoplake.serve.pg.PgServer` (host, port, tls).
    """
    service = QueryService(settings, query_log_interval=query_log_interval)
    lake = service.lake

    warmed = threading.Event()

    def warm_up() -> None:
        # The first render of a page pays one-off costs (plotly's validators, templates, the first engine
        # session): paid here, in the background, rather than by the first visitor.
        try:
            for key in ("overview", "health", "predictions"):
                render([build_page(lake, key, Filters())], Filters(), export=False)
        except Exception:  # a lake without data or a broken table still serves; the page will say why
            log.warning("dashboard warm-up failed", exc_info=True)
        finally:
            warmed.set()

    @asynccontextmanager
    async def lifespan(_):
        service.start()
        threading.Thread(target=warm_up, name="shoplake-dashboard-warm-up", daemon=True).start()
        pg_server = None
        if pg is not None:
            from shoplake.serve.pg import PgServer

            pg_server = PgServer(service, **pg)
            pg_server.start()
        try:
            yield
        finally:
            if pg_server is not None:
                pg_server.stop()
            service.close()

    # FastAPIOffline serves Swagger UI's files from its package: /docs works with no network.
    app = FastAPIOffline(title="shoplake", lifespan=lifespan, redoc_url=None,
                         swagger_ui_parameters={"syntaxHighlight": False},
                         description="Dashboard and SQL API over the shoplake lakehouse. Every `/api/v1` call needs "
                                     "`Authorization: Bearer <token>` (create one with `shoplake serve-token add`).")
    app.state.lake = lake
    app.state.service = service
    app.state.query_log = service.query_log
    app.state.warmed = warmed
    app.include_router(build_router(service))

    def refuse_body(path: str, size: str) -> dict:
        message = f"request body of {size} is over the {settings.serve_body_limit}-byte limit"
        if path == "/api/v1/sql":
            outcome = service.refuse(f"(not read: {message})", "too_large", message)
            return {"detail": message, "status": outcome.status, "query_id": outcome.query_id}
        return {"detail": message, "status": "too_large"}

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A body that is not {"query": ..., "limit": ...} is refused before any token check: logged like
        # an unauthenticated request (its first KiB), with the status sent.
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        if request.url.path != "/api/v1/sql":
            return JSONResponse({"detail": message, "status": "invalid"}, status_code=422)
        body = (await request.body()).decode("utf-8", errors="replace")
        outcome = service.refuse(body, "invalid", f"invalid request body: {message}")
        return JSONResponse({"detail": outcome.message, "status": outcome.status, "query_id": outcome.query_id},
                            status_code=422, headers={"X-Query-Id": outcome.query_id})

    app.add_middleware(BodyLimit, limit=settings.serve_body_limit, on_refused=refuse_body)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)

    @app.get(f"/static/{plotly_name()}", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": IMMUTABLE})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in _STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return Response((_STATIC / name).read_text(), media_type=_STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response((_STATIC / "favicon.svg").read_text(), media_type="image/svg+xml",
                        headers={"Cache-Control": "public, max-age=86400"})

    def page(key: str):
        def show(request: Request) -> HTMLResponse:
            try:
                filters = parse_filters({k: request.query_params.get(k) for k in FILTER_NAMES})
                built = build_page(lake, key, filters)
            except FilterError as exc:
                return HTMLResponse(render_error(str(exc)), status_code=400)
            notice = None
            if key == "health" and not service.query_log.healthy:
                notice = (f"the SQL API query log cannot be written ({service.query_log.last_error}); "
                          f"{service.query_log.pending} entries are waiting and the API refuses queries until it can")
            return HTMLResponse(render([built], filters, export=False, notice=notice), status_code=200)

        show.__name__ = f"page_{key}"
        return show

    app.get("/rows", response_class=HTMLResponse, summary="The rows behind a country or an RFM segment",
            tags=["dashboard"])(page("rows"))

    @app.get("/profile/{table}", response_class=HTMLResponse, summary="Column profile of a table",
             tags=["dashboard"])
    def profile(table: str, column: str | None = Query(None, description="one column only")) -> HTMLResponse:
        from shoplake.serve.profiles import profile_page

        if table not in {spec.name for spec in lake.catalog}:
            return HTMLResponse(render_error(f"no table named {table!r} in the catalog"), status_code=404)
        try:
            shown = profile_page(lake, table, column)
        except ConfigError as exc:
            return HTMLResponse(render_error(str(exc)), status_code=400)
        return HTMLResponse(render([shown], Filters(), export=False), status_code=200)

    for key, (title, _) in PAGES.items():
        app.get("/" if key == "overview" else f"/{key}", response_class=HTMLResponse, summary=title,
                tags=["dashboard"])(page(key))
    return app
