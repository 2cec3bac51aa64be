"""Shared building blocks of the synthetic data generators.

Everything here is vectorised: rows are formatted as whole Arrow string columns and handed to a
background gzip writer, so that generating and compressing overlap on a multi-core machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ProgressCallback = Callable[[int], None]

# Independent random streams per purpose: changing how many rows one part draws must never shift
# what another part draws (the product catalog in particular must depend on the seed only).
STREAM_CATALOG = 1
STREAM_CLICKSTREAM = 2
STREAM_RETAIL = 3
STREAM_RETAIL_ITEMS = 4
STREAM_DIRTY = 5
STREAM_CLICKSTREAM_EVENTS = 6
STREAM_CLICKSTREAM_AFFINITY = 7

DIRTY_KINDS = (
    "column_count",
    "bad_timestamp",
    "bad_number",
    "missing_id",
    "bad_event_type",
    "duplicate",
)

_EPOCH = dt.datetime(1970, 1, 1)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass(frozen=True)
class GenerationResult:
    """What one call of :func:`shoplake.synth.generate` wrote.

    Attributes:
        source: The generated source (``clickstream``, ``products`` or ``retail``).
        files: The data files written (one gzip CSV).
        rows: Data rows written (header excluded), dirty rows included.
        dirty_rows: Rows replaced by deliberately bad rows, exact duplicates included.
        truth_file: The side file with the planted latent classes, or None for products.
        dirty_by_kind: ``dirty_rows`` broken down by kind (``column_count``, ``bad_timestamp``,
            ``bad_number``, ``missing_id``, ``bad_event_type``, ``duplicate``). Only kinds that
            occur are listed; ``duplicate`` rows are valid rows repeated verbatim.
    """

    source: str
    files: list[Path]
    rows: int
    dirty_rows: int
    truth_file: Path | None
    dirty_by_kind: dict[str, int] = field(default_factory=dict)


TRUTH_FOLDER = "_truth"


def truth_path(out_dir: Path, name: str) -> Path:
    """Where a planted-truth side file goes: ``out_dir/_truth/name``.

    Not next to the data: `shoplake ingest SOURCE out_dir` lists the folder, and a `_`-prefixed folder is
    a side folder it passes by (see `shoplake.sources.locations.visible`).
    """
    folder = out_dir / TRUTH_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def make_rng(seed: int, stream: int) -> np.random.Generator:
    """Returns a PCG64 generator for one purpose, derived from the user seed only."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


def epoch_seconds(day: dt.date) -> int:
    """Returns the Unix time of midnight UTC at the start of ``day``."""
    return int((dt.datetime(day.year, day.month, day.day) - _EPOCH).total_seconds())


def fixed_width_strings(chars: np.ndarray) -> pa.StringArray:
    """Wraps an ``(n, w)`` uint8 matrix of ASCII bytes as an Arrow string array without copying rows."""
    n, width = chars.shape
    data = np.ascontiguousarray(chars)
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def format_timestamps(seconds: np.ndarray, *, suffix: str = "") -> pa.StringArray:
    """Formats Unix seconds as ``YYYY-MM-DD HH:MM:SS`` plus ``suffix``, vectorised.

    Dates come from a small per-day table (the span is short); the clock digits are computed
    arithmetically, which is far faster than strftime on millions of values.
    """
    seconds = np.asarray(seconds, dtype=np.int64)
    n = len(seconds)
    if n == 0:
        return pa.array([], type=pa.string())
    tail = suffix.encode()
    out = np.empty((n, 19 + len(tail)), dtype=np.uint8)
    days = seconds // 86400
    first_day = int(days.min())
    n_days = int(days.max()) - first_day + 1
    table = np.frombuffer(
        b"".join(
            (_EPOCH + dt.timedelta(days=first_day + i)).strftime("%Y-%m-%d").encode() for i in range(n_days)
        ),
        dtype=np.uint8,
    ).reshape(n_days, 10)
    out[:, :10] = table[days - first_day]
    tod = seconds - days * 86400
    hour, rem = np.divmod(tod, 3600)
    minute, sec = np.divmod(rem, 60)
    out[:, 10] = ord(" ")
    out[:, 13] = ord(":")
    out[:, 16] = ord(":")
    for col, value in ((11, hour), (14, minute), (17, sec)):
        out[:, col] = 48 + value // 10
        out[:, col + 1] = 48 + value % 10
    if tail:
        out[:, 19:] = np.frombuffer(tail, dtype=np.uint8)
    return fixed_width_strings(out)


def format_uuids(raw: np.ndarray) -> pa.StringArray:
    """Formats an ``(n, 16)`` uint8 matrix as 8-4-4-4-12 lowercase hex strings."""
    n = raw.shape[0]
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = _HEX[raw >> 4]
    digits[:, 1::2] = _HEX[raw & 15]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, 0:8] = digits[:, 0:8]
    out[:, 9:13] = digits[:, 8:12]
    out[:, 14:18] = digits[:, 12:16]
    out[:, 19:23] = digits[:, 16:20]
    out[:, 24:36] = digits[:, 20:32]
    return fixed_width_strings(out)


def random_uuid_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draws ``n`` random version-4 UUIDs as an ``(n, 16)`` uint8 matrix."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return raw


def format_cents(cents: np.ndarray, *, style: str = "fixed2") -> pa.StringArray:
    """Formats integer cents as decimal strings.

    Args:
        cents: Integer amounts in hundredths (may be negative).
        style: ``fixed2`` always prints two decimals (``33.20``, REES46 style); ``shortest``
            prints like Python's float repr (``2.1``, ``18.0``, ``0.42``, UCI export style).

    Returns:
        A string array.
    """
    cents = np.asarray(cents, dtype=np.int64)
    negative = cents < 0
    whole, frac = np.divmod(np.abs(cents), 100)
    units = pc.cast(pa.array(whole), pa.string())
    if style == "fixed2":
        fractions = pa.array([f".{i:02d}" for i in range(100)])
    elif style == "shortest":
        fractions = pa.array(
            [".0" if i == 0 else f".{i // 10}" if i % 10 == 0 else f".{i:02d}" for i in range(100)]
        )
    else:
        raise ValueError(f"unknown cents style {style!r}: expected 'fixed2' or 'shortest'")
    text = pc.binary_join_element_wise(units, fractions.take(pa.array(frac)), "")
    if negative.any():
        text = pc.if_else(pa.array(negative), pc.binary_join_element_wise("-", text, ""), text)
    return text


def csv_quote(value: str) -> str:
    """Quotes one CSV field the way Python's csv module and the UCI export do (only when needed)."""
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def join_lines(columns: Sequence[pa.Array | pa.Scalar | str]) -> pa.StringArray:
    """Joins pre-formatted, pre-quoted field columns into CSV lines (no line terminator)."""
    return pc.binary_join_element_wise(*columns, ",")


def fit_total(counts: np.ndarray, minimums: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Rescales integer counts so they sum exactly to ``target`` while staying ``>= minimums``.

    The part above the minimum is scaled proportionally, so the shape of the distribution (heavy
    tails, differences between latent classes) survives; the rounding remainder goes to random
    entries. The caller guarantees ``minimums.sum() <= target``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    minimums = np.asarray(minimums, dtype=np.int64)
    if int(counts.sum()) == target:
        return counts
    need = target - int(minimums.sum())
    if need < 0 or (need > 0 and len(counts) == 0):
        raise ValueError(
            f"cannot fit {int(minimums.sum())} required units in {len(counts)} entries into {target}"
        )
    extra = counts - minimums
    total_extra = int(extra.sum())
    scaled = (extra * (need / total_extra)).astype(np.int64) if total_extra > 0 else np.zeros_like(extra)
    scaled = np.minimum(scaled, need)
    remainder = need - int(scaled.sum())
    n = len(counts)
    while remainder > 0:
        step = min(remainder, n)
        np.add.at(scaled, rng.choice(n, size=step, replace=False), 1)
        remainder -= step
    while remainder < 0:
        # Only reachable through floating error: take the surplus back from the largest entries.
        idx = int(np.argmax(scaled))
        take = min(-remainder, int(scaled[idx]))
        scaled[idx] -= take
        remainder += take
    return minimums + scaled


def stratified_flags(rng: np.random.Generator, n: int, share: float, block: int = 100) -> np.ndarray:
    """Returns ``n`` booleans with exactly ``round(share * block)`` True in every block of ``block``.

    Used on popularity-ranked items so that an attribute (say an empty brand) keeps its share at
    the event level too, instead of depending on whether the few most popular items got it.
    """
    per_block = int(round(share * block))
    n_blocks = -(-n // block)
    keys = rng.random((n_blocks, block))
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    return (ranks < per_block).reshape(-1)[:n]


def plain_array(values: Sequence[str]) -> pa.StringArray:
    """Builds a string array from a small Python list."""
    return pa.array(list(values), type=pa.string())


class GzipLineWriter:
    """Writes CSV text to a deterministic gzip file from a background thread.

    The gzip header carries no file name and mtime 0, so identical content gives identical bytes.
    Compression runs in a worker thread (zlib releases the GIL), overlapping with generation.
    """

    def __init__(self, path: Path, header: str, *, compresslevel: int = 1) -> None:
        self._path = path
        self._raw = open(path, "wb")  # closed in close() or abort()
        self._gzip = gzip.GzipFile(
            filename="", fileobj=self._raw, mode="wb", compresslevel=compresslevel, mtime=0
        )
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=f"gzip-{path.name}", daemon=True)
        self._thread.start()
        self._put((header + "\n").encode())

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                self._gzip.write(item)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def _put(self, item: Any) -> None:
        if self._error is not None:
            raise OSError(f"writing {self._path} failed: {self._error}") from self._error
        self._queue.put(item)

    def write_lines(self, lines: pa.StringArray) -> None:
        """Queues CSV lines (without terminators); each gets a trailing LF."""
        if len(lines) == 0:
            return
        terminated = pc.binary_join_element_wise(lines, pa.scalar(""), "\n")
        if terminated.null_count:
            raise ValueError("internal error: a CSV line is null")
        offsets = np.frombuffer(terminated.buffers()[1], dtype=np.int32)
        first = int(offsets[terminated.offset])
        last = int(offsets[terminated.offset + len(terminated)])
        # A memoryview of the Arrow buffer avoids copying ~100 MB per chunk; the queue keeps the
        # array alive until the worker has compressed it.
        self._put(memoryview(terminated.buffers()[2])[first:last])

    def close(self) -> None:
        """Flushes, finishes the gzip stream and closes the file; re-raises a worker error."""
        self._queue.put(None)
        self._thread.join()
        try:
            self._gzip.close()
        finally:
            self._raw.close()
        if self._error is not None:
            raise OSError(f"writing {self._path} failed: {self._error}") from self._error

    def abort(self) -> None:
        """Stops the worker after a failure elsewhere and removes the incomplete file."""
        self._queue.put(None)
        self._thread.join()
        # The file is deleted anyway and the caller's exception is the one that matters.
        with contextlib.suppress(OSError):
            self._gzip.close()
        self._raw.close()
        self._path.unlink(missing_ok=True)

    def __enter__(self) -> GzipLineWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class DirtyInjector:
    """Replaces a share of rows with realistic bad rows, chunk by chunk, and counts them by kind.

    Each source gives its field builder (the separate CSV fields of chosen rows) and which kinds
    make sense for it; the injector picks rows, breaks them and splices the bad lines back in.
    """

    def __init__(
        self,
        *,
        fraction: float,
        seed: int,
        kinds: Sequence[str],
        breakers: dict[str, Callable[[list[pa.Array], np.ndarray, np.random.Generator], None]],
    ) -> None:
        self.fraction = fraction
        self.kinds = tuple(kinds)
        self.counts: dict[str, int] = {kind: 0 for kind in self.kinds}
        self._breakers = breakers
        self._rng = make_rng(seed, STREAM_DIRTY)

    @property
    def total(self) -> int:
        """Number of dirty rows injected so far."""
        return sum(self.counts.values())

    def by_kind(self) -> dict[str, int]:
        """Counts per kind, leaving out kinds that never occurred."""
        return {kind: count for kind, count in self.counts.items() if count}

    def apply(
        self, lines: pa.StringArray, fields_of: Callable[[np.ndarray], list[pa.Array]]
    ) -> pa.StringArray:
        """Returns ``lines`` with about ``fraction`` of them replaced by dirty rows.

        Args:
            lines: Clean CSV lines of one chunk.
            fields_of: Builds the list of separate, formatted fields for given row positions.

        Returns:
            The chunk's lines with dirty rows spliced in.
        """
        n = len(lines)
        if self.fraction <= 0 or n == 0:
            return lines
        rng = self._rng
        k = int(rng.binomial(n, self.fraction))
        if k == 0:
            return lines
        positions = np.sort(rng.choice(n, size=k, replace=False))
        kinds = rng.integers(0, len(self.kinds), size=k)
        dirty = np.zeros(n, dtype=bool)
        dirty[positions] = True
        if "duplicate" in self.kinds:
            dup_code = self.kinds.index("duplicate")
            # A duplicate must repeat a clean row, or it would be counted twice (as its own kind
            # and as a duplicate) by anyone checking the file.
            bad_dup = (kinds == dup_code) & ((positions == 0) | dirty[np.maximum(positions - 1, 0)])
            kinds[bad_dup] = (dup_code + 1 + rng.integers(0, len(self.kinds) - 1, int(bad_dup.sum()))) % len(
                self.kinds
            )
        new_lines = lines
        for code, kind in enumerate(self.kinds):
            chosen = positions[kinds == code]
            if len(chosen) == 0:
                continue
            self.counts[kind] += len(chosen)
            if kind == "duplicate":
                continue
            fields = fields_of(chosen)
            if kind == "column_count":
                broken = self._column_count_lines(fields, rng)
            else:
                self._breakers[kind](fields, chosen, rng)
                broken = join_lines(fields)
            mask = np.zeros(n, dtype=bool)
            mask[chosen] = True
            new_lines = pc.replace_with_mask(new_lines, pa.array(mask), broken)
        if "duplicate" in self.kinds:
            dup = positions[kinds == self.kinds.index("duplicate")]
            if len(dup):
                take = np.arange(n)
                take[dup] = dup - 1
                new_lines = new_lines.take(pa.array(take))
        return new_lines

    def _column_count_lines(self, fields: list[pa.Array], rng: np.random.Generator) -> pa.Array:
        """A row that lost its last field or gained an extra one (a truncated or shifted export)."""
        k = len(fields[0])
        short = join_lines(fields[:-1])
        long = join_lines([*fields, pa.scalar("extra")])
        return pc.if_else(pa.array(rng.random(k) < 0.5), short, long)


def replace_field(fields: list[pa.Array], index: int, values: pa.Array | str) -> None:
    """Replaces field ``index`` of the chosen rows (in place in the list) by a value or an array."""
    if isinstance(values, str):
        values = pa.array([values] * len(fields[index]), type=pa.string())
    fields[index] = values


def choose_strings(rng: np.random.Generator, options: Sequence[str], k: int) -> pa.Array:
    """Picks ``k`` strings from ``options`` uniformly."""
    return plain_array(options).take(pa.array(rng.integers(0, len(options), size=k)))
