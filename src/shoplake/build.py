"""Building Silver and Gold tables from their declarations, in dependency order.

- `incremental` tables read only the Bronze batches they have not consumed yet (recorded in their own
  commits), quarantine rows that fail `quarantine` checks, remove exact duplicates within the new rows
  and against the rows already in the table, and append.
- `full` tables are recomputed and overwritten, but only when an input version or the table's own
  definition changed; so a second `build` with no new data writes nothing.
Every write carries its row accounting in its own commit (copied to `ops.ledger`) and records its checks
in `ops.data_quality`. Each table is built under its writer lock (and its quarantine table's), so two
builds at once take turns per table and the second finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from shoplake import locks
from shoplake.catalog.spec import Check, TableSpec
from shoplake.engines.delta import batch_commits, consumed_batches
from shoplake.errors import QualityCheckError, ShoplakeError, is_transient
from shoplake.lake import Lake
from shoplake.quality.batches import excluded_batches
from shoplake.quality.ledger import LedgerEntry, QualityResult, record_quality

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    table: str
    status: str  # built | unchanged | failed | skipped
    rows_written: int = 0
    version: int | None = None
    ledger: LedgerEntry | None = None
    quality: list[QualityResult] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0
    transient: bool = False  # failed for a reason that may pass on another attempt (`errors.is_transient`)


def build_tables(lake: Lake, selection: str | None = None, *, run_id: str,
                 on_table: Callable[[BuildResult], None] | None = None) -> list[BuildResult]:
    """Build the selected Silver/Gold tables. A failed table skips its downstream tables only."""
    specs = lake.catalog.select(selection)
    lake.repair()
    lake.ensure_operational_tables()
    results: list[BuildResult] = []
    broken: set[str] = set()
    with lake.engine() as engine:
        for spec in specs:
            started = time.perf_counter()
            if broken & lake.catalog.ancestors(spec.name):
                result = BuildResult(spec.name, "skipped", message="an upstream table failed")
            else:
                try:
                    builder = _build_incremental if spec.build == "incremental" else _build_full
                    tables = [spec.name] + ([f"quarantine.{spec.source}"] if spec.build == "incremental" else [])
                    with locks.writing(lake.store.lake, tables):
                        result = builder(lake, engine, spec, run_id)
                except ShoplakeError as exc:
                    broken.add(spec.name)
                    result = BuildResult(spec.name, "failed", message=str(exc), transient=is_transient(exc))
            result.seconds = time.perf_counter() - started
            results.append(result)
            if on_table:
                on_table(result)
    lake.sync_ledger([r.table for r in results] + [f"quarantine.{s.source}" for s in specs if s.source])
    return results


def inputs_unchanged(lake: Lake, recorded: dict | None, current: dict[str, int | None]) -> bool:
    """Whether the inputs hold the same rows as when `recorded` was bound (an optimize in between changes a
    version, not the data)."""
    if recorded is None or set(recorded) != set(current):
        return False
    store = lake.store
    return all(recorded[n] == v or (recorded[n] is not None and v is not None and
                                    store.data_version(n, int(recorded[n])) == store.data_version(n, v))
               for n, v in current.items())


def definition_hash(spec: TableSpec) -> str:
    """Changes when the table's SQL, columns or checks change, so a code upgrade rebuilds it."""
    parts: list[object] = [spec.sql(), [(c.name, c.type) for c in spec.columns],
                           [(c.name, c.failing_sql, c.action) for c in spec.checks], spec.accounting_sql,
                           spec.owns_rows, list(spec.write_order)]
    if spec.shared_relations:  # only then, so the tables without them keep their hash across this change
        parts.append([list(pair) for pair in spec.shared_relations])
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _typed_select(spec: TableSpec, relation: str) -> str:
    """Cast to the declared column types, so every engine writes the same schema."""
    cols = ", ".join(f'CAST("{c.name}" AS {c.type}) AS "{c.name}"' for c in spec.columns)
    return f"SELECT {cols} FROM {relation}"


def _reason_case(checks: list[Check]) -> str:
    if not checks:
        return "CAST(NULL AS VARCHAR)"
    whens = " ".join(f"WHEN ({c.failing_sql}) THEN '{c.name}'" for c in checks)
    return f"CASE {whens} END"


def _run_row_checks(engine, spec: TableSpec, relation: str) -> tuple[int, dict[str, int], list[QualityResult]]:
    """Count rows, rows per quarantine reason, and failures per row rule, in one scan of `relation`."""
    row_checks = [c for c in spec.checks if c.kind == "row"]
    quarantining = [c for c in row_checks if c.action == "quarantine"]
    failing = ", ".join(f"count(*) FILTER (WHERE {c.failing_sql}) AS f{i}" for i, c in enumerate(row_checks))
    sql = (f"SELECT reason, count(*) AS n{', ' + failing if failing else ''} "
           f"FROM (SELECT *, {_reason_case(quarantining)} AS reason FROM {relation}) AS r GROUP BY reason")
    groups = engine.rows(sql)
    total = sum(g[1] for g in groups)
    by_reason = {g[0]: g[1] for g in groups if g[0] is not None}
    results = [QualityResult(spec.name, c.name, c.failing_sql, c.action, total,
                             sum(g[2 + i] for g in groups)) for i, c in enumerate(row_checks)]
    return total, by_reason, results


def _run_query_checks(engine, spec: TableSpec, total: int, parts: list[str] | None = None) -> list[QualityResult]:
    """Run the query rules on `candidate`; with the `parts` of a split build, a rule grouping by the split
    column (whose failing rows never span two parts) runs on each part as `candidate` in turn: one part's
    groups at a time, where the whole table's may not fit in memory (225M rows at 100M events)."""
    results = []
    for check in (c for c in spec.checks if c.kind == "query"):
        count = f"SELECT count(*) FROM ({check.failing_sql}) AS failing"
        if parts and spec.split_by in check.keys:
            failed = 0
            try:
                for part in parts:
                    engine.define_view("candidate", f"SELECT * FROM {part}")
                    failed += engine.rows(count)[0][0]
            finally:
                engine.define_view("candidate", _union_of(parts))
        else:
            failed = engine.rows(count)[0][0]
        results.append(QualityResult(spec.name, check.name, check.failing_sql, check.action, total, failed))
    return results


def _union_of(parts: list[str]) -> str:
    return " UNION ALL ".join(f"SELECT * FROM {part}" for part in parts)


def _enforce(lake: Lake, spec: TableSpec, run_id: str, results: list[QualityResult]) -> None:
    record_quality(lake.store, run_id, results)
    failed = [r for r in results if r.action == "fail" and r.rows_failed]
    if failed:
        detail = ", ".join(f"{r.rule} ({r.rows_failed} rows)" for r in failed)
        raise QualityCheckError(f"{spec.name}: check failed: {detail}; nothing was written "
                                f"(see ops.data_quality)")
    for r in results:
        if r.action == "warn" and r.rows_failed:
            log.warning("%s: %s failed on %d of %d rows", spec.name, r.rule, r.rows_failed, r.rows_checked)


def check_table(lake: Lake, engine, spec: TableSpec, relation: str, run_id: str,
                parts: list[str] | None = None) -> list[QualityResult]:
    """Run every declared check of `spec` on a whole candidate table bound as `relation`, record them in
    `ops.data_quality` and raise `QualityCheckError` when a `fail` check fails. Used for full rebuilds
    and for tables written by other subsystems (ML predictions). `parts`: the tables whose union is
    `candidate`, in a split build."""
    total, _, quality = _run_row_checks(engine, spec, relation)
    quality += _run_query_checks(engine, spec, total, parts)
    _enforce(lake, spec, run_id, quality)
    return quality


def _bind_inputs(lake: Lake, engine, spec: TableSpec, skip: str | None = None) -> dict[str, int | None]:
    versions = {}
    for name in spec.inputs:
        if name != skip:
            versions[name] = engine.bind(lake.catalog.get(name))
    return versions


def _build_incremental(lake: Lake, engine, spec: TableSpec, run_id: str) -> BuildResult:
    result = _build_increment(lake, engine, spec, run_id)
    if result.status == "built" and result.message == "resumed":
        # An interrupted build's batches were finished first; now the batches that arrived since.
        more = _build_increment(lake, engine, spec, run_id)
        if more.status == "built":
            more.rows_written += result.rows_written
            return more
    return result


def _pending_batches(lake: Lake, spec: TableSpec, written_keys: set[str]) -> list[str] | None:
    """The batches of an interrupted build (quarantine committed, table not), to finish first.

    Their write key depends on the batch list; recomputing the list with batches that arrived since
    would give another key and quarantine the same rows twice.
    """
    for commit in lake.store.commits(f"quarantine.{spec.source}"):
        key = str(commit.meta.get("write_key", ""))
        if commit.meta.get("table") == spec.name and key.endswith(":quarantine") and commit.meta.get("batches"):
            if key.removesuffix(":quarantine") not in written_keys:
                return list(commit.meta["batches"])
    return None


def _build_increment(lake: Lake, engine, spec: TableSpec, run_id: str) -> BuildResult:
    bronze = lake.catalog.get(spec.inputs[0])
    bronze_batches = [c.meta["write_key"] for c in batch_commits(lake.store.commits(bronze.name))]
    commits = list(lake.store.commits(spec.name))
    consumed = consumed_batches(commits)
    pending = _pending_batches(lake, spec, {str(c.meta.get("write_key")) for c in commits})
    excluded = excluded_batches(lake)
    new = pending or sorted(b for b in dict.fromkeys(bronze_batches) if b not in consumed and b not in excluded)
    if not new:
        return BuildResult(spec.name, "unchanged", version=lake.store.version(spec.name),
                           message="no new bronze batches")
    write_key = f"{spec.name}:" + hashlib.sha256("\n".join(new).encode()).hexdigest()[:24]

    engine.bind(bronze, batches=new, where=spec.owns_rows or None)
    versions = _bind_inputs(lake, engine, spec, skip=bronze.name)
    # A view, not a stored table: each read below needs only some columns, and the engine prunes the
    # rest (the counting scan reads just the checked columns), so recomputing beats materialising.
    engine.define_view("flagged", f"SELECT *, {_reason_case([c for c in spec.checks if c.action == 'quarantine'])}"
                                  f" AS _reason FROM ({spec.sql()}) AS candidate")
    try:
        total, by_reason, quality = _run_row_checks(engine, spec, "flagged")
        _enforce(lake, spec, run_id, quality)
        if by_reason:
            _quarantine(lake, engine, spec, bronze, write_key, new, run_id)
        # The table's commit carries the ledger entry; rows out (and so duplicates) come from the commit.
        template = LedgerEntry(run_id=run_id, table_name=spec.name, write_key=f"build:{write_key}", rows_in=total,
                               rows_out=0, diverted={f"quarantine:{r}": n for r, n in by_reason.items()},
                               inputs={"batches": new, **versions})
        done = lake.store.find_write(spec.name, write_key)
        if done is None:
            engine.bind(spec)  # the rows already published, for de-duplication across batches
            good = "SELECT * FROM flagged WHERE _reason IS NULL"
            new_rows = _typed_select(spec, f"({good}) AS g")
            if spec.dedupe:
                published = ", ".join(f'"{c}"' for c in spec.column_names)
                new_rows = (f"SELECT DISTINCT * FROM ({new_rows}) AS n" if not lake.store.exists(spec.name)
                            else f"({new_rows}) EXCEPT (SELECT {published} FROM {spec.name})")
            # Staged by the engine's own writer, then committed (no batch of rows, no file: the commit marks
            # the batches consumed all the same).
            files = engine.stage(lake.store, spec, new_rows, scans_stored=False)
            try:
                meta = {"write_key": write_key, "run_id": run_id, "batches": new, "inputs": versions,
                        "definition": definition_hash(spec), "ledger": template.as_meta(rows_out_from_commit=True)}
                lake.store.commit_files(spec.name, files, spec.arrow_schema, mode="append", meta=meta,
                                        description=spec.description)
            finally:
                done = lake.store.find_write(spec.name, write_key)
                if done is None:  # not committed: the files are no one's
                    lake.store.discard(files)
            assert done is not None, f"{spec.name}: the commit of {write_key} was just written"
    finally:
        engine.drop_view("flagged")
    entry = LedgerEntry.from_commit(spec.name, done)
    if entry is None:  # a commit made before the ledger travelled with the data
        entry = template
        entry.rows_out = entry.rows_written = int(done.rows_added or 0)
    return BuildResult(spec.name, "built", entry.rows_out, done.version, entry, quality,
                       message="resumed" if pending else "")


def _quarantine(lake: Lake, engine, spec: TableSpec, bronze: TableSpec, write_key: str, batches: list[str],
                run_id: str) -> None:
    """Send rows refused by a quarantine check to `quarantine.<source>`, as their raw bronze row."""
    target = lake.catalog.get(f"quarantine.{spec.source}")
    key = f"{write_key}:quarantine"
    if lake.store.find_write(target.name, key) is not None:
        return
    raw_cols = [c.name for c in target.columns if c.name in bronze.column_names and not c.name.startswith("_")]
    select = ", ".join([f'{_as_text(bronze, c)} AS "{c}"' for c in raw_cols] + [
        "CAST(NULL AS VARCHAR) AS _raw_line", "CAST(NULL AS BLOB) AS _raw_bytes", "f._reason AS reason",
        "'silver' AS _stage", "b._source_file", "CAST(NULL AS BIGINT) AS _source_line", "b._source_lines",
        "b._source_row", "b._batch_id",
        "b._ingested_at", "CAST(? AS TIMESTAMPTZ) AS _quarantined_at"])
    sql = (f"SELECT {select} FROM {bronze.name} AS b JOIN "
           f"(SELECT DISTINCT _batch_id, _source_row, _reason FROM flagged WHERE _reason IS NOT NULL) AS f "
           f"USING (_batch_id, _source_row)")
    rows = engine.table(_typed_select(target, f"({sql}) AS q"), [datetime.now(UTC)])
    lake.store.write(target.name, rows, mode="append", description=target.description,
                     meta={"write_key": key, "run_id": run_id, "table": spec.name, "batches": batches})


def _as_text(bronze: TableSpec, column: str) -> str:
    """A bronze value as quarantine text, the same on every engine."""
    if next(c.type for c in bronze.columns if c.name == column) == "TIMESTAMPTZ":
        # Bronze timestamps are whole seconds (every source format is); spelled as DuckDB casts a
        # TIMESTAMPTZ in UTC, which Spark's cast (no offset) would not match.
        return f"""strftime(b."{column}", '%Y-%m-%d %H:%M:%S+00')"""
    return f'CAST(b."{column}" AS VARCHAR)'


@dataclass
class _Candidate:
    """Where a full table's checked rows are before its commit: the temporary table `candidate`, or (a
    split build) the staged files of its parts, each part a view of its files. `staged` lists the files the
    commit adds: the parts', or the candidate's once staged for the commit."""

    parts: list[str] = field(default_factory=list)
    staged: list[Path] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)  # parts still held as (empty) temporary tables


def _materialize_candidate(lake: Lake, engine, spec: TableSpec, versions: dict[str, int | None]) -> _Candidate:
    """Compute the table's rows as `candidate`.

    A table split by a column (`TableSpec.split_by`) over more input rows than one query should hold runs
    its SQL on each part of the inputs (the column's value modulo the number of parts), reading the versions
    already bound. Each part is written at once, sorted by the write order, as uncommitted files in the
    table's folder (`engine.stage`), and is read from them afterwards: the engine holds one part at a time,
    in memory and in spill, however many parts there are (at 100M events the 14 parts held until the write
    had spilled 23.7 GB). `candidate` is then the view of the parts' union. The inputs are bound whole again
    afterwards, for the checks and the accounting. The table's shared relations
    (`TableSpec.shared_relations`) are computed first, over the whole inputs, and dropped at the end.
    """
    select = _typed_select(spec, f"({spec.sql()}) AS t")
    try:
        for name, sql in spec.shared_relations:  # over the whole inputs, bound now; read by every part
            engine.materialize(name, sql)
        return _materialize_parts(lake, engine, spec, versions, select)
    finally:
        for name, _ in spec.shared_relations:
            engine.drop(name)


def _materialize_parts(lake: Lake, engine, spec: TableSpec, versions: dict[str, int | None],
                       select: str) -> _Candidate:
    rows = sum(engine.rows(f"SELECT count(*) FROM {name}")[0][0] for name in spec.inputs) if spec.split_by else 0
    count = engine.parts_for(rows) if spec.split_by else 1
    if count <= 1:
        engine.materialize("candidate", select)
        return _Candidate()
    log.info("%s: %d input rows, built in %d parts by %s", spec.name, rows, count, spec.split_by)
    built = _Candidate()
    try:
        for index in range(count):
            for name in spec.inputs:
                engine.bind_part(lake.catalog.get(name), version=versions[name], column=spec.split_by,
                                 count=count, index=index)
            part = f"candidate_part_{index}"
            engine.materialize(part, select)
            built.parts.append(part)
            built.tables.add(part)
            files = engine.stage(lake.store, spec, f"SELECT * FROM {part}{_ordered(spec)}")
            built.staged.extend(files)
            if files:  # a part without rows has no file: its empty table stands for it
                engine.drop(part)
                built.tables.discard(part)
                engine.define_files_view(part, files)
    except BaseException:
        _drop_candidate(lake, engine, built)
        raise
    finally:
        for name in spec.inputs:
            engine.bind(lake.catalog.get(name), version=versions[name])
    engine.define_view("candidate", _union_of(built.parts))
    return built


def _ordered(spec: TableSpec) -> str:
    return (" ORDER BY " + ", ".join(f'"{c}"' for c in spec.write_order)) if spec.write_order else ""


def _drop_candidate(lake: Lake, engine, candidate: _Candidate, *, committed: bool = False) -> None:
    """Drop what `_materialize_candidate` made; its staged files too unless they were committed."""
    if not candidate.parts:
        engine.drop("candidate")
    else:
        engine.drop_view("candidate")
    for part in candidate.parts:
        if part in candidate.tables:
            engine.drop(part)
        else:
            engine.drop_view(part)
    if not committed:
        lake.store.discard(candidate.staged)


def _build_full(lake: Lake, engine, spec: TableSpec, run_id: str) -> BuildResult:
    versions = _bind_inputs(lake, engine, spec)
    definition = definition_hash(spec)
    last = lake.store.last_write(spec.name)
    if last and last.meta.get("definition") == definition and inputs_unchanged(lake, last.meta.get("inputs"), versions):
        return BuildResult(spec.name, "unchanged", version=lake.store.version(spec.name), message="inputs unchanged")

    candidate = _materialize_candidate(lake, engine, spec, versions)
    committed = False
    try:
        total = engine.rows("SELECT count(*) FROM candidate")[0][0]
        quality = check_table(lake, engine, spec, "candidate", run_id, candidate.parts)
        entry = None
        if spec.accounting_sql:
            table = engine.table(spec.accounting_sql)
            counts = table.to_pylist()[0]
            rows_in, rows_out = int(counts.pop("rows_in")), int(counts.pop("rows_out"))
            entry = LedgerEntry(run_id=run_id, table_name=spec.name, write_key="", rows_in=rows_in,
                                rows_out=rows_out, diverted={k: int(v) for k, v in counts.items() if v},
                                rows_written=total, inputs=versions)
            entry.write_key = f"build:{spec.name}:v{{version}}"
        meta = {"write_key": f"{spec.name}:{run_id}", "run_id": run_id, "inputs": versions, "definition": definition}
        if entry:
            meta["ledger"] = entry.as_meta()
        if not candidate.parts:
            # The rows are stored already: staging only reads and sorts them, as each part of a split build.
            candidate.staged.extend(engine.stage(lake.store, spec, f"SELECT * FROM candidate{_ordered(spec)}"))
        # Split: the parts are written already, each sorted on its own (their files' row groups are in write
        # order part by part, which skips as many row groups as one sort would). One commit adds the files.
        version = lake.store.commit_files(spec.name, candidate.staged, spec.arrow_schema, mode="overwrite",
                                          meta=meta, description=spec.description)
        committed = True
    finally:
        if not committed and candidate.staged:
            # Failed after the commit landed (reading its version back): its files are the table's now.
            last = lake.store.last_write(spec.name)
            committed = bool(last and last.meta.get("write_key") == f"{spec.name}:{run_id}")
        _drop_candidate(lake, engine, candidate, committed=committed)
    if entry:
        entry.write_key = f"build:{spec.name}:v{version}"
        entry.table_version = version
    return BuildResult(spec.name, "built", total, version, entry, quality)
