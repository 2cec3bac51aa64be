"""The embedded engine: DuckDB over Delta tables (read through their Parquet files), in process.

Catalog names (`silver.events`) are bound as views in schemas of an in-memory DuckDB database, so the
declared SQL runs unchanged. A view reads exactly the files of one Delta snapshot, which gives every
query a single committed version of each table while writers go on (readers never lock the lake).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import sqlglot
from sqlglot import exp

from shoplake.catalog.spec import TableSpec
from shoplake.config import Settings
from shoplake.engines.base import Capability, part_filter, part_of
from shoplake.engines.delta import DeltaStore
from shoplake.engines.scratch import session_folder
from shoplake.errors import EngineMemoryError, QueryError, SourceFormatError
from shoplake.sources.lines import MAX_LINE_BYTES, LineAccount, scan_csv, write_parse_input
from shoplake.sources.schemas import SourceColumn, judge_sql

log = logging.getLogger(__name__)

BATCH_ROWS = 256 * 1024
# How far ahead a streamed source parse may run (in memory): a few of its batches
STREAM_BUFFER = "64MB"


def _quote_ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def _files_scan(uris: Sequence[str], *, folders_are_partitions: bool = True) -> exp.Expression:
    files = exp.Array(expressions=[exp.Literal.string(u) for u in uris])
    # By name: files written before a column was added to the table lack it (read as NULL).
    options = [exp.EQ(this=exp.column("union_by_name"), expression=exp.true())]
    if not folders_are_partitions:  # a folder named key=value adds no column `key`
        options.append(exp.EQ(this=exp.column("hive_partitioning"), expression=exp.false()))
    return exp.Anonymous(this="read_parquet", expressions=[files, *options])


# Input rows per GB of memory_limit in one part of a split build (`parts_for`): 2GB gives 2.05M-row parts.
# Small parts sort their rows for the write faster: the product funnel entries of 10M events took
# 56.2 / 58.6 s in 2 parts (at 4M rows per GB) and 45.8 / 47.1 s in 5 (alternating runs), with less memory
# (max RSS 2.44 -> 1.60 GB; bench/RESULTS.md). Below a part's size a split only adds the buckets' write
# and a second pass: the demo's 2M events build in 21.3-23.2 s whole against 23.5-25.6 s in 2 parts.
SPLIT_ROWS_PER_GB = 1_100_000
# The share of memory_limit a write of stored rows runs under (`write_table(scans_stored=True)`): the Delta
# writer buffers row groups outside DuckDB's limit. Writing the product funnel entries of 10M events (two
# sorted parts) peaked at 2,995 MiB at the full 2GB limit and at 2,092 MiB at 1GB (bench/RESULTS.md).
WRITE_MEMORY_SHARE = 0.5
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGT]?)(i?)B\s*$", re.IGNORECASE)


def _size_bytes(text: str) -> int:
    """DuckDB's size setting text ('1.8 GiB', '2GB', '500 MB') in bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, prefix, binary = match.groups()
    base = 1024 if binary else 1000
    return int(float(number) * base ** " KMGT".index(prefix.upper() or " "))


_SPILL_PREFIX = "duckdb-"


class DuckDBEngine:
    """Runs declared SQL on DuckDB; reads Delta snapshots; streams results as Arrow."""

    name = "duckdb"
    capabilities = frozenset({Capability.EMBEDDED_SQL})

    def __init__(self, settings: Settings, store: DeltaStore):
        self.settings = settings
        self.store = store
        # Timestamps are UTC throughout. The wheel links ICU, which would otherwise parse, cast and
        # extract TIMESTAMPTZ values in the machine's local time zone: pin the session to UTC.
        config: dict[str, Any] = {}
        if settings.threads:
            config["threads"] = settings.threads
        if settings.memory_limit:
            config["memory_limit"] = settings.memory_limit
        # A folder of this session's own: DuckDB names its spill files by block size and number only, so two
        # processes spilling into one folder overwrote and deleted each other's files.
        self._spill_dir = session_folder(Path(settings.spill_dir or Path(tempfile.gettempdir()) / "shoplake-spill"),
                                         _SPILL_PREFIX)
        config["temp_directory"] = str(self._spill_dir)
        # memory_limit bounds DuckDB's buffer pool, not what its allocator keeps after a query frees it: a
        # build of several large tables in one session kept ~0.8 GB over the limit (10M events: peak 3.5 GiB
        # at a 2GB limit). Returning freed memory to the OS in the background keeps the peak at 2.7 GiB.
        config["allocator_background_threads"] = True
        config["allocator_flush_threshold"] = "32MB"
        self.con = duckdb.connect(config=config)
        # Builds never depend on row order, and not keeping it lets large aggregations spill and
        # stream; ingestion turns it back on, because it numbers rows in file order.
        self.con.execute("SET preserve_insertion_order = false")
        self.con.execute("SET TimeZone = 'UTC'")
        # The CLI shows its own progress; DuckDB's bar would write into query output.
        self.con.execute("SET enable_progress_bar = false")
        self._schemas: set[str] = set()
        self._arrow: dict[str, pa.Table | pads.Dataset] = {}
        self._sandboxed = False
        # The version each view bound by `bind_latest` reads (None: the table did not exist yet).
        self._latest: dict[str, int | None] = {}
        # Snapshots written out by part for split builds (`bind_part`): (table, version, column, count) -> folder.
        self._buckets: dict[tuple[str, int | None, str, int], Path] = {}

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self._spill_dir, ignore_errors=True)

    def sandbox(self, *, spill_limit: str | None = None) -> None:
        """Forbid this session any file, network or settings access, for good.

        Used for untrusted SQL (the SQL API). Tables bound afterwards are registered as Arrow datasets over
        exactly the files of their snapshot, read by Arrow, so DuckDB itself needs to open no file: a query
        that slipped past the allow-list can read no other table, no secret and no file, cannot write one
        (not even DuckDB's own log), install an extension or change the settings back, because the
        configuration is locked afterwards. Spilling still works: the temp directory is the engine's own,
        bounded by `spill_limit` (a runaway join can otherwise write tens of GB before any deadline).
        """
        if spill_limit:
            self.con.execute("SET max_temp_directory_size = ?", [spill_limit])
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET autoinstall_known_extensions = false")
        self.con.execute("SET autoload_known_extensions = false")
        self.con.execute("SET lock_configuration = true")
        self._sandboxed = True

    def interrupt(self) -> None:
        """Stop the query running on this session (safe to call from another thread)."""
        self.con.interrupt()

    def __enter__(self) -> DuckDBEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- binding catalog names -------------------------------------------------------------------
    def _ensure_schema(self, schema: str) -> None:
        if schema not in self._schemas:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote_ident(schema)}")
            self._schemas.add(schema)

    def bind(self, spec: TableSpec, *, version: int | datetime | None = None, where: str | None = None,
             view: str | None = None, batches: Sequence[str] | None = None) -> int | None:
        """Make `spec.name` (or `view`, a `schema.name`) queryable as one Delta snapshot.

        Args:
            version: a table version or timestamp to read (time travel); default the latest.
            where: a declared SQL filter applied to the view (a spec's `owns_rows`).
            view: bind under another name (used for time-travelled references).
            batches: only the rows of these `_batch_id`s (the batches an incremental build reads); the
                ids are data, bound as a relation, never spliced into SQL.

        Returns the bound version, or None when the table does not exist yet (bound empty).
        """
        schema, short = (view or spec.name).split(".", 1)
        self._ensure_schema(schema)
        self._latest.pop(view or spec.name, None)
        bound_version: int | None = None
        absent: list[str] = []
        if self.store.exists(spec.name):
            table = self.store.open(spec.name, version)
            bound_version = table.version()
            uris = table.file_uris()
            # A lake written before a column was declared: the snapshot lacks it; it reads as NULL.
            present = set(table.schema().to_arrow().names)
            absent = [f"CAST(NULL AS {c.type}) AS {_quote_ident(c.name)}" for c in spec.columns
                      if c.name not in present]
        else:
            uris = []
        if uris and self._sandboxed:
            dataset_name = f"__dataset__{schema}__{short}"
            self._arrow[dataset_name] = pads.dataset(uris, format="parquet")
            self.con.register(dataset_name, self._arrow[dataset_name])
            select_sql = f"SELECT * FROM {_quote_ident(dataset_name)}"
        elif uris:
            query = sqlglot.select("*").from_(_files_scan(uris))
            select_sql = query.sql(dialect="duckdb")
            if absent:
                select_sql = f"SELECT *, {', '.join(absent)} FROM ({select_sql}) AS t"
        else:
            # No data files yet: bind an empty relation with the declared schema.
            empty_name = f"__empty__{schema}__{short}"
            self._arrow[empty_name] = spec.arrow_schema.empty_table()
            self.con.register(empty_name, self._arrow[empty_name])
            select_sql = f"SELECT * FROM {_quote_ident(empty_name)}"
        if batches is not None:
            batches_name = f"__batches__{schema}__{short}"
            self._arrow[batches_name] = pa.table({"_batch_id": pa.array(list(batches), pa.string())})
            self.con.register(batches_name, self._arrow[batches_name])
            select_sql = (f"SELECT * FROM ({select_sql}) AS t WHERE _batch_id IN "
                          f"(SELECT _batch_id FROM {_quote_ident(batches_name)})")
        if where:
            select_sql = f"SELECT * FROM ({select_sql}) AS t WHERE {where}"
        self.con.execute(f"CREATE OR REPLACE VIEW {_quote_ident(schema)}.{_quote_ident(short)} AS {select_sql}")
        return bound_version

    def bind_part(self, spec: TableSpec, *, version: int | None, column: str, count: int, index: int) -> None:
        """Bind `spec.name` to one part of a snapshot, read from the snapshot's rows written once into
        `count` buckets by part (Parquet in this session's spill folder, deleted when the session closes).

        A filter of the whole snapshot would read all of it for every part: N parts, N times the input,
        which grows with the square of the data. On 42M events in 6 parts, a part's filtered scan of
        `silver.events` took 7.4-7.7 s, the scan of its bucket 1.3 s (bench/RESULTS.md). The split tables
        of one build share the buckets of a snapshot.
        """
        schema, short = spec.name.split(".", 1)
        key = (spec.name, version, column, count)
        folder = self._buckets.get(key)
        if folder is None:
            self.bind(spec, version=version)
            folder = self._spill_dir / "buckets" / str(len(self._buckets))
            shutil.rmtree(folder, ignore_errors=True)  # what a failed write left: COPY wants an empty folder
            folder.parent.mkdir(parents=True, exist_ok=True)
            target = str(folder).replace("'", "''")
            try:
                self.con.execute(f"COPY (SELECT *, {part_of(column, count)} AS __part FROM "
                                 f"{_quote_ident(schema)}.{_quote_ident(short)}) TO '{target}' "
                                 "(FORMAT parquet, PARTITION_BY (__part))")
            except duckdb.Error as exc:
                raise self._query_error(exc) from exc
            self._buckets[key] = folder
        files = sorted(str(f) for f in (folder / f"__part={index}").glob("*.parquet"))
        if not files:  # no row in this part: the filtered snapshot has none either, and has its columns
            self.bind(spec, version=version, where=part_filter(column, count, index))
            return
        # The files' folder names a partition (__part=i): read them as plain files, without that column.
        scan = sqlglot.select("*").from_(_files_scan(files, folders_are_partitions=False))
        self.con.execute(f"CREATE OR REPLACE VIEW {_quote_ident(schema)}.{_quote_ident(short)} AS "
                         f"{scan.sql(dialect='duckdb')}")
        self._latest.pop(spec.name, None)

    def bind_latest(self, spec: TableSpec) -> int | None:
        """Bind `spec.name` to its latest version, unless the view already reads that version.

        A session kept between queries (the SQL API's workers) binds each table once per committed version:
        whether a newer one exists costs two `stat` calls (`DeltaStore.has_new_version`), not a log read.
        The view is replaced only between queries, so a query still reads one version of each table.

        Returns the version the view reads (None while the table does not exist).
        """
        if spec.name in self._latest:
            known = self._latest[spec.name]
            if not self.store.has_new_version(spec.name, known):
                return known
        version = self.bind(spec)
        self._latest[spec.name] = version
        return version

    def unbind(self, view: str) -> None:
        """Drop a view made by `bind` (a time-travelled reference, say) and release its data."""
        schema, short = view.split(".", 1)
        self.con.execute(f"DROP VIEW IF EXISTS {_quote_ident(schema)}.{_quote_ident(short)}")
        self._latest.pop(view, None)
        for prefix in ("__dataset__", "__empty__"):
            name = f"{prefix}{schema}__{short}"
            if self._arrow.pop(name, None) is not None:
                self.con.unregister(name)

    def bind_arrow(self, name: str, data: pa.Table) -> None:
        """Bind an in-memory Arrow table under `schema.name` or a bare name."""
        key = "__arrow__" + name.replace(".", "__")
        self._arrow[key] = data
        self.con.register(key, data)
        if "." in name:
            schema, short = name.split(".", 1)
            self._ensure_schema(schema)
            self.con.execute(f"CREATE OR REPLACE VIEW {_quote_ident(schema)}.{_quote_ident(short)} AS "
                             f"SELECT * FROM {_quote_ident(key)}")
        else:
            self.con.execute(f"CREATE OR REPLACE VIEW {_quote_ident(name)} AS SELECT * FROM {_quote_ident(key)}")

    def parts_for(self, rows: int) -> int:
        """The count of parts nearest to `SPLIT_ROWS_PER_GB` input rows per GB of the memory limit each
        (a part holds at most 1.5 times that).

        Measured on the funnel entries: 10M events ran at the 2GB default in one query (2.6 GiB peak), 42M
        did not (out of memory, then slower plans: bench/RESULTS.md). Parts of users keep each query at
        the size that fits, so the memory needed no longer grows with the data. The limit is the configured
        one: DuckDB shows 2GB as '1.8 GiB', which made the demo's 1,998,064 events two parts of 0.999M.
        """
        configured = self.settings.memory_limit
        limit = _size_bytes(configured if configured and _SIZE.match(configured)
                            else self.rows("SELECT current_setting('memory_limit')")[0][0])
        per_part = max(1, int(SPLIT_ROWS_PER_GB * limit / 2**30))
        return max(1, int(rows / per_part + 0.5))

    def materialize(self, name: str, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run `sql` once into a temporary table `name`, for several reads of the same result.

        `params` are positional (`?`) or, as a mapping, named (`$name`).
        """
        statement = f"CREATE OR REPLACE TEMP TABLE {_quote_ident(name)} AS {sql}"
        try:
            self.con.execute(statement, params or [])
            return
        except duckdb.OutOfMemoryException as exc:
            # DuckDB keeps a CTE read more than once in memory (it cannot spill), which is the fast plan
            # until the CTE outgrows the memory limit (a funnel's chains at 10M events). Then each shared
            # CTE is stored once as a temporary table, which spills; failing that, the plan that recomputes
            # each CTE where it is read streams and spills, slower but within the limit.
            staged = None if params else _ctes_staged(statement)
            if staged is not None and self._run_staged(name, *staged, exc):
                return
            inlined = _ctes_inlined(statement)
            if inlined is None:
                raise self._query_error(exc) from exc
            log.warning("%s: out of memory with shared CTEs (%s); running again with the CTEs inlined",
                        name, _one_line(exc))
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc
        try:
            self.con.execute(inlined, params or [])
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc

    def _run_staged(self, name: str, creates: list[tuple[str, str]], final: str, cause: BaseException) -> bool:
        """Run a statement split by `_ctes_staged`; False when it runs out of memory all the same."""
        log.warning("%s: out of memory with shared CTEs (%s); running again with them stored as temporary "
                    "tables (%s)", name, _one_line(cause), ", ".join(t for t, _ in creates))
        try:
            for _, create in creates:
                self.con.execute(create)
            self.con.execute(final)
            return True
        except duckdb.OutOfMemoryException as exc:
            log.warning("%s: out of memory again (%s)", name, _one_line(exc))
            return False
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc
        finally:
            for table, _ in creates:
                self.con.execute(f"DROP TABLE IF EXISTS {_quote_ident(table)}")

    def define_view(self, name: str, sql: str) -> None:
        """A named query that later SQL can read (recomputed on each read, never stored)."""
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote_ident(name)} AS {sql}")

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {_quote_ident(name)}")

    def drop_view(self, name: str) -> None:
        self.con.execute(f"DROP VIEW IF EXISTS {_quote_ident(name)}")

    # -- running SQL -------------------------------------------------------------------------------
    def stream(self, sql: str, params: Sequence[Any] | None = None, *,
               batch_rows: int = BATCH_ROWS) -> pa.RecordBatchReader:
        """Run a query and stream its result as Arrow record batches (bounded memory)."""
        try:
            return self.con.execute(sql, params or []).to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc

    def table(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        try:
            return self.con.execute(sql, params or []).to_arrow_table()
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        try:
            return self.con.execute(sql, params or []).fetchall()
        except duckdb.Error as exc:
            raise self._query_error(exc) from exc

    def _query_error(self, exc: duckdb.Error) -> QueryError:
        """One line for a failed query; running out of memory says which setting to raise."""
        if isinstance(exc, duckdb.OutOfMemoryException):
            limit = self.settings.memory_limit or "DuckDB's default"
            return EngineMemoryError(f"the embedded engine ran out of memory (memory_limit {limit}): "
                                     f"{_one_line(exc)}; raise memory_limit (shoplake.toml or "
                                     "SHOPLAKE_MEMORY_LIMIT) or lower threads")
        return QueryError(_one_line(exc))

    # -- writing tables ----------------------------------------------------------------------------
    def write_table(self, store: DeltaStore, spec: TableSpec, sql: str | Sequence[str], *, mode: str,
                    meta: dict[str, Any], params: Sequence[Any] | None = None, scans_stored: bool = False) -> int:
        """Stream the result of `sql` (or of several queries, one after another) into `spec` as one Delta
        commit carrying `meta`; returns the version.

        `scans_stored`: the queries only read (and sort) rows the session already holds. DuckDB then runs
        them under a share of its memory limit (`WRITE_MEMORY_SHARE`), because the Delta writer, which
        encodes and buffers the same rows beside it, is outside that limit.
        """
        if not scans_stored:
            return self._write_table(store, spec, sql, mode=mode, meta=meta, params=params)
        with self._memory_for_writer(spec):
            return self._write_table(store, spec, sql, mode=mode, meta=meta, params=params)

    def stage(self, store: DeltaStore, spec: TableSpec, sql: str, *, scans_stored: bool = True) -> list[Path]:
        """Write the rows of `sql` as one Parquet file in the table's folder, in the query's order, not
        committed (`DeltaStore.commit_files` commits it, `DeltaStore.discard` removes it); no file when there
        is no row. `scans_stored` (the query only reads and sorts rows the session holds): it runs under
        `WRITE_MEMORY_SHARE`, as `write_table(scans_stored=True)` does.

        DuckDB writes the file itself (`COPY`, zstd level 1 as `DeltaStore` writes): its writer encodes in
        parallel, where streaming the rows to pyarrow's or delta-rs's writer encoded them on one core. The
        sorted 4.4M rows of the demo's product funnel entries: 3.9-4.1 s against 5.7-6.9 s (bench/RESULTS.md).
        One file, not one per `FILE_SIZE_BYTES`: DuckDB 1.5 numbers the files of a split COPY in the order its
        threads finish them, not in the order of the rows (the unit test saw part_3 hold the last rows);
        readers split a large file by row group.
        """
        target = store.staged_file(spec.name)
        quoted = str(target).replace("'", "''")
        try:
            with self._memory_for_writer(spec) if scans_stored else contextlib.nullcontext():
                written = self.con.execute(f"COPY ({sql}) TO '{quoted}' "
                                           "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)").fetchone()
        except BaseException as exc:  # a part written file of a failed COPY is no one's
            store.discard([target])
            if isinstance(exc, duckdb.Error):
                raise self._query_error(exc) from exc
            raise
        if not written or not written[0]:
            store.discard([target])
            return []
        return [target]

    def define_files_view(self, name: str, files: Sequence[Path]) -> None:
        """A view `name` of the rows of these Parquet files (staged by `stage`)."""
        scan = sqlglot.select("*").from_(_files_scan([str(f) for f in files])).sql(dialect="duckdb")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {_quote_ident(name)} AS {scan}")

    @contextlib.contextmanager
    def _memory_for_writer(self, spec: TableSpec) -> Iterator[None]:
        """Run the block under `WRITE_MEMORY_SHARE` of the memory limit, then set the configured limit again."""
        current = self.rows("SELECT current_setting('memory_limit')")[0][0]
        configured = self.settings.memory_limit or current
        share = int(_size_bytes(current) * WRITE_MEMORY_SHARE)
        try:
            self.con.execute(f"SET memory_limit = '{share}B'")
        except duckdb.Error as exc:  # it could not evict enough to get under the share: write at the full limit
            log.debug("write of %s at the full memory limit: %s", spec.name, _one_line(exc))
        try:
            yield
        finally:
            # The configured text, not the setting read back: DuckDB shows it rounded ('1.8 GiB' for 2GB).
            self.con.execute(f"SET memory_limit = '{configured}'")

    def _write_table(self, store: DeltaStore, spec: TableSpec, sql: str | Sequence[str], *, mode: str,
                     meta: dict[str, Any], params: Sequence[Any] | None) -> int:
        queries = [sql] if isinstance(sql, str) else list(sql)
        first = self.stream(queries[0], params)
        readers = [first]

        def batches() -> Iterator[pa.RecordBatch]:
            # One result at a time: the next query runs once the previous one is read to the end.
            yield from first
            for query in queries[1:]:
                readers.append(self.stream(query, params))
                yield from readers[-1]

        try:
            reader = first if len(queries) == 1 else pa.RecordBatchReader.from_batches(first.schema, batches())
            return store.write(spec.name, reader, mode=mode, meta=meta, description=spec.description)
        finally:
            for opened in readers:
                opened.close()

    # -- reading source files --------------------------------------------------------------------
    def read_source(self, path: Path, fmt: str, header: list[str], mapping: dict[str, str],
                    columns: Sequence[SourceColumn], *, display: str,
                    encoding: str = "utf-8") -> tuple[pa.RecordBatchReader, LineAccount]:
        """Stream a CSV(.gz) or Parquet file as typed rows plus a `_reason` for unparseable rows.

        Args:
            header: the file's column names in file order; `mapping` renames them to canonical names.
            columns: the source's columns (type, parsing, sane range), in output order.
            encoding: the CSV file's text encoding (see `sources.lines.ENCODINGS`).

        Returns the reader (rows in file order, without `_source_row`) and the file's `LineAccount`: once
        the reader is consumed, it lists the lines set aside or refused by the CSV parser, by physical line.
        """
        missing = [c.name for c in columns if c.name not in mapping.values()]
        raw_select, account = self._raw_scan(path, fmt, header, mapping, missing, display=display,
                                             encoding=encoding)
        typed, reasons = judge_sql(columns)
        out = [_quote_ident(c.name) for c in columns]
        raw_kept = [f"CASE WHEN _reason IS NOT NULL THEN {_quote_ident('r_' + c.name)} END AS "
                    f"{_quote_ident('_raw_' + c.name)}" for c in columns]
        sql = f"""
            WITH raw AS ({raw_select}),
            typed AS (SELECT *, {', '.join(typed)} FROM raw),
            judged AS (SELECT *, CASE {' '.join(reasons)} END AS _reason FROM typed)
            SELECT {', '.join(out)}, _reason, {', '.join(raw_kept)}
            FROM judged
        """
        self.con.execute("SET preserve_insertion_order = true")
        # A streamed result is computed ahead, in parallel, only as far as this buffer (DuckDB's default
        # is about 1 MB, a few thousand rows: the parse then runs on one core while this process writes).
        self.con.execute(f"SET streaming_buffer_size = '{STREAM_BUFFER}'")
        try:
            reader = self.con.execute(sql).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as exc:
            account.close()
            raise SourceFormatError(f"{display}: cannot parse {fmt} file: {_one_line(exc)}") from exc
        return reader, account

    def _raw_scan(self, path: Path, fmt: str, header: list[str], mapping: dict[str, str],
                  missing: list[str], *, display: str, encoding: str) -> tuple[str, LineAccount]:
        # Canonical columns the file lacks (a source variant) still appear, as NULL.
        absent = [f"CAST(NULL AS VARCHAR) AS {_quote_ident('r_' + name)}" for name in missing]
        if fmt == "parquet":
            try:
                described = self.con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()
            except duckdb.Error as exc:
                raise SourceFormatError(f"{display}: cannot read parquet file: {_one_line(exc)}") from exc
            types = {row[0]: row[1] for row in described}
            cols = []
            for found, name in mapping.items():
                ref = _quote_ident(found)
                value = (f"strftime({ref}, '%Y-%m-%d %H:%M:%S')" if types[found].startswith("TIMESTAMP")
                         else f"CAST({ref} AS VARCHAR)")
                cols.append(f"{value} AS {_quote_ident('r_' + name)}")
            path_literal = exp.Literal.string(str(path)).sql(dialect="duckdb")
            scan = f"read_parquet({path_literal})"
            return _raw_select(cols + absent, scan), LineAccount(None, multiline=True)

        # Lines no parser should see are set aside first, so one bad line can never swallow the next ones.
        lines = scan_csv(path, fmt, expected_fields=len(header), encoding=encoding, display=display,
                         spool_dir=self.settings.spool_dir)
        account = LineAccount(lines, multiline=True)
        parse_path, parse_fmt = write_parse_input(lines)
        columns = "{" + ", ".join(f"{exp.Literal.string(h).sql()}: 'VARCHAR'" for h in header) + "}"
        self.con.execute("DROP TABLE IF EXISTS shoplake_rejects")
        self.con.execute("DROP TABLE IF EXISTS shoplake_reject_scans")
        path_literal = exp.Literal.string(str(parse_path)).sql(dialect="duckdb")
        scan = (f"read_csv({path_literal}, header = true, auto_detect = false, columns = {columns}, "
                f"delim = ',', quote = '\"', escape = '\"', max_line_size = {MAX_LINE_BYTES + 2}, "
                f"compression = '{'gzip' if parse_fmt == 'csv.gz' else 'none'}', "
                f"store_rejects = true, rejects_table = 'shoplake_rejects', "
                f"rejects_scan = 'shoplake_reject_scans')")
        cols = [f"{_quote_ident(found)} AS {_quote_ident('r_' + name)}" for found, name in mapping.items()]

        def collect_rejects() -> None:
            found = self.con.execute(
                # One reject can be reported once per scan thread, and once per bad field: keep one per line.
                "SELECT line, min(lower(replace(CAST(error_type AS VARCHAR), ' ', '_'))) "
                "FROM shoplake_rejects GROUP BY line ORDER BY line").fetchall()
            account.parser_rejects = [(int(line), _REJECT_REASONS.get(kind, kind)) for line, kind in found]

        account.before_check = collect_rejects
        return _raw_select(cols + absent, scan), account


def _raw_select(cols: list[str], scan: str) -> str:
    # No row_number() here: it would serialise the parallel scan. Rows arrive in file order
    # (insertion order is preserved), so the caller numbers them while streaming.
    return f"SELECT {', '.join(cols)} FROM {scan}"


_REJECT_REASONS = {
    "missing_columns": "wrong_column_count",
    "too_many_columns": "wrong_column_count",
    "unquoted_value": "unquoted_value",
    "invalid_encoding": "invalid_encoding",
    "line_size_over_maximum": "line_too_long",
    "invalid_state": "malformed_csv",
    "cast": "invalid_value",
}


# The argument holding a query's WITH clause (sqlglot 30 renamed it from "with").
_WITH = "with_" if "with_" in exp.Select.arg_types else "with"


def _ctes_staged(sql: str) -> tuple[list[tuple[str, str]], str] | None:
    """`sql` split so that each CTE it reads more than once is stored first as a temporary table: the
    (table name, CREATE statement) pairs in order, and the statement reading them. The other CTEs stay
    inline where they are read. None when no CTE is read twice (or the SQL cannot be parsed).

    A temporary table spills to the temp directory when it outgrows the memory limit; a shared CTE cannot.
    """
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    # The first WITH clause, wherever it is (a build wraps the declared query in a typed SELECT).
    rest = tree.copy()
    with_ = rest.find(exp.With)
    if with_ is None:
        return None
    owner = with_.parent  # the query the CTEs belong to
    if owner is None:
        return None
    bodies = {cte.alias: cte.this for cte in with_.expressions}
    with_.pop()

    def reads(node: exp.Expr) -> list[str]:
        return [t.name for t in node.find_all(exp.Table) if not t.db and t.name in bodies]

    counts = Counter(name for node in (*bodies.values(), rest) for name in reads(node))
    stored = {name: f"__shared_{name}" for name in bodies if counts[name] > 1}
    if not stored:
        return None

    def renamed(node: exp.Expr, *, copy: bool = True) -> exp.Expr:
        node = node.copy() if copy else node
        for table in list(node.find_all(exp.Table)):
            if not table.db and table.name in stored:
                if not table.alias:  # columns qualified by the CTE's name keep resolving
                    table.set("alias", exp.TableAlias(this=exp.to_identifier(table.name)))
                table.set("this", exp.to_identifier(stored[table.name]))
        return node

    def with_inline(node: exp.Expr) -> exp.Expr:
        """`node` (renamed) with the CTEs it still reads, and theirs, inline ahead of it."""
        needed: set[str] = set()
        todo = [n for n in reads(node) if n not in stored]
        while todo:
            name = todo.pop()
            if name not in needed:
                needed.add(name)
                todo += [n for n in reads(bodies[name]) if n not in stored]
        if needed:
            node.set(_WITH, exp.With(expressions=[
                exp.CTE(this=renamed(bodies[n]), alias=exp.TableAlias(this=exp.to_identifier(n)), materialized=False)
                for n in bodies if n in needed]))
        return node

    creates = [(table, f"CREATE OR REPLACE TEMP TABLE {_quote_ident(table)} AS "
                       f"{with_inline(renamed(bodies[name])).sql('duckdb')}") for name, table in stored.items()]
    renamed(rest, copy=False)
    with_inline(owner)
    return creates, rest.sql("duckdb")


def _ctes_inlined(sql: str) -> str | None:
    """`sql` with every CTE marked NOT MATERIALIZED, or None when it has none (or cannot be parsed)."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    ctes = list(tree.find_all(exp.CTE))
    for cte in ctes:
        cte.set("materialized", False)
    return tree.sql("duckdb") if ctes else None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
