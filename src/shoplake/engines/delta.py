"""Delta Lake storage: the only module that writes tables.

Every table lives at `<lake>/<layer>/<name>` as a plain Delta table (no deletion vectors, no column
mapping) so that any Delta reader can open it. Each write carries shoplake metadata in its commit
(`shoplake.*` keys): a write key that makes the write idempotent, the run id and the row accounting.
Because the metadata is committed atomically with the data, a run killed at any point can be resumed
without double counting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, WriterProperties, write_deltalake
from deltalake import Field as DeltaField
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFound
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from shoplake.errors import LakeNotWritableError, QueryError, TableNotFoundError
from shoplake.faults import crash_point

log = logging.getLogger(__name__)

META_PREFIX = "shoplake."
# zstd keeps files small without costing much write time; every Delta/Parquet reader supports it.
_WRITER_PROPERTIES = WriterProperties(compression="ZSTD", compression_level=1)

# shoplake's exactly-once bookkeeping lives in the commit log: each write's key, the bronze batches a Silver
# commit consumed, the ledger entry. Delta's default log cleanup deletes commit files older than 30 days at
# each checkpoint, which would make consumed batches look new (double counting) and ingested files look
# unseen. So every table is created with log cleanup off, and every commit asks for no cleanup, whatever
# the table says. Checkpoints still happen (they keep opening a long log fast); `vacuum` removes data files.
TABLE_PROPERTIES = {"delta.enableExpiredLogCleanup": "false"}
POST_COMMIT = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
# A folder inside a table's folder that an engine writes into before moving the files next to the table's
# (Spark's writer). Its name starts with "_", so Delta readers and delta-rs's vacuum never look inside:
# `maintenance` removes the ones a killed process left.
WRITER_STAGING_PREFIX = "_spark_staging_"
# Commits that rewrite files or set properties without changing a single row: a table's data at such a
# version equals its data at the version before.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})
# Staged files roll over at this many rows (about 100-200 MB of Parquet for the sources' rows).
_STAGED_FILE_ROWS = 4_000_000


@dataclass(frozen=True)
class Commit:
    """One entry of a table's Delta history, with shoplake's metadata decoded."""

    version: int
    timestamp: datetime
    operation: str
    rows_added: int | None
    meta: dict[str, Any]


class DeltaStore:
    """The lake on disk: locate, read and write Delta tables by catalog name."""

    def __init__(self, lake: Path):
        self.lake = Path(lake)
        # Per table folder: the commits read so far (see `_log`). The bookkeeping asks for a table's whole
        # history several times per write (write keys, consumed batches); reading only the commit files
        # added since the last call makes that cost independent of the history's length.
        self._logs: dict[Path, _CommitLog] = {}
        self._logs_lock = threading.Lock()  # a job's tasks run in threads that share the lake's store

    def path(self, name: str) -> Path:
        layer, _, short = name.partition(".")
        return self.lake / layer / short

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(str(self.path(name)))

    def open(self, name: str, version: int | datetime | None = None) -> DeltaTable:
        """Open a table, optionally at an earlier version or timestamp (time travel)."""
        try:
            table = DeltaTable(str(self.path(name)))
        except DeltaTableNotFound as exc:
            raise TableNotFoundError(f"table {name} has not been written yet: run `shoplake build` "
                                     f"(or `shoplake ingest` for bronze tables)") from exc
        if isinstance(version, datetime):
            # delta-rs answers version 0 for a time before the table existed: refuse that instead.
            first = _decode_commit(table.history()[-1])
            at = version if version.tzinfo else version.replace(tzinfo=UTC)
            if at < first.timestamp:
                raise TableNotFoundError(f"{name} did not exist at {at.isoformat()}: its first version (0) was "
                                         f"written at {first.timestamp.isoformat()}; see `shoplake history {name}`")
        if version is not None:
            try:
                table.load_as_version(version)
            except Exception as exc:  # delta-rs raises several types for a missing version
                raise TableNotFoundError(f"{name} has no version {version}: "
                                         f"see `shoplake history {name}`") from exc
        return table

    def version(self, name: str) -> int | None:
        """Latest version, or None when the table does not exist."""
        return self.open(name).version() if self.exists(name) else None

    def has_new_version(self, name: str, version: int | None) -> bool:
        """Whether `name` has a version after `version` (None: the table did not exist), without reading its
        log: one or two `stat` calls.

        A commit is the atomic creation of `_delta_log/<version>.json`, so the next version exists once that
        file does. If the known version's own file is gone (the log was cleaned up behind a checkpoint, or
        the table was recreated) the answer is True too, and the caller reopens the table.
        """
        log_dir = self.path(name) / "_delta_log"
        if version is None:
            return (log_dir / f"{0:020d}.json").exists()
        return (log_dir / f"{version + 1:020d}.json").exists() or not (log_dir / f"{version:020d}.json").exists()

    def create_empty(self, name: str, schema: pa.Schema, *, description: str = "") -> bool:
        """Create an empty table with `schema` unless it exists. Returns True when created."""
        if self.exists(name):
            return False
        with _writable(self.path(name)):
            write_deltalake(str(self.path(name)), schema.empty_table(), mode="error",
                            name=name, description=description[:1000], configuration=TABLE_PROPERTIES,
                            commit_properties=CommitProperties(custom_metadata={META_PREFIX + "op": "create"}),
                            post_commithook_properties=POST_COMMIT)
        crash_point(name, "create")
        return True

    def write(self, name: str, data: pa.Table | pa.RecordBatchReader, *, mode: str,
              meta: dict[str, Any], description: str = "") -> int:
        """Append or overwrite `data` in one commit carrying `meta`. Returns the new version."""
        custom = _custom_metadata(meta)
        if mode == "append" and isinstance(data, pa.Table) and not data.num_rows and self.exists(name):
            # An empty append (a marker commit) adds no column: no file would carry it, and a column
            # that the table lists but no file holds cannot be read by name.
            existing = self.open(name).schema().to_arrow().names
            data = data.select([n for n in data.schema.names if n in existing])
        with _writable(self.path(name)):
            exists = self.exists(name)
            # `mode` is "append" or "overwrite"; deltalake declares the two in separate overloads.
            write_deltalake(str(self.path(name)), data, mode=mode,  # type: ignore[call-overload]
                            name=name, description=description[:1000],
                            schema_mode="overwrite" if mode == "overwrite" else self._append_schema_mode(name, data),
                            configuration=None if exists else TABLE_PROPERTIES,
                            writer_properties=_WRITER_PROPERTIES,
                            commit_properties=CommitProperties(custom_metadata=custom),
                            post_commithook_properties=POST_COMMIT)
        crash_point(name)
        version = self.open(name).version()
        log.debug("wrote %s version %s (%s)", name, version, mode)
        return version

    def _append_schema_mode(self, name: str, data: pa.Table | pa.RecordBatchReader) -> str | None:
        """`merge` when an append only adds columns to the table (a column declared since the table was
        created, e.g. bronze `_source_lines`): earlier rows read it as NULL. Any other difference is an
        error, as before."""
        if not self.exists(name):
            return None
        existing = set(self.open(name).schema().to_arrow().names)
        incoming = set(data.schema.names)
        return "merge" if existing < incoming else None

    @staticmethod
    def _add_new_columns(table: DeltaTable, schema: pa.Schema) -> None:
        """Add to the table the columns of `schema` it lacks (declared since it was created): files
        committed with them must not carry columns the table's schema does not list."""
        present = set(table.schema().to_arrow().names)
        new = [field for field in schema if field.name not in present]
        if new:
            table.alter.add_columns([DeltaField.from_arrow(field) for field in new],
                                    post_commithook_properties=POST_COMMIT)

    def commit_files(self, name: str, files: Sequence[Path], schema: pa.Schema, *, mode: str,
                     meta: dict[str, Any], description: str = "") -> int:
        """Commit Parquet files another engine wrote into the table folder, as ONE Delta transaction.

        Each file becomes an add action with the per-file statistics Delta readers use (row count, null
        counts, min/max). The commit carries `meta` like `write`, plus `rows_added` (delta-rs records
        row metrics only for its own writes). Returns the new version.
        """
        root = self.path(name)
        for file in files:  # delta-rs checks the rows it writes; files written elsewhere are checked here
            _check_file_schema(name, Path(file), schema)
        actions = [_add_action(root, Path(f)) for f in files]
        custom = _custom_metadata({**meta, "rows_added": sum(_file_rows(Path(f)) for f in files)})
        properties = CommitProperties(custom_metadata=custom)
        with _writable(root):
            if not self.exists(name):
                create_table_with_add_actions(str(root), DeltaSchema.from_arrow(schema), actions, mode="error",
                                              name=name, description=description[:1000],
                                              configuration=TABLE_PROPERTIES, commit_properties=properties,
                                              post_commithook_properties=POST_COMMIT)
            else:
                table = self.open(name)
                self._add_new_columns(table, schema)
                # deltalake's list type is invariant in its union: an AddAction-only list is valid input
                changes: list[AddAction | RemoveAction] = list(actions)
                table.create_write_transaction(changes, mode, schema, commit_properties=properties,
                                               post_commithook_properties=POST_COMMIT)
        crash_point(name)
        version = self.open(name).version()
        log.debug("committed %d files to %s version %s (%s)", len(actions), name, version, mode)
        return version

    def stage(self, name: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> list[Path]:
        """Write `batches` as Parquet files inside the table folder without committing them.

        The files are invisible to every reader until `commit_files` adds them in one transaction; until
        then `discard` removes them. A process that dies in between leaves unreferenced files, which no
        reader sees and `vacuum` removes. Staging lets a command parse all its inputs before it commits any.
        """
        root = self.path(name)
        files: list[Path] = []
        writer: pq.ParquetWriter | None = None
        rows_in_file = 0
        try:
            for batch in batches:
                if writer is None or rows_in_file >= _STAGED_FILE_ROWS:
                    if writer is not None:
                        writer.close()
                    files.append(self.staged_file(name))
                    with _writable(root):
                        writer = pq.ParquetWriter(files[-1], schema, compression="zstd", compression_level=1)
                    rows_in_file = 0
                writer.write_batch(batch)
                rows_in_file += batch.num_rows
        except BaseException:
            if writer is not None:
                writer.close()
            self.discard(files)
            raise
        if writer is not None:
            writer.close()
        return files

    def staged_file(self, name: str) -> Path:
        """A new file name for staged rows of `name` (Parquet, zstd) in the table folder, which it creates."""
        root = self.path(name)
        with _writable(root):
            root.mkdir(parents=True, exist_ok=True)
        return root / f"part-{uuid.uuid4()}-staged.zstd.parquet"

    @staticmethod
    def discard(files: Iterable[Path]) -> None:
        """Remove staged files that will not be committed."""
        for path in files:
            Path(path).unlink(missing_ok=True)

    def history(self, name: str, limit: int | None = None) -> list[Commit]:
        """Commits of a table, newest first."""
        entries = self.open(name).history(limit)
        return [_decode_commit(entry) for entry in entries]

    def commits(self, name: str) -> Iterator[Commit]:
        """All commits, oldest first; nothing when the table does not exist."""
        if self.exists(name):
            yield from self._log(name)

    def _newest_first(self, name: str) -> Iterator[Commit]:
        """Commits newest first."""
        yield from reversed(self._log(name))

    def _log(self, name: str) -> list[Commit]:
        """Every commit of `name`, oldest first, reading only the commit files written since the last call.

        shoplake keeps every commit file (log cleanup is off, see TABLE_PROPERTIES), and a commit is the
        atomic creation of `_delta_log/<version>.json`, so the files read once never change. The cache is
        dropped when the table folder was recreated (its first commit file is another file) and not used
        for a log whose early commits are gone (a table written by another tool with cleanup on): then the
        history comes from delta-rs.
        """
        folder = self.path(name)
        log_dir = folder / "_delta_log"
        try:
            first = (log_dir / f"{0:020d}.json").stat()
        except FileNotFoundError:
            with self._logs_lock:
                self._logs.pop(folder, None)
            return list(reversed(self.history(name)))
        identity = (first.st_ino, first.st_mtime_ns)
        with self._logs_lock:
            cached = self._logs.get(folder)
            if cached is None or cached.identity != identity:
                cached = self._logs[folder] = _CommitLog(identity, [])
            version = len(cached.commits)
            while True:
                try:
                    text = (log_dir / f"{version:020d}.json").read_text(encoding="utf-8")
                except FileNotFoundError:
                    break
                cached.commits.append(_commit_from_file(version, text))
                version += 1
            return list(cached.commits)

    def last_write(self, name: str) -> Commit | None:
        """The newest commit that changed the table's data (maintenance commits passed over)."""
        if not self.exists(name):
            return None
        return next((c for c in self._newest_first(name) if c.operation not in MAINTENANCE_OPERATIONS), None)

    def data_version(self, name: str, version: int | None) -> int | None:
        """The version of the last data change at or before `version`: two versions with the same data
        version hold the same rows (only maintenance happened in between)."""
        if version is None or not self.exists(name):
            return version
        return next((c.version for c in self._newest_first(name)
                     if c.version <= version and c.operation not in MAINTENANCE_OPERATIONS), version)

    def readable_version(self, name: str, version: int) -> int:
        """The newest version with the same rows as `version`. Reading it instead of `version` survives a
        vacuum that removed the files an optimize replaced."""
        newest = version
        for commit in self._log(name):
            if commit.version > newest:
                if commit.operation not in MAINTENANCE_OPERATIONS:
                    break
                newest = commit.version
        return newest

    def find_write(self, name: str, write_key: str) -> Commit | None:
        """The commit that carries `write_key`, if that write already happened."""
        for commit in self.commits(name):
            if commit.meta.get("write_key") == write_key:
                return commit
        return None

    def file_uris(self, name: str, version: int | datetime | None = None) -> list[str]:
        return self.open(name, version).file_uris()

    def row_count(self, name: str, version: int | None = None) -> int:
        """Rows in the current snapshot (or `version`), from the log's per-file statistics (no data read, so
        a version whose files a vacuum removed still counts)."""
        if not self.exists(name):
            return 0
        actions = pa.table(self.open(name, version).get_add_actions(flatten=True))
        return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0


# How delta-rs (object_store) and the OS say that a path may not be written.
_NOT_WRITABLE = {"os error 13": "permission denied", "os error 1)": "operation not permitted",
                 "os error 30": "read-only file system", "os error 28": "no space left on the device",
                 "Permission denied": "permission denied", "Read-only file system": "read-only file system"}


@contextlib.contextmanager
def _writable(path: Path):
    """Turn the storage layer's errors for an unwritable table into one line naming the folder."""
    try:
        yield
    except Exception as exc:  # delta-rs raises its own types (OSError among them) with the OS's words
        text = str(exc)
        why = next((reason for needle, reason in _NOT_WRITABLE.items() if needle in text), None)
        if why is None:
            raise
        raise LakeNotWritableError(f"cannot write the table folder {path.resolve()}: {why}; the lake must be "
                                   f"writable by this user (nothing was committed)") from exc


def _custom_metadata(meta: dict[str, Any]) -> dict[str, str]:
    return {META_PREFIX + k: (v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in meta.items()}


def _check_file_schema(name: str, path: Path, schema: pa.Schema) -> None:
    """Refuse a file whose columns are not the declared ones with the declared types (its footer only)."""
    found = pq.read_schema(path)
    if sorted(found.names) != sorted(schema.names):
        raise QueryError(f"{name}: the file {path.name} has the columns {found.names}, the table declares "
                         f"{schema.names}")
    for field in found:
        declared = schema.field(field.name).type
        if not field.type.equals(declared):
            raise QueryError(f"{name}: the file {path.name} has {field.name} as {field.type}, the table declares "
                             f"{declared}")


def _file_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _add_action(root: Path, path: Path) -> AddAction:
    stat = path.stat()
    relative = path.relative_to(root).as_posix()
    return AddAction(relative, stat.st_size, {}, int(stat.st_mtime * 1000), True, json.dumps(file_stats(path)))


def file_stats(path: Path) -> dict[str, Any]:
    """Delta per-file statistics of a Parquet file, from its footer (no data read).

    Same shapes as delta-rs writes: numbers as JSON numbers, dates `YYYY-MM-DD`, timestamps UTC at
    millisecond precision. Min/max are left out for types and values a reader could misjudge
    (floats with NaN, booleans, long strings); leaving a statistic out only disables skipping.
    """
    metadata = pq.ParquetFile(path).metadata
    schema = metadata.schema.to_arrow_schema()
    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for index, field in enumerate(schema):
        count, low, high, complete = 0, None, None, True
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None:
                complete = False
                continue
            count += stats.null_count if stats.has_null_count else 0
            if stats.has_min_max:
                low = stats.min if low is None else min(low, stats.min)
                high = stats.max if high is None else max(high, stats.max)
            elif stats.num_values:  # values present but no min/max: do not claim a range
                complete = False
        nulls[field.name] = count
        if complete and low is not None and (value := _stat_pair(field.type, low, high)):
            lows[field.name], highs[field.name] = value
    return {"numRecords": metadata.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}


def _stat_pair(kind: pa.DataType, low: Any, high: Any) -> tuple[Any, Any] | None:
    if pa.types.is_integer(kind):
        return int(low), int(high)
    if pa.types.is_floating(kind):
        return None if math.isnan(low) or math.isnan(high) else (float(low), float(high))
    if pa.types.is_date(kind):
        return low.isoformat(), high.isoformat()
    if pa.types.is_timestamp(kind):
        return _timestamp_stat(low), _timestamp_stat(high)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return (low, high) if len(low) <= 64 and len(high) <= 64 else None
    return None


def _timestamp_stat(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def user_metadata(meta: dict[str, Any]) -> str:
    """`meta` as the one `userMetadata` string a delta-spark commit can carry (with `shoplake.` keys)."""
    return json.dumps(_custom_metadata(meta), sort_keys=True)


@dataclass
class _CommitLog:
    """The commits of one table folder read so far, and which folder they were read from."""

    identity: tuple[int, int]
    commits: list[Commit]


def _commit_from_file(version: int, text: str) -> Commit:
    """The commit of one `_delta_log/<version>.json` file: its `commitInfo` action, as `history()` gives it."""
    for line in text.splitlines():
        if '"commitInfo"' in line:
            info = json.loads(line).get("commitInfo")
            if isinstance(info, dict):
                return _decode_commit({"timestamp": 0, **info, "version": version})
    return _decode_commit({"version": version, "timestamp": 0})


def _decode_commit(entry: dict[str, Any]) -> Commit:
    meta: dict[str, Any] = {}
    fields = dict(entry)
    # Commits made by delta-spark (engine spark with the Delta jars) carry the keys in userMetadata.
    if isinstance(entry.get("userMetadata"), str) and entry["userMetadata"].startswith("{"):
        try:
            fields.update(json.loads(entry["userMetadata"]))
        except json.JSONDecodeError:
            pass
    for key, value in fields.items():
        if key.startswith(META_PREFIX):
            short = key[len(META_PREFIX):]
            try:
                meta[short] = json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
            except json.JSONDecodeError:
                meta[short] = value
    metrics = entry.get("operationMetrics") or {}
    return Commit(
        version=int(entry["version"]),
        timestamp=datetime.fromtimestamp(entry["timestamp"] / 1000).astimezone(),
        operation=entry.get("operation", ""),
        rows_added=_int_or_none(metrics.get("num_added_rows", metrics.get("numOutputRows", meta.get("rows_added")))),
        meta=meta,
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def consumed_batches(commits: Iterable[Commit]) -> set[str]:
    """Bronze batch ids already consumed by the writes in `commits`."""
    consumed: set[str] = set()
    for commit in commits:
        consumed.update(commit.meta.get("batches") or [])
    return consumed


def batch_commits(commits: Iterable[Commit]) -> list[Commit]:
    """The commits of a bronze table that added an ingestion batch (their write key is the batch id)."""
    # The first batch may also create the table (operation CREATE TABLE); empty-table creations carry no key.
    return [c for c in commits if c.meta.get("write_key") and c.operation in ("WRITE", "CREATE TABLE")]
