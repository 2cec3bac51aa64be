"""Answers the query service keeps for repeated queries, until a table they read has a new version.

A dashboard or a BI tool in DirectQuery mode sends the same queries again and again; between two commits of
the tables they read, the answer is the same bytes. The service keeps a worker's answer under the job (the
query text, dialect and parameters, the role's layers, the limit, the caps, the format) together with the
version of every table the query read. A later identical job gets it back only if none of those tables has a
newer version (one or two `stat` calls per table, `DeltaStore.has_new_version`), so an answer is exactly
what running the query again would give. The worker says which answers may be kept: never one that reads
the clock or chance (`shoplake.serve.allowlist.is_deterministic`), nor one of the PostgreSQL endpoint's
emulated catalog.

Only the worker's work is saved: the service still admits a repeated query under the token's rate and
concurrency limits and writes it to `ops.query_log`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from shoplake.engines.delta import DeltaStore
from shoplake.serve.worker import QueryAnswer, QueryJob

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
        if any(self.store.has_new_version(table, version) for table, version in answer.reads):
            with self._lock:
                if self._answers.get(key) is kept:
                    self._drop(key)
            return None
        with self._lock:
            if key in self._answers:
                self._answers.move_to_end(key)
        return answer

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
