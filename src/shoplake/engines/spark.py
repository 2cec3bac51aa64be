"""The scale-out engine: the same declared SQL on Apache Spark (PySpark), local or on a cluster.

It has the interface of `DuckDBEngine`, so ingestion and builds run the same code on either engine.
- SQL is DuckDB-dialect; `spark_sql.to_spark` translates it (sqlglot plus a few tested overrides).
- Catalog names are bound as temporary views (`silver.events` -> `silver__events`) over the Parquet
  files of one Delta snapshot, listed by `deltalake`; so a job reads one committed version of each table.
- Tables are written by Spark as Parquet files in the table folder and committed by `DeltaStore` as one
  Delta transaction (`commit_files`). With `spark_delta_jars` (the delta-spark jars on Spark's
  classpath, as on Databricks) Spark reads and writes `format("delta")` itself instead.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import socket
import tempfile
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from shoplake.catalog.spec import TableSpec
from shoplake.config import Settings
from shoplake.engines.base import Capability, StagedSource, part_filter
from shoplake.engines.delta import WRITER_STAGING_PREFIX, DeltaStore, user_metadata
from shoplake.engines.scratch import session_folder
from shoplake.engines.spark_session import spark_session
from shoplake.engines.spark_sql import spark_type, to_spark, view_name
from shoplake.errors import QueryError, SourceFormatError
from shoplake.sources.lines import LineAccount, scan_csv, write_parse_input
from shoplake.sources.schemas import SourceColumn, judge_sql

log = logging.getLogger(__name__)

# Line kinds of a parsed CSV file: only `row` lines reach the caller; `reject` lines are reported.
_HEADER, _BLANK, _REJECT, _ROW = "header", "blank", "reject", "row"
# Rows are numbered by blocks of 2**_BLOCK_BITS lines of a split (`SparkEngine._rows_numbered`).
_BLOCK_BITS = 12


def field_count(line):
    """The number of fields of a CSV line (a Spark column): 1 + its commas outside double quotes.

    A comma counts when an even number of quotes follows it on the line (the lookahead split
    `,(?=(?:[^"]*"[^"]*")*[^"]*$)` says the same, but costs time quadratic in the line's length and was
    most of the parse). Linear form: with an odd number of quotes, a quote put in front evens them; then
    each pair of quotes is removed with what it encloses, and the commas left are counted.
    """
    from pyspark.sql import functions as F

    quotes = F.length(line) - F.length(F.replace(line, F.lit('"'), F.lit("")))
    evened = F.when(quotes % 2 == 1, F.concat(F.lit('"'), line)).otherwise(line)
    outside = F.regexp_replace(evened, '"[^"]*"', "")
    return F.length(outside) - F.length(F.replace(outside, F.lit(","), F.lit(""))) + 1


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _ddl(spec_columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{_quote(name)} {spark_type(type_)}" for name, type_ in spec_columns)


class SparkEngine:
    """Runs declared SQL on Spark; reads Delta snapshots; writes tables as one Delta commit each."""

    name = "spark"
    capabilities = frozenset({Capability.DISTRIBUTED_INFERENCE, Capability.DISTRIBUTED_INGEST})

    def __init__(self, settings: Settings, store: DeltaStore):
        self.settings = settings
        self.store = store
        self.spark = spark_session(settings)
        self._views: set[str] = set()
        self._cached: dict[str, Any] = {}
        # Named after the machine too: on a cluster the executors reach this folder on a shared path.
        self._scratch = session_folder(Path(settings.spill_dir or Path(tempfile.gettempdir()) / "shoplake-spill"),
                                       f"spark-engine-{socket.gethostname()}-")

    def close(self) -> None:
        # The session outlives the engine (one per process, shared with scoring): drop only our views.
        for name in list(self._cached):
            self.drop(name)
        for name in self._views:
            self.spark.catalog.dropTempView(name)
        self._views.clear()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> SparkEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- binding catalog names -------------------------------------------------------------------
    def _register(self, name: str, frame) -> None:
        frame.createOrReplaceTempView(name)
        self._views.add(name)

    def _read_snapshot(self, spec: TableSpec, version: int | datetime | None):
        columns = [(c.name, c.type) for c in spec.columns]
        if self.store.exists(spec.name):
            table = self.store.open(spec.name, version)
            if self.settings.spark_delta_jars:
                reader = self.spark.read.format("delta").option("versionAsOf", table.version())
                return reader.load(str(self.store.path(spec.name))), table.version()
            uris = table.file_uris()
            if uris:
                return self.spark.read.schema(_ddl(columns)).parquet(*uris), table.version()
            return self.spark.createDataFrame([], _ddl(columns)), table.version()
        return self.spark.createDataFrame([], _ddl(columns)), None

    def bind(self, spec: TableSpec, *, version: int | datetime | None = None, where: str | None = None,
             view: str | None = None, batches: Sequence[str] | None = None) -> int | None:
        """Make `spec.name` (or `view`) queryable as one Delta snapshot; see `DuckDBEngine.bind`."""
        from pyspark.sql import functions

        frame, bound_version = self._read_snapshot(spec, version)
        if batches is not None:
            frame = frame.where(functions.col("_batch_id").isin(list(batches)))
        if where:
            frame = frame.where(to_spark(where))
        self._register(view_name(view or spec.name), frame)
        return bound_version

    def bind_arrow(self, name: str, data: pa.Table) -> None:
        """Bind an in-memory Arrow table under `schema.name` or a bare name."""
        self._register(view_name(name), self.spark.createDataFrame(data))

    def parts_for(self, rows: int) -> int:
        """One: Spark spills each stage of a large query itself, and a part would be one more pass."""
        return 1

    def bind_part(self, spec: TableSpec, *, version: int | None, column: str, count: int, index: int) -> None:
        """One part of a snapshot, as a filter of it: Spark reads only the columns a query needs, in parallel."""
        self.bind(spec, version=version, where=part_filter(column, count, index))

    def materialize(self, name: str, sql: str, params: Sequence[Any] | None = None) -> None:
        """Compute `sql` once (checkpointed) as the temporary view `name`, for several reads."""
        self.drop(name)
        frame = self._frame(sql, params).localCheckpoint(eager=True)
        self._cached[name] = frame
        self._register(name, frame)

    def define_view(self, name: str, sql: str) -> None:
        """A named query that later SQL can read (recomputed on each read, never stored)."""
        self._register(name, self._frame(sql))

    def drop(self, name: str) -> None:
        frame = self._cached.pop(name, None)
        if frame is not None:
            frame.unpersist()
        self.drop_view(name)

    def drop_view(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        self._views.discard(name)

    # -- running SQL -------------------------------------------------------------------------------
    def _frame(self, sql: str, params: Sequence[Any] | None = None):
        try:
            return self.spark.sql(to_spark(sql), args=list(params) if params else None)
        except Exception as exc:  # AnalysisException, ParseException, ...: all PySparkException
            raise QueryError(_one_line(exc)) from exc

    def _collect(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        frame = self._frame(sql, params)
        try:
            return frame.toArrow()
        except Exception as exc:
            raise QueryError(_one_line(exc)) from exc

    def stream(self, sql: str, params: Sequence[Any] | None = None) -> pa.RecordBatchReader:
        """Run a query and return its result as Arrow batches (collected on the driver first)."""
        return self._collect(sql, params).to_reader()

    def table(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        return self._collect(sql, params)

    def rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        return [tuple(row.values()) for row in self._collect(sql, params).to_pylist()]

    # -- writing tables ----------------------------------------------------------------------------
    def write_table(self, store: DeltaStore, spec: TableSpec, sql: str | Sequence[str], *, mode: str,
                    meta: dict[str, Any], params: Sequence[Any] | None = None, scans_stored: bool = False) -> int:
        """Write the result of `sql` to `spec` in one Delta commit carrying `meta`; returns the version.
        (`scans_stored` changes nothing here: Spark's executors write the files, not this process.)

        The files are written uncommitted (`_write_files`), then `DeltaStore` commits them. Nothing is
        visible until that commit, so a failed job leaves only unreferenced files.
        """
        queries = [sql] if isinstance(sql, str) else list(sql)
        frame = self._frame(queries[0], params)
        for query in queries[1:]:  # several queries: their union (Spark keeps no order across them)
            frame = frame.unionByName(self._frame(query, params))
        target = store.path(spec.name)
        if self.settings.spark_delta_jars:
            try:
                (frame.write.format("delta").mode(mode).option("userMetadata", user_metadata(meta))
                 .save(str(target)))
            except Exception as exc:
                raise QueryError(f"{spec.name}: Spark could not write the table: {_one_line(exc)}") from exc
            return store.open(spec.name).version()
        files = self._write_files(spec, frame, target)
        return store.commit_files(spec.name, files, spec.arrow_schema, mode=mode, meta=meta,
                                  description=spec.description)

    def stage(self, store: DeltaStore, spec: TableSpec, sql: str, *, scans_stored: bool = True) -> list[Path]:
        """Write the rows of `sql` as Parquet files in the table's folder, not committed (`commit_files`
        commits them; `DeltaStore.discard` removes them). The executors write them (`scans_stored` changes
        nothing here)."""
        return self._write_files(spec, self._frame(sql), store.path(spec.name))

    def define_files_view(self, name: str, files: Sequence[Path]) -> None:
        """A view `name` of the rows of these Parquet files (staged by `stage`)."""
        self._register(name, self.spark.read.parquet(*[str(f) for f in files]))

    def _write_files(self, spec: TableSpec, frame, target: Path) -> list[Path]:
        """Spark writes Parquet into a staging folder inside the table folder (invisible to Delta readers,
        which follow the log); the files then move next to the table's other files, still uncommitted."""
        staging = target / f"{WRITER_STAGING_PREFIX}{uuid.uuid4().hex}"
        try:
            # zstd level 1, as `DeltaStore` writes: level 3 (Spark's default) costs time for little size.
            (frame.write.option("compression", "zstd").option("parquet.compression.codec.zstd.level", "1")
             .parquet(str(staging)))
        except Exception as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise QueryError(f"{spec.name}: Spark could not write the table: {_one_line(exc)}") from exc
        try:
            files: list[Path] = []
            for part in sorted(staging.glob("part-*.parquet")):
                if pq.ParquetFile(part).metadata.num_rows == 0:
                    continue  # Spark writes an empty file for an empty result; Delta needs none
                final = target / f"part-{len(files):05d}-{uuid.uuid4()}-c000.zstd.parquet"
                part.rename(final)
                files.append(final)
            return files
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- reading source files --------------------------------------------------------------------
    def stage_source(self, store: DeltaStore, bronze: TableSpec, path: Path, fmt: str, header: list[str],
                     mapping: dict[str, str], columns: Sequence[SourceColumn], *, lineage: dict[str, Any],
                     display: str, encoding: str = "utf-8", write: bool = True) -> tuple[StagedSource, LineAccount]:
        """Parse a CSV(.gz) or Parquet file on the executors and write its good rows as uncommitted Bronze
        files (`commit_files` commits them); only counts and the refused rows come back to this process.

        The lines set aside by the line scan are removed first (as on DuckDB). Spark splits the rest, and
        each task numbers its split's lines as it parses them; the splits' counts, summed in split order,
        and the few lines that are not rows then give every row its `_source_row` and every refused line
        its line number, as one sequential pass over the file would. With `write` False nothing is written
        (a dry run, or Bronze already committed by an interrupted run): the rows are only counted.
        """
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        judged, account = self._judged(path, fmt, header, mapping, columns, display=display, encoding=encoding)
        scratch = self._scratch / f"source-{uuid.uuid4().hex}"
        raw = [_quote("_raw_" + c.name) for c in columns]
        try:
            # A line's split and its position in the split: the upper and lower bits of Spark's row id,
            # both known inside the scan's task (no Python worker, no shuffle).
            split = F.spark_partition_id()
            numbered = judged.select("*", split.alias("_split"), (F.monotonically_increasing_id()
                                     - F.shiftleft(split.cast("bigint"), 33)).alias("_line_in_split"))
            # Gathered while the lines are written, not by another pass: the lines that are not rows (the
            # header, blank lines, lines refused whole) and the rows with a value that does not parse. Both
            # are few; the first give each row its place among the rows, the second go to quarantine.
            observed = Observation(f"source-{uuid.uuid4().hex}")
            is_row = F.col("_kind") == _ROW
            numbered = numbered.observe(
                observed,
                F.collect_list(F.when(~is_row, F.struct("_split", "_line_in_split", "_kind"))).alias("skipped"),
                F.collect_list(F.when(is_row & F.col("_reason").isNotNull(),
                                      F.struct("_split", "_line_in_split", "_reason", *raw))).alias("refused"))
            good = numbered.where(is_row & F.col("_reason").isNull()).select(
                *[_quote(c.name) for c in columns], "_split", "_line_in_split")
            try:
                # Only the good rows, read once more and then deleted: the cheapest codec to write and read.
                good.write.option("compression", "snappy").parquet(str(scratch))
            except Exception as exc:
                raise SourceFormatError(f"{display}: cannot parse {fmt} file: {_one_line(exc)}") from exc
            metrics = observed.get
            not_rows = sorted((r._split, r._line_in_split, r._kind) for r in metrics["skipped"])
            # A split's lines: its good rows (in the files its task wrote), the lines that are not rows, and
            # the refused rows.
            split_lines = _rows_per_split(scratch)
            for r in [*metrics["skipped"], *metrics["refused"]]:
                split_lines[r._split] = split_lines.get(r._split, 0) + 1
            line_offset = _offsets(split_lines)
            account.parser_rejects.extend((line_offset[split] + line + 1, "wrong_column_count")
                                          for split, line, kind in not_rows if kind == _REJECT)
            skipped: dict[int, list[int]] = {}
            for split, line, _ in not_rows:
                skipped.setdefault(split, []).append(line)
            row_offset = _offsets({s: n - len(skipped.get(s, ())) for s, n in split_lines.items()})
            refused = _refused_rows(metrics["refused"], columns, row_offset, skipped)
            readable = sum(split_lines.values()) - len(not_rows)
            files: list[Path] = []
            if write:
                # A Spark line never holds a line break, so a Bronze row spans one physical line here.
                constant = {"_source_lines": F.lit(1).cast("bigint"),
                            **{name: F.lit(value) for name, value in lineage.items()}}
                rows = self.spark.read.parquet(str(scratch))
                good = self._rows_numbered(rows, row_offset, skipped, split_lines).select(
                    *[(constant[c.name] if c.name in constant else F.col(_quote(c.name)))
                      .cast(spark_type(c.type)).alias(c.name) for c in bronze.columns])
                files = self._write_files(bronze, good, store.path(bronze.name))
        except BaseException:
            account.close()
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return StagedSource(files, readable, readable - refused.num_rows, refused), account

    def _rows_numbered(self, rows, row_offset: dict[int, int], skipped: dict[int, list[int]],
                       split_lines: dict[int, int]):
        """`rows` with `_source_row`: the rows before it in earlier splits, plus its line's place in its
        split less the lines of the split before it that are not rows.

        Those lines are counted per block of 4,096 lines, in a small table joined to the rows by (split,
        block): the lines skipped before the block, and the positions of those inside it.
        """
        from pyspark.sql import functions as F

        blocks = []
        for split, positions in skipped.items():
            for block in range(positions[0] >> _BLOCK_BITS, ((split_lines[split] - 1) >> _BLOCK_BITS) + 1):
                start, end = block << _BLOCK_BITS, (block + 1) << _BLOCK_BITS
                before = bisect.bisect_left(positions, start)
                blocks.append((split, block, before, positions[before:bisect.bisect_left(positions, end)]))
        offset = (F.element_at(F.create_map(*[F.lit(x) for pair in row_offset.items() for x in pair]),
                               F.col("_split")) if row_offset else F.lit(0))
        rows = rows.withColumn("_block", F.shiftright("_line_in_split", _BLOCK_BITS))
        if blocks:
            table = self.spark.createDataFrame(
                blocks, "_split INT, _block BIGINT, _before BIGINT, _inside ARRAY<BIGINT>")
            rows = rows.join(F.broadcast(table), ["_split", "_block"], "left")
            here = F.col("_line_in_split")
            skipped_before = (F.coalesce(F.col("_before"), F.lit(0))
                              + F.coalesce(F.size(F.filter("_inside", lambda p: p < here)), F.lit(0)))
        else:
            skipped_before = F.lit(0)
        return rows.withColumn("_source_row",
                               (offset + F.col("_line_in_split") - skipped_before + 1).cast("bigint"))

    def _judged(self, path: Path, fmt: str, header: list[str], mapping: dict[str, str],
                columns: Sequence[SourceColumn], *, display: str, encoding: str):
        """The file's lines as a frame: `_kind`, the typed columns, `_reason` and the raw text of refused
        rows, in file order within each split; with the file's `LineAccount`."""
        from pyspark.sql import functions as F

        missing = [c.name for c in columns if c.name not in mapping.values()]
        if fmt == "parquet":
            account = LineAccount(None, multiline=False)
            raw = self._parquet_fields(path, mapping, display=display)
        else:
            scan = scan_csv(path, fmt, expected_fields=len(header), encoding=encoding, display=display,
                            spool_dir=self.settings.spool_dir)
            account = LineAccount(scan, multiline=False)
            parse_path, _ = write_parse_input(scan)
            raw = self._csv_fields(parse_path, header, mapping)
        for name in missing:
            raw = raw.withColumn("r_" + name, F.lit(None).cast("string"))
        typed_duckdb, reasons_duckdb = judge_sql(columns)
        # The parse rules are DuckDB SQL over the raw text: translate each as a whole.
        typed = [to_spark(item) for item in typed_duckdb]
        reasons = to_spark(f"CASE {' '.join(reasons_duckdb)} END")
        kept = [f"CASE WHEN _reason IS NOT NULL THEN {_quote('r_' + c.name)} END AS {_quote('_raw_' + c.name)}"
                for c in columns]
        out = [_quote(c.name) for c in columns]
        return (raw.selectExpr("*", *typed)
                .selectExpr("*", f"CASE WHEN _kind = '{_ROW}' THEN {reasons} END AS _reason")
                .selectExpr(*out, "_reason", *kept, "_kind")), account

    def _csv_fields(self, path: Path, header: list[str], mapping: dict[str, str]):
        from pyspark.sql import functions as F

        lines = self.spark.read.text(str(path))
        schema = _ddl([(f"f{i}", "VARCHAR") for i in range(len(header))])
        first = (F.spark_partition_id() == 0) & (F.monotonically_increasing_id() == 0)
        count = field_count(F.col("value"))
        kind = (F.when(first, F.lit(_HEADER)).when(F.col("value") == "", F.lit(_BLANK))
                .when(count != len(header), F.lit(_REJECT)).otherwise(F.lit(_ROW)))
        fields = F.from_csv(F.col("value"), schema, {"quote": '"', "escape": '"', "mode": "PERMISSIVE"})
        parsed = lines.select(kind.alias("_kind"), F.col("value").alias("_line"), fields.alias("f"))
        position = {found: i for i, found in enumerate(header)}
        columns = [F.when(F.col("_kind") == _ROW, F.col(f"f.f{position[found]}")).alias("r_" + name)
                   for found, name in mapping.items()]
        return parsed.select("_kind", F.when(F.col("_kind") == _REJECT, F.col("_line")).alias("_line"), *columns)

    def _parquet_fields(self, path: Path, mapping: dict[str, str], *, display: str):
        from pyspark.sql import functions as F
        from pyspark.sql.types import TimestampNTZType, TimestampType

        try:
            frame = self.spark.read.parquet(str(path))
            types = {f.name: f.dataType for f in frame.schema.fields}
        except Exception as exc:
            raise SourceFormatError(f"{display}: cannot read parquet file: {_one_line(exc)}") from exc
        columns = []
        for found, name in mapping.items():
            ref = F.col(_quote(found))
            text = (F.date_format(ref, "yyyy-MM-dd HH:mm:ss")
                    if isinstance(types[found], TimestampType | TimestampNTZType) else ref.cast("string"))
            columns.append(text.alias("r_" + name))
        return frame.select(F.lit(_ROW).alias("_kind"), F.lit(None).cast("string").alias("_line"), *columns)


def _rows_per_split(folder: Path) -> dict[int, int]:
    """Split index -> its rows in `folder`, from the footers of the Parquet files its task wrote there (a
    task writes the rows of its own split only: the `_split` column's statistics name it)."""
    counts: dict[int, int] = {}
    for part in folder.glob("part-*.parquet"):
        metadata = pq.ParquetFile(part).metadata
        column = metadata.schema.names.index("_split")
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            statistics = row_group.column(column).statistics
            if row_group.num_rows == 0:
                continue
            if statistics is None or not statistics.has_min_max or statistics.min != statistics.max:
                raise QueryError(f"{part}: a scratch file of several splits; cannot number its rows")
            counts[statistics.min] = counts.get(statistics.min, 0) + row_group.num_rows
    return counts


def _refused_rows(found: Sequence[Any], columns: Sequence[SourceColumn], row_offset: dict[int, int],
                  skipped: dict[int, list[int]]) -> pa.Table:
    """The rows with a value that does not parse (observed as the lines were written), numbered as
    `SparkEngine._rows_numbered` numbers the others, in row order."""
    rows = sorted(((row_offset[r._split] + r._line_in_split - bisect.bisect_left(skipped.get(r._split, []),
                    r._line_in_split) + 1, r) for r in found), key=lambda numbered: numbered[0])
    table = {"_reason": pa.array([r._reason for _, r in rows], pa.string()),
             "_source_row": pa.array([number for number, _ in rows], pa.int64())}
    for c in columns:
        table["_raw_" + c.name] = pa.array([r["_raw_" + c.name] for _, r in rows], pa.string())
    return pa.table(table)


def _offsets(counts: dict[int, int]) -> dict[int, int]:
    """Split index -> how many (lines, rows) the splits before it hold."""
    offsets, total = {}, 0
    for split in sorted(counts):
        offsets[split] = total
        total += counts[split]
    return offsets


def _one_line(exc: BaseException) -> str:
    """The first line of an error; for a JVM error, of its root cause (py4j's own line says nothing)."""
    cause = getattr(exc, "java_exception", None)
    if cause is not None:
        try:
            while cause.getCause() is not None:
                cause = cause.getCause()
            return str(cause.toString()).strip().splitlines()[0]
        except Exception:  # the gateway may be gone; fall back to Python's text
            pass
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
