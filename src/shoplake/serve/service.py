"""The query service: everything that makes SQL from an API caller safe, independent of any protocol.

`QueryService` authenticates tokens, admits queries (per-token concurrency and rate limits, a global queue
bound), runs each in a killable worker process under a deadline (allow-list, role check and sandboxed
session inside, see `shoplake.serve.worker`), and writes every request to `ops.query_log` with the status
the caller receives. The HTTP API is a thin layer over it, and so can be any other protocol endpoint.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from limits import RateLimitItemPerSecond, storage, strategies

from shoplake.config import Settings
from shoplake.errors import ShoplakeError
from shoplake.lake import Lake
from shoplake.serve.answers import AnswerCache
from shoplake.serve.querylog import QueryLog, QueryLogEntry
from shoplake.serve.security import Token, authenticate, load_tokens, tokens_file
from shoplake.serve.worker import Cancelled, DeadlineExceeded, PoolClosed, QueryAnswer, QueryJob, WorkerPool

log = logging.getLogger(__name__)

# What an unauthenticated request leaves in the log: enough to see what was tried, not a way to fill the disk.
UNAUTHENTICATED_QUERY_BYTES = 1024
FORMATS = ("json", "csv", "pg")
GIL_SWITCH_SECONDS = 0.0005


class Unauthorized(ShoplakeError):
    """No token, or one that matches no configured token."""


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


@dataclass
class QueryOutcome:
    """The answer to one request, whatever the protocol.

    Attributes:
        status: `ok`, `refused`, `forbidden`, `timeout`, `error`, `unauthorized`, `rate_limited`, `busy`,
            `unavailable`, `too_large`, `invalid` or `cancelled` (a PostgreSQL cancel request); exactly what
            `ops.query_log` records for the request.
        answer: the worker's answer (columns and serialized rows) when the query ran.
        retry_after: seconds to wait before trying again (`rate_limited`, `busy`).
    """

    query_id: str
    status: str
    message: str | None = None
    answer: QueryAnswer | None = None
    elapsed_ms: float = 0.0
    retry_after: float | None = None

    @property
    def truncated(self) -> bool:
        return self.answer is not None and self.answer.truncated_by is not None


class _Refused(Exception):
    def __init__(self, status: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class _Admission:
    """Per-token concurrency and rate limits, and a bound on queries in flight over all tokens."""

    def __init__(self, settings: Settings):
        self.concurrency = settings.serve_token_concurrency
        self.max_pending = settings.serve_max_pending
        self.rate = RateLimitItemPerSecond(settings.serve_token_rate)
        self.limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self.in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()

    @contextmanager
    def admit(self, token: Token) -> Iterator[None]:
        with self.lock:
            if sum(self.in_flight.values()) >= self.max_pending:
                raise _Refused("busy", f"the server has {self.max_pending} queries waiting or running; "
                                       f"try again shortly", retry_after=1.0)
            if self.in_flight[token.name] >= self.concurrency:
                raise _Refused("rate_limited", f"token {token.name!r} already has {self.concurrency} queries "
                                               f"waiting or running; wait for one to finish", retry_after=1.0)
            if not self.limiter.hit(self.rate, "token", token.name):
                reset = self.limiter.get_window_stats(self.rate, "token", token.name).reset_time
                raise _Refused("rate_limited", f"token {token.name!r} sent more than "
                                               f"{self.rate.amount} queries in a second",
                               retry_after=max(0.1, reset - time.time()))
            self.in_flight[token.name] += 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight[token.name] -= 1

    def total(self) -> int:
        with self.lock:
            return sum(self.in_flight.values())


class QueryService:
    """Tokens, limits, workers and the audit log of the SQL API (and of any other query endpoint)."""

    def __init__(self, settings: Settings, *, query_log_interval: float = 1.0):
        self.settings = settings
        self.lake = Lake(settings)
        self.tokens = TokenStore(tokens_file(settings))
        self.query_log = QueryLog(self.lake.store, interval_seconds=query_log_interval,
                                  journal=tokens_file(settings).parent / "query_log.journal.jsonl")
        self.pool = WorkerPool(settings, size=settings.serve_workers, memory_limit=settings.serve_query_memory,
                               niceness=settings.serve_worker_niceness)
        self._admission = _Admission(settings)
        self.answers = AnswerCache(self.lake.store, settings.serve_answer_cache)
        self._started = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Replay the query log journal, start the log writer and the workers."""
        # Every query is handed between threads (the request's, the one that gets its worker's answer) and
        # each hand-over waits for the GIL: with the default 5 ms switch interval and 50 clients, the workers
        # sat idle most of the time (a measurement of the session that added this, 129 -> 190 queries/s with
        # 0.5 ms, was not recorded in bench/RESULTS.md and has not been repeated).
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        self.lake.ensure_operational_tables()
        self.query_log.start()
        self.pool.start()
        self._started = True

    def stop_queries(self) -> None:
        """Kill the workers now: queries running or waiting end at once as `unavailable` (logged)."""
        self.pool.close()

    def close(self, *, drain_seconds: float = 3.0) -> None:
        """Stop: kill the workers (running queries end as `unavailable`), then write the log."""
        self.stop_queries()
        deadline = time.monotonic() + drain_seconds
        while self._admission.total() and time.monotonic() < deadline:
            time.sleep(0.02)  # let each stopped request record its entry before the last flush
        self.query_log.close()
        self._started = False

    def health(self) -> dict:
        """What an operator checks: is the audit log written, how many workers and queries are there."""
        return {"query_log": "ok" if self.query_log.healthy else "failing",
                "query_log_error": self.query_log.last_error, "query_log_pending": self.query_log.pending,
                "workers_alive": self.pool.alive(), "workers": self.pool.size,
                "queries_in_flight": self._admission.total()}

    # -- requests -------------------------------------------------------------------------------------------
    def identify(self, secret: str | None) -> Token:
        """The token whose secret this is.

        Raises:
            Unauthorized: no secret, an unknown one, or no token configured.
        """
        configured = self.tokens.current()
        if not configured:
            raise Unauthorized("no API tokens are configured: the operator creates one with "
                               "`shoplake serve-token add NAME --role analyst` (or engineer)")
        if not secret or not secret.strip():
            raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
        token = authenticate(configured, secret.strip())
        if token is None:
            raise Unauthorized("invalid token")
        return token

    def refuse(self, query: str, status: str, message: str, token: Token | None = None) -> QueryOutcome:
        """Log and answer a request refused before it reached a worker (unauthorized, body too large, a
        PostgreSQL session statement that is not allowed, ...).

        Without a token only the first KiB of the query and its length are logged: an anonymous caller
        cannot fill the log.
        """
        outcome = QueryOutcome(uuid.uuid4().hex, status, message)
        self._record(outcome, token, query if token else _truncated(query), time.perf_counter(),
                     datetime.now(UTC))
        return outcome

    def run(self, token: Token, query: str, *, limit: int | None = None, fmt: str = "json", dialect: str = "duckdb",
            params: tuple[tuple[int, str | None], ...] = (), user: str = "",
            cancel: threading.Event | None = None) -> QueryOutcome:
        """Run one query for `token` under every limit; never raises, always logs.

        Args:
            fmt: `json`, `csv` or `pg` (PostgreSQL DataRow messages).
            dialect: `postgres` for the PostgreSQL endpoint: the query is translated (sqlglot), `$n` are bound
                to `params` (type OID, text), and catalog names read the emulated catalog.
            cancel: set from another thread to stop the query (its worker is killed): status `cancelled`.
        """
        started_at, started = datetime.now(UTC), time.perf_counter()
        deadline = time.monotonic() + self.settings.serve_query_timeout
        outcome = QueryOutcome(uuid.uuid4().hex, "ok")
        cap = self.settings.serve_row_cap
        job = QueryJob(query=query, layers=token.layers, limit=cap if limit is None else min(max(limit, 0), cap),
                       row_cap=cap, byte_cap=self.settings.serve_byte_cap, fmt=fmt if fmt in FORMATS else "json",
                       dialect=dialect, params=tuple(params), user=user)
        try:
            if not self.query_log.healthy:
                raise _Refused("unavailable", f"queries are refused while the query log cannot be written "
                                              f"({self.query_log.last_error}); see /health", retry_after=5.0)
            with self._admission.admit(token):
                answer = self.answers.get(job)  # admitted and logged like a query that runs
                if answer is None:
                    answer = self.answers.share(job, lambda: self.pool.run(job, deadline, cancel), deadline, cancel)
            outcome.status, outcome.message = answer.status, answer.message
            outcome.answer = answer if answer.status == "ok" else None
        except _Refused as refused:
            outcome.status, outcome.message, outcome.retry_after = refused.status, str(refused), refused.retry_after
        except DeadlineExceeded:
            outcome.status = "timeout"
            outcome.message = (f"query stopped after the {self.settings.serve_query_timeout:g} s time limit; "
                               f"narrow it (filters, fewer joins) or ask for fewer rows")
        except PoolClosed:
            outcome.status, outcome.message = "unavailable", "the server is shutting down"
        except Cancelled:
            outcome.status, outcome.message = "cancelled", "canceling statement due to user request"
        logged = query if not params else f"{query} /* parameters: {[value for _, value in params]} */"
        self._record(outcome, token, logged, started, started_at)
        return outcome

    def _record(self, outcome: QueryOutcome, token: Token | None, query: str, started: float,
                started_at: datetime) -> None:
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        answer = outcome.answer
        self.query_log.record(QueryLogEntry(
            query_id=outcome.query_id, token_name=token.name if token else None, role=token.role if token else None,
            started_at=started_at, query=query, rows=answer.rows if answer else 0, truncated=outcome.truncated,
            duration_ms=outcome.elapsed_ms, status=outcome.status,
            error=None if outcome.status == "ok" else outcome.message))


def _truncated(query: str) -> str:
    encoded = query.encode("utf-8", errors="replace")
    if len(encoded) <= UNAUTHENTICATED_QUERY_BYTES:
        return query
    head = encoded[:UNAUTHENTICATED_QUERY_BYTES].decode("utf-8", errors="ignore")
    return f"{head}... [truncated: {len(encoded)} bytes in all]"
