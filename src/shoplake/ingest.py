"""Ingestion: source files -> `bronze.<source>` (+ `quarantine.<source>` for unparseable rows).

Exactly once per file content: a file's batch id is derived from the SHA-256 of its bytes, and every
write of a batch carries that id as its write key. A command ingests in two phases:

1. **Parse and stage** every file: good rows are written as Parquet files inside the bronze table's
   folder, not yet committed (invisible to readers), by this process or, on an engine with
   `Capability.DISTRIBUTED_INGEST` (Spark), by the engine's workers; unparseable rows are kept for
   quarantine. Either way this process's own line scan must account for every line first. A file
   that cannot be read stops the command before anything is committed, and the staged files go.
2. **Commit** each file under the writer locks of its bronze and quarantine tables: the bronze commit
   (skipped when an earlier, interrupted run made it), then the quarantine commit, which carries the
   batch's ledger entry and marks the batch done. A second process ingesting the same file waits for
   the locks, then finds the batch done and writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shoplake import locks
from shoplake.engines.base import Capability, StagesSources, StreamsSources
from shoplake.errors import SourceFormatError
from shoplake.lake import Lake
from shoplake.quality.ledger import LedgerEntry, ledger_keys
from shoplake.sources import locations
from shoplake.sources.lines import BrokenLine, LineAccount, check_encoding
from shoplake.sources.schemas import Source, get_source

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    """What happened to one file."""

    uri: str
    batch_id: str
    # ingested | skipped (already ingested) | completed (an interrupted ingest finished) | dry-run
    status: str
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


@dataclass
class _Staged:
    """One parsed file, waiting for its commits."""

    prepared: _Prepared
    batch_id: str
    digest: str
    status: str  # new | skipped | bronze-committed | dry-run
    files: list[Path] = field(default_factory=list)
    good_rows: int = 0
    bad: pa.Table | None = None
    seconds: float = 0.0
    physical_lines: int | None = None  # counted by the line scan, independently of the parser

    @property
    def quarantined(self) -> dict[str, int]:
        if self.bad is None or not self.bad.num_rows:
            return {}
        counts = self.bad.group_by("reason").aggregate([("reason", "count")]).to_pylist()
        return {row["reason"]: row["reason_count"] for row in counts}

    def result(self, status: str) -> IngestResult:
        bad = 0 if self.bad is None else self.bad.num_rows
        return IngestResult(self.prepared.uri, self.batch_id, status, self.good_rows + bad, self.good_rows,
                            self.quarantined, self.seconds)


def ingest_files(lake: Lake, source_name: str, paths: Sequence[str], *, run_id: str,
                 on_file: Callable[[IngestResult], None] | None = None,
                 encoding: str = "utf-8", dry_run: bool = False) -> list[IngestResult]:
    """Ingest every file named by `paths` into `bronze.<source>`: all of them, or none.

    Every file is parsed (and checked: header, gzip integrity, readable data) before any is committed,
    so a bad file stops the command with nothing written. With `dry_run`, files are parsed and counted
    but nothing at all is written. `on_file` is called as each file is committed (or counted).
    """
    source = get_source(source_name)
    encoding = check_encoding(encoding)
    uris = locations.expand(paths, lake.settings)
    # Fail fast, before the parse: every local file is checked (and prepared once) up front.
    # A gzip file's integrity (every block, each member's CRC-32 and length) is checked by the line scan,
    # which inflates the whole file before the parse reads a row: no separate pass over it.
    checked = {uri: _prepare(source, uri, Path(uri), encoding) for uri in uris if "://" not in uri}
    if not dry_run:
        lake.repair()
    staged: list[_Staged] = []
    try:
        with lake.engine() as engine:
            for uri in uris:
                with locations.local_copy(uri, lake.settings) as path:
                    prepared = checked.get(uri) or _prepare(source, uri, path, encoding)
                    staged.append(_stage(lake, engine, source, prepared, encoding=encoding, dry_run=dry_run))
    except BaseException as exc:
        for item in staged:
            lake.store.discard(item.files)
        if isinstance(exc, SourceFormatError) and len(uris) > 1:
            raise SourceFormatError(f"{exc}; none of the {len(uris)} files of this command was ingested") from exc
        raise
    results = []
    for item in staged:
        if item.status == "skipped":
            result = item.result("skipped")
        else:
            result = item.result("dry-run") if dry_run else _commit(lake, source, item, run_id=run_id)
        results.append(result)
        if on_file:
            on_file(result)
    if not dry_run:
        # Quarantine and ops tables exist (empty) from the first successful ingest on, for queries.
        lake.ensure_operational_tables()
        lake.sync_ledger([f"quarantine.{source.name}"])
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


def _done(lake: Lake, source: Source, batch_id: str) -> bool:
    """Whether the batch is completely ingested: its quarantine commit (the last) exists."""
    if lake.store.find_write(f"quarantine.{source.name}", f"{batch_id}:ingest") is not None:
        return True
    # Lakes written before the ledger travelled in the commit: the ledger row was the last write.
    return f"ingest:{batch_id}" in ledger_keys(lake.store)


def _stage(lake: Lake, engine, source: Source, prepared: _Prepared, *, encoding: str, dry_run: bool) -> _Staged:
    """Parse one file: stage its good rows as uncommitted bronze files, keep its bad rows."""
    started = time.perf_counter()
    bronze = lake.catalog.get(f"bronze.{source.name}")
    quarantine = lake.catalog.get(f"quarantine.{source.name}")
    digest = locations.content_digest(prepared.path)
    batch_id = f"{source.name}-{digest[:24]}"
    if _done(lake, source, batch_id):  # reads only: a dry run says so too
        log.info("%s: already ingested as batch %s; skipped", prepared.uri, batch_id)
        return _Staged(prepared, batch_id, digest, "skipped")
    bronze_done = not dry_run and lake.store.find_write(bronze.name, batch_id) is not None

    ingested_at = datetime.now(UTC)
    lineage = {"_source_file": prepared.uri, "_batch_id": batch_id, "_ingested_at": ingested_at}
    if Capability.DISTRIBUTED_INGEST in engine.capabilities:
        return _stage_on_workers(lake, cast(StagesSources, engine), source, prepared, batch_id, digest, lineage,
                                 started, encoding=encoding, write=not (bronze_done or dry_run),
                                 status="dry-run" if dry_run else "bronze-committed" if bronze_done else "new")
    reader, account = cast(StreamsSources, engine).read_source(
        prepared.path, prepared.fmt, prepared.header, prepared.mapping, source.columns, display=prepared.uri,
        encoding=encoding)
    splitter = _Splitter(reader, bronze.arrow_schema, source, lineage, account=account)
    files: list[Path] = []
    try:
        if bronze_done or dry_run:
            for _ in splitter.good_batches():  # parse only to count, or to recover the quarantined rows
                pass
        else:
            files = lake.store.stage(bronze.name, splitter.good_batches(), bronze.arrow_schema)
    except (OSError, pa.ArrowException, Exception) as exc:  # the parser fails mid-stream on corrupt input
        account.close()  # the line scan's temporary copies
        if isinstance(exc, SourceFormatError):
            raise
        if splitter.failure:
            raise splitter.failure from exc
        raise SourceFormatError(f"{prepared.uri}: cannot read the {prepared.fmt} file ({_one_line(exc)}); "
                                f"is it truncated or corrupt? nothing was written") from exc
    finally:
        reader.close()  # release DuckDB's stream before the connection goes
    try:
        bad = splitter.quarantine_rows(account(), lineage, quarantine.arrow_schema)
    finally:
        account.close()  # the line scan's temporary copies
    status = "dry-run" if dry_run else "bronze-committed" if bronze_done else "new"
    return _Staged(prepared, batch_id, digest, status, files, splitter.good_rows, bad,
                   time.perf_counter() - started, account.physical_lines)


def _stage_on_workers(lake: Lake, engine: StagesSources, source: Source, prepared: _Prepared, batch_id: str,
                      digest: str, lineage: dict, started: float, *, encoding: str, write: bool,
                      status: str) -> _Staged:
    """`_stage` on an engine whose workers parse the file and write its Bronze files: this process gets
    the counts and the refused rows, and checks them against its own line scan before anything commits."""
    bronze = lake.catalog.get(f"bronze.{source.name}")
    quarantine = lake.catalog.get(f"quarantine.{source.name}")
    staged, account = engine.stage_source(lake.store, bronze, prepared.path, prepared.fmt, prepared.header,
                                          prepared.mapping, source.columns, lineage=lineage, display=prepared.uri,
                                          encoding=encoding, write=write)
    try:
        account.check(staged.readable_rows, prepared.uri)
        bad = quarantine_rows(source, staged.refused.to_batches(), account, account(), lineage,
                              quarantine.arrow_schema)
    except BaseException:
        lake.store.discard(staged.files)
        raise
    finally:
        account.close()  # the line scan's temporary copies
    return _Staged(prepared, batch_id, digest, status, staged.files, staged.good_rows, bad,
                   time.perf_counter() - started, account.physical_lines)


def _commit(lake: Lake, source: Source, item: _Staged, *, run_id: str) -> IngestResult:
    """Commit one staged file: bronze, then quarantine with the ledger entry (the batch's last write)."""
    bronze = lake.catalog.get(f"bronze.{source.name}")
    quarantine = lake.catalog.get(f"quarantine.{source.name}")
    started = time.perf_counter()
    with locks.writing(lake.store.lake, [bronze.name, quarantine.name]):
        if _done(lake, source, item.batch_id):  # another process got there while this one parsed
            lake.store.discard(item.files)
            log.info("%s: ingested meanwhile by another process; skipped", item.prepared.uri)
            return replace(item.result("skipped"), rows_read=0, rows_bronze=0, quarantined={})
        done = lake.store.find_write(bronze.name, item.batch_id)
        if done is None:
            version = lake.store.commit_files(
                bronze.name, item.files, bronze.arrow_schema, mode="append", description=bronze.description,
                meta={"write_key": item.batch_id, "run_id": run_id, "source_file": item.prepared.uri,
                      "sha256": item.digest})
            status = "ingested"
        else:
            lake.store.discard(item.files)  # an interrupted run committed bronze already
            version, status = done.version, "completed"
        quarantined = item.quarantined
        entry = LedgerEntry(run_id=run_id, table_name=bronze.name, write_key=f"ingest:{item.batch_id}",
                            rows_in=item.good_rows + sum(quarantined.values()), rows_out=item.good_rows,
                            diverted={f"quarantine:{k}": v for k, v in quarantined.items()},
                            rows_written=item.good_rows, table_version=version,
                            inputs={"file": item.prepared.uri, "sha256": item.digest, "batch_id": item.batch_id,
                                    "physical_lines": item.physical_lines})
        bad = item.bad if item.bad is not None else quarantine.arrow_schema.empty_table()
        lake.store.write(quarantine.name, bad, mode="append", description=quarantine.description,
                         meta={"write_key": f"{item.batch_id}:ingest", "run_id": run_id, "ledger": entry.as_meta()})
    result = item.result(status)
    result.seconds += time.perf_counter() - started
    return result


class _Splitter:
    """Splits the parser's stream into bronze rows and rows for quarantine, in one pass.

    Before the stream ends it checks, with the file's `LineAccount`, that the parser's rows and refusals
    cover every record the line scan found, so the bronze commit cannot happen with a line unaccounted.
    """

    def __init__(self, reader: pa.RecordBatchReader, bronze_schema: pa.Schema, source: Source, lineage: dict,
                 account: LineAccount | None = None):
        self.reader = reader
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
            rows = pa.array(np.arange(position + 1, position + batch.num_rows + 1, dtype=np.int64))
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
        except SourceFormatError as exc:
            self.failure = exc  # the writer wraps it; the caller re-raises this one
            raise

    def quarantine_rows(self, rejected: list[BrokenLine], lineage: dict, schema: pa.Schema) -> pa.Table:
        """Unparseable rows (typed-value failures and lines refused whole) as quarantine rows."""
        return quarantine_rows(self.source, self._bad, self.account, rejected, lineage, schema)


def quarantine_rows(source: Source, refused: Sequence[pa.RecordBatch], account: LineAccount | None,
                    rejected: list[BrokenLine], lineage: dict, schema: pa.Schema) -> pa.Table:
    """A file's unparseable rows as quarantine rows: `refused` rows (a value that does not parse; with
    `_reason`, `_source_row` and `_raw_<column>`) and the lines refused whole (`rejected`)."""
    now = pa.scalar(datetime.now(UTC), schema.field("_quarantined_at").type)
    parts = []
    for batch in refused:
        n = batch.num_rows
        if not n:
            continue
        columns = {c: batch.column("_raw_" + c) for c in source.column_names}
        if account is not None and account.scan is not None:
            first_lines, spans = account.row_lines(batch.column("_source_row").to_numpy())
            lines, spans = pa.array(first_lines, pa.int64()), pa.array(spans, pa.int64())
        else:  # Parquet: a row is not a line
            lines, spans = pa.nulls(n, pa.int64()), pa.repeat(pa.scalar(1, pa.int64()), n)
        columns.update(_raw_line=pa.nulls(n, pa.string()), _raw_bytes=pa.nulls(n, pa.binary()),
                       reason=batch.column("_reason"), _stage=pa.array(["ingest"] * n), _source_line=lines,
                       _source_lines=spans, _source_row=batch.column("_source_row"))
        parts.append(columns)
    if rejected:
        n = len(rejected)
        encoding = account.scan.encoding if account and account.scan else "utf-8"
        columns = {c: pa.nulls(n, pa.string()) for c in source.column_names}
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
