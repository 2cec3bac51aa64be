"""Query workers: every SQL API query is parsed, checked, run and serialized in a worker process.

A thread cannot be stopped from outside and DuckDB's interrupt is only honoured between steps, so a query
(or a 200 KB expression being parsed) could otherwise run past any limit and keep the server from shutting
down. A worker process can be killed: the pool gives each query a deadline and kills the worker that
passes it, then starts a fresh one. Workers run at a lower CPU priority than the server, so the dashboard
and `/health` answer promptly while every worker is busy.

Workers are forked from a forkserver that has imported this module once (a new worker is ready in
milliseconds, and no worker inherits the server's threads). Each has its own temp directory outside the
lake and a DuckDB memory limit.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
from pygwire.messages import DataRow

from shoplake.catalog.spec import TableSpec
from shoplake.config import Settings
from shoplake.engines.duckdb import DuckDBEngine
from shoplake.errors import AccessDeniedError, QueryError, ShoplakeError
from shoplake.lake import Lake
from shoplake.query import ParsedQuery, TableRef, has_time_travel, limited, parse_query, resolve_tables
from shoplake.serve.allowlist import check_allowed, is_deterministic
from shoplake.serve.pgcatalog import CATALOG_SCHEMAS, build_catalog_session, pg_type_of, translate

log = logging.getLogger(__name__)

# Workers yield the CPU to the server process (dashboard, health, accepting requests); the setting
# `serve_worker_niceness` chooses how much (docs/SERVING.md has the trade-off, measured).
WORKER_NICENESS = 10
# Rows per Arrow batch read from DuckDB: small, so one batch of very wide rows stays well under the byte cap.
_BATCH_ROWS = 256
_CATALOG_SESSION = "(catalog)"
_CANCEL_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class QueryJob:
    """One query for a worker.

    Attributes:
        layers: the layers the caller's role may read.
        limit: the most rows to return (the caller's limit, at most `row_cap`).
        row_cap, byte_cap: the server's caps; the answer says which one cut the result.
        fmt: `json` (a JSON array of row arrays), `csv` (header line, then rows) or `pg` (PostgreSQL DataRow
            messages in text format, ready for the wire).
    """

    query: str
    layers: frozenset[str]
    limit: int
    row_cap: int
    byte_cap: int
    fmt: str = "json"
    # The PostgreSQL endpoint's queries: PostgreSQL dialect, `$n` parameters as (type OID, text or None),
    # catalog names answered from the emulated catalog, and the client's user name (the token's).
    dialect: str = "duckdb"
    params: tuple[tuple[int, str | None], ...] = ()
    user: str = ""


@dataclass
class QueryAnswer:
    """What a worker sends back: a status (`ok`, `refused`, `forbidden`, `error`) and the serialized rows."""

    status: str
    message: str | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    rows: int = 0
    truncated_by: str | None = None  # "rows" or "bytes" when a server cap cut the result
    pg_types: list[int] = field(default_factory=list)  # fmt `pg`: each column's PostgreSQL type OID
    # The tables the query read and the version of each (None: the table did not exist), and whether the
    # answer is a function of those versions alone (no clock, no chance): the service may then reuse it.
    reads: tuple[tuple[str, int | None], ...] = ()
    reusable: bool = False


class DeadlineExceeded(Exception):
    """The query (or its wait for a worker) ran past its deadline; its worker was killed."""


class PoolClosed(Exception):
    """The server is shutting down."""


class Cancelled(Exception):
    """The client cancelled the query; its worker was killed."""


# -- running one query (in the worker; callable in process for tests) ---------------------------------------
class Sessions:
    """Sandboxed DuckDB sessions a worker keeps between queries: one per set of layers (role).

    Building a session and binding a table's snapshot cost more than most Gold queries, so a worker keeps
    them: a table is bound once per committed version and reused by every later query of that role, from
    any client, until a new version is committed (see `DuckDBEngine.bind_latest`). A session only ever
    holds tables of its own layers, so the sandbox of one role never contains another role's tables.
    """

    def __init__(self, lake: Lake):
        self.lake = lake
        self._sessions: dict[frozenset[str], DuckDBEngine] = {}

    def get(self, layers: frozenset[str]) -> DuckDBEngine:
        if layers not in self._sessions:
            engine = DuckDBEngine(self.lake.settings, self.lake.store)
            engine.sandbox(spill_limit=self.lake.settings.serve_query_spill)
            self._sessions[layers] = engine
        return self._sessions[layers]

    def catalog(self, layers: frozenset[str]) -> DuckDBEngine:
        """The session of the PostgreSQL endpoint's emulated catalog for `layers`: metadata, no lake data."""
        key = frozenset({_CATALOG_SESSION}) | layers
        if key not in self._sessions:
            engine = DuckDBEngine(self.lake.settings, self.lake.store)
            engine.sandbox(spill_limit=self.lake.settings.serve_query_spill)
            build_catalog_session(engine, self.lake.catalog, layers)
            self._sessions[key] = engine
        return self._sessions[key]

    def discard(self, layers: frozenset[str]) -> None:
        """Close a session after an unexpected failure; the next query of that role starts a fresh one."""
        engine = self._sessions.pop(layers, None)
        if engine is not None:
            engine.close()

    def close(self) -> None:
        for layers in list(self._sessions):
            self.discard(layers)


def execute(lake: Lake, job: QueryJob, sessions: Sessions | None = None) -> QueryAnswer:
    """Parse, check, run and serialize one query on a sandboxed session. Never raises.

    Args:
        sessions: sessions kept between queries (a worker's); without them the query gets a fresh session.
    """
    try:
        query = job.query
        if job.dialect == "postgres" and not has_time_travel(query, dialect="postgres"):
            translated = translate(query, job.params, user=job.user)
            if translated.catalog:
                return _run_catalog(lake, translated.sql, job, sessions)
            query = translated.sql
        parsed = parse_query(query)
        check_allowed(parsed.statement)
        refs = resolve_tables(parsed)
        specs = {ref.view: lake.catalog.get(ref.table) for ref in refs}
        for spec in specs.values():
            if spec.layer not in job.layers:
                raise AccessDeniedError(f"access to {spec.name} denied: it is in the {spec.layer} layer and this "
                                        f"token may read only {', '.join(sorted(job.layers))} tables")
        if sessions is None:
            with DuckDBEngine(lake.settings, lake.store) as engine:
                engine.sandbox(spill_limit=lake.settings.serve_query_spill)
                return _run(engine, parsed, refs, specs, job, reuse=False)
        try:
            return _run(sessions.get(job.layers), parsed, refs, specs, job, reuse=True)
        except ShoplakeError:
            raise
        except Exception:
            sessions.discard(job.layers)  # whatever state the failure left, no later query sees it
            raise
    except AccessDeniedError as exc:
        return QueryAnswer("forbidden", str(exc))
    except RecursionError:
        return QueryAnswer("refused", "the query is nested too deeply to parse; simplify it")
    except ShoplakeError as exc:
        return QueryAnswer("refused", str(exc))
    except Exception as exc:  # an engine or Arrow failure: reported in one line, the worker lives on
        log.exception("query failed in a worker")
        return QueryAnswer("error", f"internal error: {type(exc).__name__}")


def _run_catalog(lake: Lake, sql: str, job: QueryJob, sessions: Sessions | None) -> QueryAnswer:
    """A query over the emulated catalog (no lake table), in the catalog session of the job's layers."""
    parsed = parse_query(sql)
    check_allowed(parsed.statement, catalog=True)
    for ref in resolve_tables(parsed):
        if ref.table.split(".", 1)[0] not in CATALOG_SCHEMAS:
            raise QueryError(f"unknown table {ref.table!r}")
    own = sessions or Sessions(lake)
    try:
        reader = own.catalog(job.layers).stream(limited(parsed.statement, job.limit + 1), batch_rows=_BATCH_ROWS)
        try:
            return serialize(reader, job)
        finally:
            reader.close()
    finally:
        if sessions is None:
            own.close()


def _run(engine: DuckDBEngine, parsed: ParsedQuery, refs: list[TableRef], specs: dict[str, TableSpec],
         job: QueryJob, *, reuse: bool) -> QueryAnswer:
    travelled, reads = [], []
    try:
        for ref in refs:
            spec = specs[ref.view]
            if reuse and ref.at is None:
                reads.append((spec.name, engine.bind_latest(spec)))
            else:
                reads.append((spec.name, engine.bind(spec, version=ref.at, view=ref.view)))
                travelled.append(ref.view)
        # One row more than asked tells whether the result was cut.
        reader = engine.stream(limited(parsed.statement, job.limit + 1), batch_rows=_BATCH_ROWS)
        try:
            answer = serialize(reader, job)
        finally:
            reader.close()
        answer.reads, answer.reusable = tuple(reads), is_deterministic(parsed.statement)
        return answer
    finally:
        if reuse:
            for view in travelled:  # a time-travelled view is bound for its query only
                engine.unbind(view)


def serialize(reader: pa.RecordBatchReader, job: QueryJob) -> QueryAnswer:
    """Rows as JSON or CSV bytes, cut at `job.limit` rows or `job.byte_cap` bytes, whichever comes first."""
    names = reader.schema.names
    answer = QueryAnswer("ok", columns=[(f.name, str(f.type)) for f in reader.schema],
                         pg_types=[pg_type_of(f.type) for f in reader.schema])
    out = bytearray()
    if job.fmt == "csv":
        out += _csv_line(names)
    elif job.fmt != "pg":
        out += b"["
    for batch in reader:
        # Arrow's size of the rows bounds what converting them costs, before any Python object is made:
        # a batch that may not fit is converted row by row.
        rows = batch.to_pylist() if len(out) + batch.nbytes <= job.byte_cap else None
        for index in range(batch.num_rows):
            if answer.rows == job.limit:
                answer.truncated_by = "rows" if job.limit == job.row_cap else None
                return _close(answer, out, job)
            if rows is not None:
                row = rows[index]
            else:
                single = batch.slice(index, 1)
                if len(out) + single.nbytes > job.byte_cap:
                    answer.truncated_by = "bytes"
                    return _close(answer, out, job)
                row = single.to_pylist()[0]
            if job.fmt == "csv":
                encoded = _csv_line([_text(row[n]) for n in names])
            elif job.fmt == "pg":
                encoded = DataRow(columns=[_pg_text(row[n]) for n in names]).to_wire()
            else:
                encoded = (b"," if answer.rows else b"") + json.dumps(
                    [_jsonable(row[n]) for n in names], separators=(",", ":"), allow_nan=False).encode()
            if len(out) + len(encoded) + 1 > job.byte_cap:
                answer.truncated_by = "bytes"
                return _close(answer, out, job)
            out += encoded
            answer.rows += 1
    return _close(answer, out, job)


def _close(answer: QueryAnswer, out: bytearray, job: QueryJob) -> QueryAnswer:
    if job.fmt == "json":
        out += b"]"
    answer.body = bytes(out)
    return answer


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode()


def _jsonable(value: Any) -> Any:
    """A JSON value: NaN and infinities become null (JSON has no such numbers), dates ISO text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | str):
        return value
    return _text(value)


def _pg_text(value: Any) -> bytes | None:
    """A value in PostgreSQL's text format (what a client parses for the column's type OID)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, float):
        if math.isnan(value):
            return b"NaN"
        return repr(value).encode() if math.isfinite(value) else (b"Infinity" if value > 0 else b"-Infinity")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ").encode()
    if isinstance(value, date | clock_time):
        return value.isoformat().encode()
    if isinstance(value, bytes):
        return b"\\x" + value.hex().encode()
    if isinstance(value, timedelta):
        hours, rest = divmod(value.seconds, 3600)
        return f"{value.days} days {hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{value.microseconds:06d}".encode()
    if isinstance(value, list | tuple | dict):
        return json.dumps(_jsonable(value)).encode()
    return str(value).encode()


def _text(value: Any) -> Any:
    if isinstance(value, datetime | date | clock_time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, timedelta):
        return str(value)
    return value


# -- the worker process ---------------------------------------------------------------------------------------
def _worker_main(connection, settings: Settings, niceness: int) -> None:
    os.nice(niceness)
    lake = Lake(settings)
    sessions = Sessions(lake)
    while True:
        try:
            job = connection.recv()
        except (EOFError, OSError):
            return
        connection.send(execute(lake, job, sessions))


@dataclass
class _Worker:
    process: Any
    connection: Any
    temp_dir: Path


class WorkerPool:
    """A fixed number of query worker processes; a worker past its deadline is killed and replaced."""

    def __init__(self, settings: Settings, *, size: int, memory_limit: str, niceness: int = WORKER_NICENESS):
        self.settings = settings
        self.size = size
        self.memory_limit = memory_limit
        self.niceness = niceness
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload([__name__])
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._all: dict[int, _Worker] = {}

    def start(self) -> None:
        for _ in range(self.size):
            self._idle.put(self._spawn())

    def _spawn(self) -> _Worker:
        temp_dir = Path(tempfile.mkdtemp(prefix="shoplake-query-"))
        # One DuckDB thread per worker: the pool size is the parallelism.
        worker_settings = replace(self.settings, spill_dir=temp_dir, threads=1, memory_limit=self.memory_limit)
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child_end, worker_settings, self.niceness),
                                        name="shoplake-query-worker", daemon=True)
        process.start()
        child_end.close()
        worker = _Worker(process, parent_end, temp_dir)
        with self._lock:
            self._all[process.pid] = worker
        return worker

    def _discard(self, worker: _Worker) -> None:
        # Both a renewal and `close` may discard the same worker: the first one does it.
        with self._lock:
            if self._all.pop(worker.process.pid, None) is None:
                return
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.connection.close()
        shutil.rmtree(worker.temp_dir, ignore_errors=True)

    def _replace(self, worker: _Worker) -> None:
        def renew() -> None:
            self._discard(worker)
            if not self._closed.is_set():
                self._idle.put(self._spawn())

        threading.Thread(target=renew, name="shoplake-worker-renew", daemon=True).start()

    def run(self, job: QueryJob, deadline: float, cancel: threading.Event | None = None) -> QueryAnswer:
        """Run `job` on a free worker before `deadline` (a `time.monotonic()` value).

        Args:
            cancel: when set while the query runs, its worker is killed and replaced.

        Raises:
            DeadlineExceeded: no worker became free in time, or the query passed the deadline (its worker is
                killed and replaced).
            Cancelled: `cancel` was set.
            PoolClosed: the server is shutting down.
        """
        worker = self._free_worker(deadline)
        try:
            worker.connection.send(job)
            while True:
                left = max(0.0, deadline - time.monotonic())
                # A cancellable query looks at its event every 50 ms; others wait in one call.
                if worker.connection.poll(left if cancel is None else min(left, _CANCEL_POLL_SECONDS)):
                    answer = worker.connection.recv()
                    self._idle.put(worker)
                    return answer
                if cancel is not None and cancel.is_set():
                    self._replace(worker)
                    raise Cancelled("the client cancelled the query")
                if left <= 0:
                    break
        except (EOFError, OSError) as exc:
            self._replace(worker)
            if self._closed.is_set():
                raise PoolClosed from exc
            return QueryAnswer("error", "the query worker stopped (out of memory?); try a smaller query")
        self._replace(worker)
        raise DeadlineExceeded("the query passed its deadline")

    def _free_worker(self, deadline: float) -> _Worker:
        # One blocking wait: the queue wakes waiters first come, first served. `close` puts a None that each
        # waiter passes on, so every query waiting for a worker learns at once that the server is stopping.
        try:
            worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty as exc:
            raise DeadlineExceeded("no query worker became free in time") from exc
        if worker is None:
            self._idle.put(None)
            raise PoolClosed
        return worker

    def alive(self) -> int:
        with self._lock:
            return sum(1 for worker in self._all.values() if worker.process.is_alive())

    def close(self) -> None:
        """Kill every worker, busy or not (their queries end as PoolClosed)."""
        self._closed.set()
        self._idle.put(None)
        with self._lock:
            workers = list(self._all.values())
        for worker in workers:
            self._discard(worker)
