"""`ops.query_log`: every SQL API request, appended in small batches by one writer thread.

One Delta commit per query would make the log the bottleneck under load (and the table a pile of tiny
files), so entries are queued and a single thread commits them about once a second, and on shutdown.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime

import pyarrow as pa

from shoplake.engines.delta import DeltaStore
from shoplake.layers.ops import QUERY_LOG

log = logging.getLogger(__name__)


@dataclass
class QueryLogEntry:
    """One row of `ops.query_log`."""

    query_id: str
    token_name: str | None
    role: str | None
    started_at: datetime
    query: str
    rows: int
    truncated: bool
    duration_ms: float
    status: str
    error: str | None = None


class QueryLog:
    """Queues entries and appends them to `ops.query_log`."""

    def __init__(self, store: DeltaStore, *, interval_seconds: float = 1.0):
        self.store = store
        self.interval_seconds = interval_seconds
        self._pending: list[QueryLogEntry] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="shoplake-query-log", daemon=True)
            self._thread.start()

    def record(self, entry: QueryLogEntry) -> None:
        with self._lock:
            self._pending.append(entry)

    def flush(self) -> int:
        """Append the queued entries now. Returns how many were written."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            table = pa.Table.from_pylist([asdict(e) for e in batch], schema=QUERY_LOG.arrow_schema)
            try:
                self.store.write(QUERY_LOG.name, table, mode="append", description=QUERY_LOG.description,
                                 meta={"write_key": f"query_log:{batch[0].query_id}", "run_id": "serve"})
            except Exception:
                # Keep the entries for the next attempt rather than lose them (e.g. a full disk).
                log.exception("could not append %d rows to %s; will retry", len(batch), QUERY_LOG.name)
                with self._lock:
                    self._pending[:0] = batch
                return 0
            return len(batch)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
