"""`ops.query_log`: every SQL API request, appended in small batches by one writer thread.

One Delta commit per query would make the log the bottleneck under load (and the table a pile of tiny
files), so entries are queued and a single thread commits them about once a second, and on shutdown.

The log never stops silently: when an append fails the entries stay queued, `healthy` turns False (the
query service then refuses queries and the health page says why) until an append succeeds again. Entries
that still cannot be written at shutdown go to a local journal (JSON lines next to the tokens file), which
the next server start replays into the table before it accepts a query.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from shoplake import locks
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

    def __init__(self, store: DeltaStore, *, interval_seconds: float = 1.0, journal: Path | None = None):
        self.store = store
        self.interval_seconds = interval_seconds
        self.journal = journal
        self.last_error: str | None = None
        self._pending: list[QueryLogEntry] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def healthy(self) -> bool:
        """False while the last append failed (entries are kept and retried)."""
        return self.last_error is None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def start(self) -> None:
        self._replay_journal()
        if self._thread is None:
            self._stop.clear()
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
            try:
                _append(self.store, batch)
            except Exception as exc:  # any failure (full disk, a broken log, a lock) keeps the entries
                self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
                log.warning("could not append %d rows to %s (%s); will retry", len(batch), QUERY_LOG.name,
                            self.last_error)
                with self._lock:
                    self._pending[:0] = batch
                return 0
            self.last_error = None
            return len(batch)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.flush()

    def close(self) -> None:
        """Stop the writer thread and write what is queued (to the journal if the table refuses it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
        with self._lock:
            left, self._pending = self._pending, []
        if left and self.journal is not None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with self.journal.open("a", encoding="utf-8") as out:
                for entry in left:
                    out.write(json.dumps(asdict(entry), default=str) + "\n")
            log.warning("wrote %d query log entries to %s; the next start replays them", len(left), self.journal)
        elif left:
            log.error("%d query log entries could not be written: %s", len(left), self.last_error)

    def _replay_journal(self) -> None:
        if self.journal is None or not self.journal.is_file():
            return
        entries = []
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            if line.strip():
                fields = json.loads(line)
                fields["started_at"] = datetime.fromisoformat(fields["started_at"])
                entries.append(QueryLogEntry(**fields))
        with self._lock:
            self._pending[:0] = entries
        # Queued now: `close` journals them again if they still cannot be written.
        self.journal.unlink()
        self.flush()


_LOCK_WAIT_SECONDS = 10.0


def _append(store: DeltaStore, batch: list[QueryLogEntry]) -> None:
    """The one place that writes `ops.query_log`, under the table's writer lock.

    The server does not wait long for the lock (a maintenance command may hold it): on a timeout the
    entries stay queued and the next flush tries again, as for any other write failure.
    """
    table = pa.Table.from_pylist([asdict(e) for e in batch], schema=QUERY_LOG.arrow_schema)
    with locks.writing(store.lake, [QUERY_LOG.name], wait_seconds=_LOCK_WAIT_SECONDS):
        store.write(QUERY_LOG.name, table, mode="append", description=QUERY_LOG.description,
                    meta={"write_key": f"query_log:{batch[0].query_id}", "run_id": "serve"})
