"""The SQL API: `POST /api/v1/sql`, `GET /api/v1/tables`, `GET /api/v1/tables/{name}`.

Every call needs a bearer token; its role decides which layers it reads. Queries run through
`shoplake.query.run_query` with a `QueryPolicy` (statement checks, sandboxed engine session, layer
check, time limit), each on its own engine session bound to one Delta snapshot per table.
"""


import csv
import io
import logging
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from shoplake.errors import AccessDeniedError, QueryTimeoutError, ShoplakeError, TableNotFoundError
from shoplake.lake import Lake
from shoplake.query import QueryPolicy, run_query
from shoplake.serve.querylog import QueryLog, QueryLogEntry
from shoplake.serve.security import Token, authenticate, load_tokens

log = logging.getLogger(__name__)


class SqlRequest(BaseModel):
    """A query over catalog tables (`gold.daily_funnel`, `ops.job_runs`, ...)."""

    query: str = Field(description="one read-only SQL query; tables by catalog name",
                       examples=["SELECT event_date, count_purchases FROM gold.daily_funnel ORDER BY 1"])
    limit: int | None = Field(default=None, ge=0, description="at most this many rows (never above the row cap)")


class TokenStore:
    """The configured tokens, re-read when the file changes (adding a token needs no restart)."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: float | None = None
        self._tokens: dict[str, Token] = {}

    def current(self) -> dict[str, Token]:
        stamp = self.path.stat().st_mtime if self.path.is_file() else None
        if stamp != self._stamp:
            self._tokens, self._stamp = load_tokens(self.path), stamp
        return self._tokens


class Unauthorized(Exception):
    """No token, or one that matches no configured token."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def build_router(lake: Lake, tokens: TokenStore, query_log: QueryLog) -> APIRouter:
    """The `/api/v1` routes over `lake`."""
    settings = lake.settings
    router = APIRouter(prefix="/api/v1", tags=["SQL API"])

    def identify(authorization: str | None) -> Token:
        configured = tokens.current()
        if not configured:
            raise Unauthorized("no API tokens are configured: the operator creates one with "
                               "`shoplake serve-token add NAME --role analyst` (or engineer)")
        scheme, _, secret = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
        token = authenticate(configured, secret.strip())
        if token is None:
            raise Unauthorized("invalid token")
        return token

    def require_token(authorization: Annotated[str | None, Header()] = None) -> Token:
        try:
            return identify(authorization)
        except Unauthorized as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    @router.post("/sql", summary="Run one read-only SQL query",
                 responses={200: {"content": {"text/csv": {}}}, 400: {}, 401: {}, 403: {}, 408: {}})
    def sql(body: SqlRequest, request: Request,
            authorization: Annotated[str | None, Header()] = None) -> Response:
        """Run a query and return its rows as JSON, or as CSV with `Accept: text/csv`.

        Results are capped at the server's row cap (`truncated` says so); queries stop after the
        time limit. Only read queries over catalog tables run; analysts read gold and ops tables.
        """
        query_id = uuid.uuid4().hex
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        token: Token | None = None
        entry = QueryLogEntry(query_id=query_id, token_name=None, role=None, started_at=started_at,
                              query=body.query, rows=0, truncated=False, duration_ms=0.0, status="ok")
        try:
            token = identify(authorization)
            entry.token_name, entry.role = token.name, token.role
            cap = settings.serve_row_cap
            wanted = cap if body.limit is None else min(body.limit, cap)
            policy = QueryPolicy(layers=token.layers, timeout_seconds=settings.serve_query_timeout)
            # One row more than wanted tells whether the result was cut.
            result = run_query(lake, body.query, limit=wanted + 1, policy=policy)
            truncated = result.num_rows > wanted
            result = result.slice(0, wanted)
            entry.rows, entry.truncated = result.num_rows, truncated and wanted == cap
        except Unauthorized as exc:
            return _fail(entry, started, query_log, 401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})
        except AccessDeniedError as exc:
            return _fail(entry, started, query_log, 403, "forbidden", str(exc))
        except QueryTimeoutError as exc:
            return _fail(entry, started, query_log, 408, "timeout", str(exc))
        except ShoplakeError as exc:
            return _fail(entry, started, query_log, 400, "refused", str(exc))
        except Exception as exc:  # an engine failure must still be logged, then reported as a 500
            log.exception("query %s failed", query_id)
            return _fail(entry, started, query_log, 500, "error", f"internal error: {type(exc).__name__}")
        entry.duration_ms = (time.perf_counter() - started) * 1000
        query_log.record(entry)
        headers = {"X-Query-Id": query_id, "X-Row-Count": str(entry.rows), "X-Truncated": str(entry.truncated).lower(),
                   "X-Row-Cap": str(settings.serve_row_cap)}
        names = result.column_names
        if "text/csv" in request.headers.get("accept", ""):
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(names)
            for row in result.to_pylist():
                writer.writerow([_plain(row[n]) for n in names])
            return Response(buffer.getvalue(), media_type="text/csv", headers=headers)
        return JSONResponse({
            "query_id": query_id,
            "columns": [{"name": f.name, "type": str(f.type)} for f in result.schema],
            "rows": [[_plain(row[n]) for n in names] for row in result.to_pylist()],
            "row_count": entry.rows,
            "truncated": entry.truncated,
            "row_cap": settings.serve_row_cap,
            "elapsed_ms": round(entry.duration_ms, 1),
        }, headers=headers)

    @router.get("/tables", summary="Tables this token may read")
    def tables(token: Annotated[Token, Depends(require_token)]) -> list[dict]:
        out = []
        for spec in lake.catalog.ordered():
            if spec.layer not in token.layers:
                continue
            exists = lake.store.exists(spec.name)
            out.append({"name": spec.name, "layer": spec.layer, "description": spec.description,
                        "latest_version": lake.store.version(spec.name) if exists else None,
                        "rows": lake.store.row_count(spec.name) if exists else None})
        return out

    @router.get("/tables/{name}", summary="A table's schema, grain, lineage and versions",
                responses={403: {}, 404: {}})
    def table(name: str, token: Annotated[Token, Depends(require_token)]) -> dict:
        try:
            spec = lake.catalog.get(name)
        except TableNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        if spec.layer not in token.layers:
            raise HTTPException(403, f"access to {spec.name} denied: it is in the {spec.layer} layer and this "
                                     f"token may read only {', '.join(sorted(token.layers))} tables")
        exists = lake.store.exists(spec.name)
        return {
            "name": spec.name, "layer": spec.layer, "description": spec.description, "build": spec.build,
            "grain": list(spec.grain),
            "columns": [{"name": c.name, "type": c.type, "description": c.description} for c in spec.columns],
            "lineage": {"upstream": lake.catalog.upstream(spec.name),
                        "downstream": lake.catalog.downstream(spec.name)},
            "versions": [{"version": c.version, "timestamp": c.timestamp.isoformat(), "operation": c.operation,
                          "rows_added": c.rows_added, "run_id": c.meta.get("run_id")}
                         for c in (lake.store.history(spec.name, 20) if exists else [])],
        }

    return router


def _fail(entry: QueryLogEntry, started: float, query_log: QueryLog, code: int, status: str, message: str,
          headers: dict[str, str] | None = None) -> JSONResponse:
    entry.status, entry.error = status, message
    entry.duration_ms = (time.perf_counter() - started) * 1000
    query_log.record(entry)
    return JSONResponse({"detail": message, "status": status, "query_id": entry.query_id}, status_code=code,
                        headers={"X-Query-Id": entry.query_id, **(headers or {})})
