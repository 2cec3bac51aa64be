"""Answers the query service keeps for repeated queries, until a table they read has a new version.

A dashboard or a BI tool in DirectQuery mode sends the same queries again and again; between two commits of
the tables they read, the answer is the same bytes. The service keeps a worker's answer under the job (the
query text, dialect and parameters, the role's layers, the limit, the caps, the format) together with the
version of every table the query read. A later identical job gets it back only if none of those tables has a
newer version (one or two `stat` calls per table, `DeltaStore.has_new_version`), so an answer is exactly
what running the query again would give. The worker says which answers may be kept: never one that reads
the clock or chance (`shoplake.serve.allowlist.is_deterministic`), nor one of the PostgreSQL endpoint's
emulated catalog.

Identical queries that arrive while one of them runs on a worker (50 dashboards after a commit, say) wait
for its answer instead of each taking a worker (`share`); a waiting query takes it only if it may be kept
and is still current, and otherwise runs itself.

Only the worker's work is saved: the service still admits a repeated query under the token's rate and
concurrency limits and writes it to `ops.query_log`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from shoplake.engines.delta import DeltaStore
from shoplake.serve.worker import Cancelled, DeadlineExceeded, QueryAnswer, QueryJob

_CANCEL_POLL_SECONDS = 0.05

# Bytes of Python objects per kept answer besides its body and query text.
ENTRY_OVERHEAD = 1024


class AnswerCache:
    """Kept answers, at most `max_bytes` of them (body, query text and `ENTRY_OVERHEAD` each), least recently
    used out first; one answer may take at most a quarter of the budget. Safe to use from many threads."""

    def __init__(self, store: DeltaStore, max_bytes: int):
        self.store = store
        self.max_bytes = max_bytes
        self._answers: OrderedDict[tuple, tuple[QueryAnswer, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[tuple, _Flight] = {}

    @staticmethod
    def key(job: QueryJob) -> tuple:
        # Not the user: it changes only the answers of catalog queries, which are never kept.
        return (job.query, job.dialect, job.params, job.layers, job.limit, job.row_cap, job.byte_cap, job.fmt)

    @property
    def size(self) -> int:
        """The bytes the kept answers are counted as."""
        return self._bytes

    def get(self, job: QueryJob) -> QueryAnswer | None:
        """The kept answer to `job` if every table it read is still at the version it read, else None."""
        key = self.key(job)
        with self._lock:
            kept = self._answers.get(key)
        if kept is None:
            return None
        answer = kept[0]
        if not self._current(answer):
            with self._lock:
                if self._answers.get(key) is kept:
                    self._drop(key)
            return None
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
        return answer

    def share(self, job: QueryJob, run: Callable[[], QueryAnswer], deadline: float,
              cancel: threading.Event | None = None) -> QueryAnswer:
        """`run()` for `job`, unless an identical job is running: then wait for its answer and take it if it
        may be kept and every table it read is still at that version (else run anyway). Keeps the answer.

        Raises:
            DeadlineExceeded: `deadline` (a `time.monotonic()` value) passed while waiting.
            Cancelled: `cancel` was set while waiting.
            Whatever `run` raises.
        """
        if not self.max_bytes:  # serve_answer_cache = 0: every query runs
            return run()
        key = self.key(job)
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if leading:
            try:
                flight.answer = run()
                self.put(job, flight.answer)
                return flight.answer
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                flight.done.set()
        while not flight.done.wait(max(0.0, min(deadline - time.monotonic(), _CANCEL_POLL_SECONDS))):
            if cancel is not None and cancel.is_set():
                raise Cancelled("the client cancelled the query")
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the query passed its deadline")
        answer = flight.answer
        if answer is not None and answer.status == "ok" and answer.reusable and self._current(answer):
            return answer
        answer = run()
        self.put(job, answer)
        return answer

    def _current(self, answer: QueryAnswer) -> bool:
        return not any(self.store.has_new_version(table, version) for table, version in answer.reads)

    def put(self, job: QueryJob, answer: QueryAnswer) -> None:
        """Keep `answer` to `job` if the worker said it may be kept and it fits."""
        if answer.status != "ok" or not answer.reusable:
            return
        cost = len(answer.body) + len(job.query) + ENTRY_OVERHEAD
        if cost > self.max_bytes // 4:
            return
        key = self.key(job)
        with self._lock:
            if key in self._answers:
                self._drop(key)
            self._answers[key] = (answer, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._answers)))

    def _drop(self, key: tuple) -> None:
        _, cost = self._answers.pop(key)
        self._bytes -= cost


class _Flight:
    """A query running on a worker that identical queries wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: QueryAnswer | None = None
