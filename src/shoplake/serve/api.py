"""The SQL API over HTTP: `POST /api/v1/sql`, `GET /api/v1/tables[/{name}]`, `GET /api/v1/health`.

A thin layer over `shoplake.serve.service.QueryService`, which holds every rule (tokens, roles, allow-list,
limits, killable workers, audit log): this module only maps HTTP to it and its outcomes back to HTTP.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from shoplake.errors import TableNotFoundError
from shoplake.serve.security import Token
from shoplake.serve.service import QueryOutcome, QueryService, Unauthorized

# The HTTP status sent for each outcome (the same status string is what ops.query_log records).
HTTP_STATUS = {"ok": 200, "refused": 400, "unauthorized": 401, "forbidden": 403, "timeout": 408, "too_large": 413,
               "invalid": 422, "rate_limited": 429, "error": 500, "busy": 503, "unavailable": 503}


class SqlRequest(BaseModel):
    """A query over catalog tables (`gold.daily_funnel`, `ops.job_runs`, ...)."""

    query: str = Field(description="one read-only SQL query; tables by catalog name",
                       examples=["SELECT event_date, count_purchases FROM gold.daily_funnel ORDER BY 1"])
    limit: int | None = Field(default=None, ge=0, description="at most this many rows (never above the row cap)")


def _bearer(authorization: str | None) -> str | None:
    scheme, _, secret = (authorization or "").partition(" ")
    return secret if scheme.lower() == "bearer" else None


def outcome_response(outcome: QueryOutcome, service: QueryService, *, csv: bool = False) -> Response:
    """The HTTP response for an outcome (its body is built from bytes the worker serialized)."""
    settings = service.settings
    headers = {"X-Query-Id": outcome.query_id}
    if outcome.status != "ok" or outcome.answer is None:
        if outcome.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(outcome.retry_after)))
        if outcome.status == "unauthorized":
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse({"detail": outcome.message, "status": outcome.status, "query_id": outcome.query_id},
                            status_code=HTTP_STATUS[outcome.status], headers=headers)
    answer = outcome.answer
    headers |= {"X-Row-Count": str(answer.rows), "X-Truncated": str(outcome.truncated).lower(),
                "X-Truncated-By": answer.truncated_by or "", "X-Row-Cap": str(settings.serve_row_cap),
                "X-Byte-Cap": str(settings.serve_byte_cap)}
    if csv:
        return Response(answer.body, media_type="text/csv", headers=headers)
    head = {"query_id": outcome.query_id, "columns": [{"name": n, "type": t} for n, t in answer.columns]}
    tail = {"row_count": answer.rows, "truncated": outcome.truncated, "truncated_by": answer.truncated_by,
            "row_cap": settings.serve_row_cap, "byte_cap": settings.serve_byte_cap,
            "elapsed_ms": round(outcome.elapsed_ms, 1)}
    body = (json.dumps(head)[:-1].encode() + b', "rows": ' + answer.body + b", " + json.dumps(tail)[1:].encode())
    return Response(body, media_type="application/json", headers=headers)


def build_router(service: QueryService) -> APIRouter:
    """The `/api/v1` routes over `service`."""
    lake = service.lake
    router = APIRouter(prefix="/api/v1", tags=["SQL API"])
    # API queries wait for a worker on threads of their own, never on the threads that serve the dashboard.
    threads: list[anyio.CapacityLimiter] = []

    def require_token(authorization: str | None) -> Token:
        try:
            return service.identify(_bearer(authorization))
        except Unauthorized as exc:
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None

    @router.post("/sql", summary="Run one read-only SQL query",
                 responses={200: {"content": {"text/csv": {}}}, 400: {}, 401: {}, 403: {}, 408: {}, 413: {},
                            429: {}, 503: {}})
    async def sql(body: SqlRequest, request: Request,
                  authorization: Annotated[str | None, Header()] = None) -> Response:
        """Run a query and return its rows as JSON, or as CSV with `Accept: text/csv`.

        Results are capped at the server's row and byte caps (`truncated`, `truncated_by` say so); a query
        is stopped at the time limit (408). Only SELECT queries over catalog tables with allow-listed
        functions run; analysts read gold and ops tables. Too many queries at once: 429 or 503.
        """
        csv = "text/csv" in request.headers.get("accept", "")
        try:
            token = service.identify(_bearer(authorization))
        except Unauthorized as exc:
            return outcome_response(service.refuse(body.query, "unauthorized", str(exc)), service)
        if not threads:
            threads.append(anyio.CapacityLimiter(service.settings.serve_max_pending + 8))
        run = partial(service.run, token, body.query, limit=body.limit, fmt="csv" if csv else "json")
        outcome = await anyio.to_thread.run_sync(run, limiter=threads[0])
        return outcome_response(outcome, service, csv=csv)

    @router.get("/tables", summary="Tables this token may read")
    def tables(authorization: Annotated[str | None, Header()] = None) -> list[dict]:
        token = require_token(authorization)
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
    def table(name: str, authorization: Annotated[str | None, Header()] = None) -> dict:
        token = require_token(authorization)
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

    @router.get("/health", summary="Is the query log written; workers and queries in flight")
    async def health() -> JSONResponse:
        report = service.health()
        ok = report["query_log"] == "ok" and report["workers_alive"] > 0
        return JSONResponse(report, status_code=200 if ok else 503)

    return router
