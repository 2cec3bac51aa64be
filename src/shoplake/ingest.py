"""Ingestion: source files -> `bronze.<source>` (+ `quarantine.<source>` for unparseable rows).

Exactly once per file content: a file's batch id is derived from the SHA-256 of its bytes, and every
write of a batch carries that id as its write key. A file is done once its ledger entry exists; a run
killed between the bronze write and the ledger entry is completed (not repeated) by the next ingest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoplake.errors import SourceFormatError
from shoplake.lake import Lake
from shoplake.quality.ledger import LedgerEntry, record_entries, recorded_keys
from shoplake.sources import locations
from shoplake.sources.lines import BrokenLine, LineAccount, check_encoding
from shoplake.sources.schemas import Source, get_source

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What happened to one file."""

    uri: str
    batch_id: str
    status: str  # ingested | skipped (already ingested) | completed (an interrupted ingest finished)
    rows_read: int = 0
    rows_bronze: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())


@dataclass(frozen=True)
class _Prepared:
    uri: str
    path: Path
    fmt: str
    header: list[str]
    mapping: dict[str, str]
    gzip_verified: bool = False


def ingest_files(lake: Lake, source_name: str, paths: Sequence[str], *, run_id: str,
                 on_file: Callable[[IngestResult], None] | None = None,
                 encoding: str = "utf-8") -> list[IngestResult]:
    """Ingest every file named by `paths` into `bronze.<source>`.

    Local files are all checked (exist, not empty, header and, when there are several, gzip integrity)
    before anything is written, so a bad file in a folder stops the command with nothing written. Each
    file is then its own atomic batch. A single gzip file is verified while it is parsed instead, which
    keeps one read of a large file off the critical path; it is still refused before its commit.
    """
    source = get_source(source_name)
    encoding = check_encoding(encoding)
    uris = locations.expand(paths, lake.settings)
    # Fail fast, before any write: every local file is checked (and prepared once) up front.
    checked = {uri: _prepare(source, uri, Path(uri), encoding) for uri in uris if "://" not in uri}
    gzipped = [p for p in checked.values() if p.fmt == "csv.gz"]
    if len(uris) > 1 and gzipped:
        waits = [locations.start_gzip_check(p.path, display=p.uri) for p in gzipped]  # run side by side
        for wait in waits:
            wait()
        checked = {uri: replace(p, gzip_verified=True) for uri, p in checked.items()}
    results = []
    with lake.engine() as engine:
        for uri in uris:
            with locations.local_copy(uri, lake.settings) as path:
                prepared = checked.get(uri) or _prepare(source, uri, path, encoding)
                result = _ingest_one(lake, engine, source, prepared, run_id=run_id, encoding=encoding)
            results.append(result)
            if on_file:
                on_file(result)
    # Quarantine and ops tables exist (empty) from the first successful ingest on, for queries.
    lake.ensure_operational_tables()
    return results


def _prepare(source: Source, uri: str, path: Path, encoding: str = "utf-8") -> _Prepared:
    fmt = locations.file_format(uri)
    if fmt == "parquet":
        try:
            header = pq.read_schema(path).names
        except (OSError, pa.ArrowInvalid) as exc:
            raise SourceFormatError(f"{uri}: not a readable parquet file: {exc}") from exc
    else:
        header = locations.read_csv_header(path, fmt, display=uri, encoding=encoding)
    variant = source.match_header(header, file=uri)
    mapping = {found: variant[found.strip()] for found in header}
    return _Prepared(uri, path, fmt, header, mapping)


def _ingest_one(lake: Lake, engine, source: Source, prepared: _Prepared, *, run_id: str,
                encoding: str = "utf-8") -> IngestResult:
    started = time.perf_counter()
    bronze = lake.catalog.get(f"bronze.{source.name}")
    quarantine = lake.catalog.get(f"quarantine.{source.name}")
    digest = locations.content_digest(prepared.path)
    batch_id = f"{source.name}-{digest[:24]}"
    ledger_key = f"ingest:{batch_id}"
    if recorded_keys(engine, lake.store, [ledger_key]):
        log.info("%s: already ingested as batch %s; skipped", prepared.uri, batch_id)
        return IngestResult(prepared.uri, batch_id, "skipped")
    bronze_done = lake.store.find_write(bronze.name, batch_id) is not None

    ingested_at = datetime.now(UTC)
    lineage = {"_source_file": prepared.uri, "_batch_id": batch_id, "_ingested_at": ingested_at}
    reader, rejects = engine.read_source(prepared.path, prepared.fmt, prepared.header, prepared.mapping,
                                         source.columns, display=prepared.uri, encoding=encoding)
    # A truncated gzip is detected by a check that runs alongside the parse; the bronze stream waits
    # for it before its last batch, so a corrupt file aborts the write before the commit.
    gzip_ok = (locations.start_gzip_check(prepared.path, display=prepared.uri)
               if prepared.fmt == "csv.gz" and not prepared.gzip_verified else None)
    splitter = _Splitter(reader, bronze.arrow_schema, source, lineage, before_end=gzip_ok, account=rejects)
    parsed = False
    try:
        if bronze_done:
            for _ in splitter.good_batches():  # re-parse only to recover the quarantined rows
                pass
        else:
            lake.store.write(bronze.name, pa.RecordBatchReader.from_batches(bronze.arrow_schema,
                                                                             splitter.good_batches()),
                             mode="append", description=bronze.description,
                             meta={"write_key": batch_id, "run_id": run_id, "source_file": prepared.uri,
                                   "sha256": digest})
        parsed = True
    except (OSError, pa.ArrowException, Exception) as exc:  # the parser fails mid-stream on corrupt input
        if isinstance(exc, SourceFormatError):
            raise
        if splitter.failure:
            raise splitter.failure from exc
        raise SourceFormatError(f"{prepared.uri}: cannot read the {prepared.fmt} file ({_one_line(exc)}); "
                                f"is it truncated or corrupt? nothing was written") from exc
    finally:
        reader.close()  # release DuckDB's stream before the connection goes
        if not parsed:
            rejects.close()  # the line scan's temporary copies

    try:
        bad = splitter.quarantine_rows(rejects(), lineage, quarantine.arrow_schema)
    finally:
        rejects.close()  # the line scan's temporary copies
    quarantined: dict[str, int] = {}
    if bad.num_rows:
        for row in bad.group_by("reason").aggregate([("reason", "count")]).to_pylist():
            quarantined[row["reason"]] = row["reason_count"]
        quarantine_key = f"{batch_id}:ingest"
        if lake.store.find_write(quarantine.name, quarantine_key) is None:
            lake.store.write(quarantine.name, bad, mode="append", description=quarantine.description,
                             meta={"write_key": quarantine_key, "run_id": run_id})
    rows_read = splitter.good_rows + bad.num_rows
    entry = LedgerEntry(run_id=run_id, table_name=bronze.name, write_key=ledger_key, rows_in=rows_read,
                        rows_out=splitter.good_rows, diverted={f"quarantine:{k}": v for k, v in quarantined.items()},
                        rows_written=splitter.good_rows, table_version=lake.store.version(bronze.name),
                        inputs={"file": prepared.uri, "sha256": digest, "batch_id": batch_id})
    record_entries(lake.store, [entry])
    return IngestResult(prepared.uri, batch_id, "completed" if bronze_done else "ingested", rows_read,
                        splitter.good_rows, quarantined, time.perf_counter() - started)


class _Splitter:
    """Splits the parser's stream into bronze rows and rows for quarantine, in one pass.

    Before the stream ends it checks, with the file's `LineAccount`, that the parser's rows and refusals
    cover every record the line scan found, so the bronze commit cannot happen with a line unaccounted.
    """

    def __init__(self, reader: pa.RecordBatchReader, bronze_schema: pa.Schema, source: Source, lineage: dict,
                 before_end: Callable[[], None] | None = None, account: LineAccount | None = None):
        self.reader = reader
        self.before_end = before_end
        self.account = account
        self.failure: SourceFormatError | None = None
        # Constant lineage columns are added here, not by the engine: repeating a scalar is far cheaper
        # than the engine materialising the same string for every row.
        self.lineage = {k: pa.scalar(v, bronze_schema.field(k).type) for k, v in lineage.items()}
        self.bronze_schema = bronze_schema
        self.source = source
        self.good_rows = 0
        self._bad: list[pa.RecordBatch] = []
        scan = account.scan if account else None
        # Only a file with quoted line breaks has rows spanning several lines: count them only then.
        self._text_columns = ([c.name for c in source.columns if c.type == "VARCHAR"]
                              if scan is not None and scan.multiline_records else [])

    def _spans(self, batch: pa.RecordBatch) -> pa.Array:
        spans = pa.repeat(pa.scalar(1, pa.int64()), batch.num_rows)
        for name in self._text_columns:
            breaks = pc.fill_null(pc.count_substring(batch.column(name), "\n"), 0)
            spans = pc.add(spans, pc.cast(breaks, pa.int64()))
        return spans

    def good_batches(self) -> Iterator[pa.RecordBatch]:
        names = self.bronze_schema.names
        position = 0
        for batch in self.reader:
            # Number rows in stream order: the position among the file's readable rows.
            rows = pa.array(range(position + 1, position + batch.num_rows + 1), pa.int64())
            position += batch.num_rows
            batch = batch.append_column("_source_row", rows).append_column("_source_lines", self._spans(batch))
            for name, value in self.lineage.items():
                batch = batch.append_column(name, pa.repeat(value, batch.num_rows))
            invalid = pc.is_valid(batch.column("_reason"))
            if pc.any(invalid).as_py():
                self._bad.append(batch.filter(invalid))
                batch = batch.filter(pc.invert(invalid))
            if batch.num_rows:
                self.good_rows += batch.num_rows
                yield pa.RecordBatch.from_arrays([batch.column(n) for n in names], schema=self.bronze_schema)
        try:
            if self.account is not None:
                self.account.check(position, self.lineage["_source_file"].as_py())
            if self.before_end:
                self.before_end()
        except SourceFormatError as exc:
            self.failure = exc  # the writer wraps it; the caller re-raises this one
            raise

    def quarantine_rows(self, rejected: list[BrokenLine], lineage: dict, schema: pa.Schema) -> pa.Table:
        """Unparseable rows (typed-value failures and lines refused whole) as quarantine rows."""
        now = pa.scalar(datetime.now(UTC), schema.field("_quarantined_at").type)
        parts = []
        for batch in self._bad:
            n = batch.num_rows
            columns = {c: batch.column("_raw_" + c) for c in self.source.column_names}
            if self.account is not None and self.account.scan is not None:
                first_lines, spans = self.account.row_lines(batch.column("_source_row").to_numpy())
                lines, spans = pa.array(first_lines, pa.int64()), pa.array(spans, pa.int64())
            else:  # Parquet: a row is not a line
                lines, spans = pa.nulls(n, pa.int64()), pa.repeat(pa.scalar(1, pa.int64()), n)
            columns.update(_raw_line=pa.nulls(n, pa.string()), _raw_bytes=pa.nulls(n, pa.binary()),
                           reason=batch.column("_reason"), _stage=pa.array(["ingest"] * n), _source_line=lines,
                           _source_lines=spans, _source_row=batch.column("_source_row"))
            parts.append(columns)
        if rejected:
            n = len(rejected)
            encoding = self.account.scan.encoding if self.account and self.account.scan else "utf-8"
            columns = {c: pa.nulls(n, pa.string()) for c in self.source.column_names}
            columns.update(_raw_line=pa.array([_as_text(r.raw, encoding) for r in rejected], pa.string()),
                           _raw_bytes=pa.array([r.raw for r in rejected], pa.binary()),
                           reason=pa.array([r.reason for r in rejected], pa.string()),
                           _stage=pa.array(["ingest"] * n),
                           _source_line=pa.array([r.line for r in rejected], pa.int64()),
                           _source_lines=pa.array([r.lines for r in rejected], pa.int64()),
                           _source_row=pa.nulls(n, pa.int64()))
            parts.append(columns)
        tables = []
        for columns in parts:
            n = len(columns["reason"])
            columns.update(
                _source_file=pa.array([lineage["_source_file"]] * n, pa.string()),
                _batch_id=pa.array([lineage["_batch_id"]] * n, pa.string()),
                _ingested_at=pa.array([lineage["_ingested_at"]] * n, schema.field("_ingested_at").type),
                _quarantined_at=pa.array([now.as_py()] * n, schema.field("_quarantined_at").type))
            tables.append(pa.Table.from_pydict(columns).select(schema.names).cast(schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _as_text(raw: bytes, encoding: str) -> str | None:
    """A refused line as text, when its bytes decode (and hold no NUL); else only `_raw_bytes` keeps it."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        return None
    return None if "\0" in text else text


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
