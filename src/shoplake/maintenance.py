"""Table maintenance: compact small files, remove files no snapshot within the retention needs, checkpoint.

Every ingest, build, job attempt and logged query adds files and commits. Left alone, a year of daily runs
turns tables into thousands of small files. Three operations keep them in shape, each declared per table
(`catalog.spec.Maintenance`) and run by `shoplake optimize`, `shoplake vacuum` and the `daily` job's
`maintain` task:

- **compact** (delta-rs `optimize.compact`): rewrite the small files of the current snapshot into files of
  about the declared target size, in one commit that changes no row (`OPTIMIZE`). Skipped while a table has
  fewer small files than declared (`min_small_files`). `--zorder` clusters by the declared columns instead.
- **vacuum** (delta-rs `vacuum`, full mode): delete files that no version committed within the retention
  needs: files an optimize or overwrite replaced more than `retention_hours` ago, and files no commit ever
  referenced (staged by a process that died before committing) last modified before that, and the staging
  folders of writes that never finished (Spark's, which vacuum does not look into). A reader holding
  an older snapshot, and time travel to a version inside the window, keep working. A retention below the
  declared one is refused unless asked for explicitly: it breaks time travel and readers of older snapshots.
- **checkpoint**: write a Delta checkpoint when many commits followed the last one, so opening the table
  does not replay a long log.

What is never removed: commit files. Delta's log cleanup would delete commits older than 30 days, and
shoplake's exactly-once bookkeeping lives in them (see `engines.delta.TABLE_PROPERTIES`), so maintenance
turns that cleanup off on tables that lack the property (tables created by older versions or by other
writers) instead of running it.

Each table is maintained under its writer lock (`shoplake.locks`): it waits for a build or ingest writing it
and never interleaves with one. Maintenance commits change no row; builds and models compare data versions
(`DeltaStore.data_version`), so a compaction rebuilds and retrains nothing.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deltalake import CommitProperties, DeltaTable, WriterProperties

from shoplake import locks
from shoplake.catalog.spec import TableSpec
from shoplake.engines.delta import META_PREFIX, POST_COMMIT, TABLE_PROPERTIES, WRITER_STAGING_PREFIX
from shoplake.errors import ConfigError
from shoplake.lake import Lake

log = logging.getLogger(__name__)

_MB = 1024 * 1024
# Commits since the last checkpoint above which maintenance writes one (delta-rs writes one every 100).
CHECKPOINT_AFTER_COMMITS = 20
_WRITER_PROPERTIES = WriterProperties(compression="ZSTD", compression_level=1)


@dataclass
class TableMaintenance:
    """What maintenance did to one table."""

    table: str
    files_before: int = 0  # files in the current snapshot before
    files_after: int = 0
    compacted: bool = False
    zordered: bool = False
    files_vacuumed: int = 0  # files deleted from the table folder
    checkpoint: bool = False
    properties_set: bool = False
    seconds: float = 0.0
    note: str = ""


@dataclass
class MaintenanceReport:
    tables: list[TableMaintenance] = field(default_factory=list)

    @property
    def files_vacuumed(self) -> int:
        return sum(t.files_vacuumed for t in self.tables)

    def describe(self) -> str:
        compacted = [t for t in self.tables if t.compacted]
        parts = [f"{len(self.tables)} table(s) maintained"]
        if compacted:
            parts.append(f"{len(compacted)} compacted ({sum(t.files_before for t in compacted):,} files into "
                         f"{sum(t.files_after for t in compacted):,})")
        parts.append(f"{self.files_vacuumed:,} unreferenced file(s) removed")
        checkpoints = sum(t.checkpoint for t in self.tables)
        if checkpoints:
            parts.append(f"{checkpoints} checkpoint(s)")
        return ", ".join(parts)


def select_tables(lake: Lake, selection: str | None) -> list[TableSpec]:
    """Tables picked by a selection of table or layer names (`silver.events`, `ops`, `gold bronze`); None or
    empty: every table. Only tables that exist are returned."""
    specs = lake.catalog.ordered()
    if selection and selection.strip():
        picked: set[str] = set()
        layers = {s.layer for s in specs}
        for term in selection.replace(",", " ").split():
            if term in layers:
                picked |= {s.name for s in specs if s.layer == term}
            else:
                picked.add(lake.catalog.get(term).name)  # raises with a suggestion for an unknown name
        specs = [s for s in specs if s.name in picked]
    return [s for s in specs if lake.store.exists(s.name)]


def retention_for(spec: TableSpec, retain_hours: float | None, *, allow_short: bool) -> float:
    """The retention to vacuum `spec` with: the declared one, or `retain_hours` when at least as long (or
    shorter with `allow_short`)."""
    declared = spec.maintenance.retention_hours
    if retain_hours is None:
        return declared
    if retain_hours < declared and not allow_short:
        raise ConfigError(f"a retention of {retain_hours:g} h is below {spec.name}'s declared {declared} h: time "
                          f"travel to older versions and readers holding them would break; pass "
                          f"--allow-short-retention if no one reads or writes the lake meanwhile")
    return retain_hours


def maintain(lake: Lake, selection: str | None = None, *, run_id: str | None = None, compact: bool = True,
             vacuum: bool = True, zorder: bool = False, retain_hours: float | None = None,
             allow_short_retention: bool = False, dry_run: bool = False,
             on_table: Callable[[TableMaintenance], None] | None = None) -> MaintenanceReport:
    """Compact, vacuum and checkpoint the selected tables (default: every table); see the module doc.

    Args:
        retain_hours: vacuum retention for every selected table instead of each table's declared one.
        allow_short_retention: accept `retain_hours` below a table's declared retention.
        dry_run: report what vacuum would delete and whether tables would be compacted; change nothing.
    """
    specs = select_tables(lake, selection)
    retention = {s.name: retention_for(s, retain_hours, allow_short=allow_short_retention) for s in specs}
    report = MaintenanceReport()
    for spec in specs:
        started = time.perf_counter()
        with locks.writing(lake.store.lake, [spec.name]):
            result = _maintain_table(lake, spec, run_id=run_id, compact=compact, vacuum=vacuum, zorder=zorder,
                                     retention_hours=retention[spec.name], dry_run=dry_run)
        result.seconds = time.perf_counter() - started
        report.tables.append(result)
        log.info("%s: %s", spec.name, result)
        if on_table:
            on_table(result)
    return report


def _maintain_table(lake: Lake, spec: TableSpec, *, run_id: str | None, compact: bool, vacuum: bool, zorder: bool,
                    retention_hours: float, dry_run: bool) -> TableMaintenance:
    path = str(lake.store.path(spec.name))
    table = DeltaTable(path)
    result = TableMaintenance(spec.name, files_before=len(table.file_uris()))
    commit = CommitProperties(custom_metadata={META_PREFIX + "op": "maintain", META_PREFIX + "run_id": run_id or ""})
    settings = spec.maintenance

    missing = {k: v for k, v in TABLE_PROPERTIES.items() if table.metadata().configuration.get(k) != v}
    if missing and not dry_run:
        table.alter.set_table_properties(missing, commit_properties=commit, post_commithook_properties=POST_COMMIT)
        result.properties_set = True

    if zorder and settings.zorder_by:
        if not dry_run:
            table.optimize.z_order(list(settings.zorder_by), target_size=settings.target_file_mb * _MB,
                                   writer_properties=_WRITER_PROPERTIES, commit_properties=commit,
                                   post_commithook_properties=POST_COMMIT)
        result.zordered = True
    elif zorder:
        result.note = "no zorder_by columns declared"
    elif compact:
        small = _small_files(table, settings.target_file_mb * _MB // 2)
        if small >= settings.min_small_files:
            if not dry_run:
                metrics = table.optimize.compact(target_size=settings.target_file_mb * _MB,
                                                 writer_properties=_WRITER_PROPERTIES, commit_properties=commit,
                                                 post_commithook_properties=POST_COMMIT)
                result.compacted = bool(metrics.get("numFilesRemoved"))
            else:
                result.compacted = True
    table = DeltaTable(path)
    result.files_after = len(table.file_uris())

    if vacuum:
        # Full mode: also files no commit references (staged by a process killed before its commit), once
        # they are older than the retention, so a file being staged right now is never one of them.
        doomed = table.vacuum(retention_hours=int(retention_hours), dry_run=True, full=True,
                              enforce_retention_duration=False)
        # delta-rs lists the files of every remove tombstone past the retention, also those an earlier
        # vacuum already deleted: count (and act on) only the files still there.
        doomed = [name for name in doomed if (lake.store.path(spec.name) / name).exists()]
        if doomed and not dry_run:
            doomed = table.vacuum(retention_hours=int(retention_hours), dry_run=False, full=True,
                                  enforce_retention_duration=False, commit_properties=commit,
                                  post_commithook_properties=POST_COMMIT)
        result.files_vacuumed = len(doomed) + _remove_stale_staging(lake.store.path(spec.name), retention_hours,
                                                                    dry_run=dry_run)

    if not dry_run and _commits_since_checkpoint(lake, spec.name) >= CHECKPOINT_AFTER_COMMITS:
        DeltaTable(path).create_checkpoint()
        result.checkpoint = True
    return result


def _remove_stale_staging(folder: Path, retention_hours: float, *, dry_run: bool) -> int:
    """Remove the writer staging folders (`WRITER_STAGING_PREFIX`) of `folder` whose files were all last
    modified before the retention: a process killed during its write left them (a live write keeps
    touching its own). delta-rs's vacuum skips folders whose name starts with "_". Returns the files."""
    cutoff = time.time() - retention_hours * 3600
    removed = 0
    for staging in (p for p in folder.glob(WRITER_STAGING_PREFIX + "*") if p.is_dir()):
        files = [p for p in staging.rglob("*") if p.is_file()]
        if max((p.stat().st_mtime for p in files), default=staging.stat().st_mtime) >= cutoff:
            continue
        removed += sum(p.suffix == ".parquet" for p in files)
        if not dry_run:
            shutil.rmtree(staging, ignore_errors=True)
            log.info("%s: removed %s, left by a write that did not finish", folder.name, staging.name)
    return removed


def _small_files(table: DeltaTable, below_bytes: int) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return 0
    return int(pc.sum(pc.less(actions["size_bytes"], below_bytes)).as_py() or 0)


def _commits_since_checkpoint(lake: Lake, name: str) -> int:
    log_dir = lake.store.path(name) / "_delta_log"
    checkpoints = [int(p.name.split(".")[0]) for p in log_dir.glob("*.checkpoint*.parquet")]
    version = lake.store.version(name) or 0
    return version - (max(checkpoints) if checkpoints else -1)
