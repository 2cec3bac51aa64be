"""Landing zones: folders (or `s3://` prefixes) where new raw files arrive (the Auto Loader pattern).

An ingest task pointed at a landing location ingests only the files it has not ingested yet:

- A file whose path, size and modification time match an entry of the landing manifest
  (`<lake>/_jobs/landing/<source>.json`), and whose batch has a ledger entry, is skipped without being
  read: that is what keeps a poll or a daily run over a large landing folder cheap.
- Any other file goes to `ingest_files`, which identifies it by the SHA-256 of its content: new
  content is ingested, content already ingested (a copy, a re-upload) is reported as skipped.
- A missing landing location means nothing to do, not an error. Hidden files (`.name`, `_name`) are
  ignored, so writers can upload under such a name and rename when complete.

Files are ingested one by one: a corrupt file does not hold back the good ones, and the task then fails
naming it (move it out of the landing folder and resume the run).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from shoplake.errors import ShoplakeError, SourceFormatError
from shoplake.ingest import IngestResult, ingest_files
from shoplake.lake import Lake
from shoplake.layers.ops import LEDGER
from shoplake.sources import locations

log = logging.getLogger(__name__)

_DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")


@dataclass(frozen=True)
class LandingFile:
    uri: str
    size: int
    mtime_ns: int


@dataclass
class LandingScan:
    """What a landing location holds compared with what was ingested."""

    location: str
    exists: bool
    new: list[LandingFile] = field(default_factory=list)
    known: list[LandingFile] = field(default_factory=list)

    def describe(self) -> str:
        if not self.exists:
            return f"no landing location {self.location}"
        return f"{len(self.new)} new file(s), {len(self.known)} already ingested"


@dataclass
class LandingResult:
    scan: LandingScan
    results: list[IngestResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def rows_written(self) -> int:
        return sum(r.rows_bronze + r.rows_quarantined for r in self.results)

    def describe(self) -> str:
        if not self.scan.exists:
            return f"nothing to do: no landing location {self.scan.location}"
        ingested = [r for r in self.results if r.status in ("ingested", "completed")]
        already = len(self.scan.known) + sum(r.status == "skipped" for r in self.results)
        parts = []
        if ingested:
            quarantined = sum(r.rows_quarantined for r in ingested)
            parts.append(f"{len(ingested)} new file(s) ingested ({sum(r.rows_bronze for r in ingested):,} rows"
                         + (f", {quarantined:,} quarantined" if quarantined else "") + ")")
        else:
            parts.append("no new file")
        if already:
            parts.append(f"{already} already ingested")
        if self.failures:
            parts.append(f"{len(self.failures)} failed")
        return ", ".join(parts)


def list_location(location: str, settings) -> list[LandingFile] | None:
    """Data files at a landing location, sorted by path; None when the location does not exist."""
    if location.startswith("s3://"):
        return _list_s3(location, settings)
    if "://" in location:
        raise SourceFormatError(f"{location}: a landing location is a folder or an s3:// prefix")
    root = Path(location).expanduser()
    if not root.is_dir():
        return None
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and path.name.lower().endswith(_DATA_SUFFIXES) and locations.visible(str(relative)):
            stat = path.stat()
            found.append(LandingFile(str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return found


def _list_s3(location: str, settings) -> list[LandingFile] | None:
    from pyarrow import fs

    prefix = location[len("s3://"):].rstrip("/")
    s3 = locations.s3_filesystem(settings)  # the same client configuration as ingestion uses
    try:
        infos = s3.get_file_info(fs.FileSelector(prefix, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise SourceFormatError(f"{location}: cannot list the S3 prefix: {exc}") from exc
    found = []
    for info in sorted(infos, key=lambda i: i.path):
        relative = info.path[len(prefix):].lstrip("/")
        if info.type == fs.FileType.File and info.path.lower().endswith(_DATA_SUFFIXES) and locations.visible(relative):
            found.append(LandingFile(f"s3://{info.path}", info.size or 0, info.mtime_ns or 0))
    return found or None


def manifest_path(lake: Lake, source: str) -> Path:
    return lake.store.lake / "_jobs" / "landing" / f"{source}.json"


def _read_manifest(lake: Lake, source: str) -> dict[str, dict]:
    path = manifest_path(lake, source)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # a damaged manifest only costs a re-hash of the files
        log.warning("%s is unreadable (%s); files will be identified by content", path, exc)
        return {}


def _write_manifest(lake: Lake, source: str, manifest: dict[str, dict]) -> None:
    path = manifest_path(lake, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(temp, path)  # atomic: a reader sees the old or the new manifest, never half of one


def scan(lake: Lake, source: str, location: str) -> LandingScan:
    """Split a landing location's files into new ones and ones already ingested (no file is read)."""
    files = list_location(location, lake.settings)
    if files is None:
        return LandingScan(location, exists=False)
    manifest = _read_manifest(lake, source)
    candidates = {}
    for f in files:
        entry = manifest.get(f.uri)
        if entry and entry.get("size") == f.size and entry.get("mtime_ns") == f.mtime_ns:
            candidates[f.uri] = entry["batch_id"]
    done = _recorded(lake, {f"ingest:{b}" for b in candidates.values()}) if candidates else set()
    result = LandingScan(location, exists=True)
    for f in files:
        batch = candidates.get(f.uri)
        (result.known if batch and f"ingest:{batch}" in done else result.new).append(f)
    return result


def _recorded(lake: Lake, keys: set[str]) -> set[str]:
    """Which ledger write keys exist. The ledger entry is the proof an ingest completed (the manifest is
    only a shortcut to it); one column of the ledger is read straight from its Delta snapshot."""
    if not lake.store.exists(LEDGER.name):
        return set()
    dataset = lake.store.open(LEDGER.name).to_pyarrow_dataset()
    found = dataset.to_table(columns=["write_key"], filter=pc.field("write_key").isin(sorted(keys)))
    return set(found.column("write_key").to_pylist())


def ingest_landing(lake: Lake, source: str, location: str, *, run_id: str,
                   on_file: Callable[[IngestResult], None] | None = None, encoding: str = "utf-8") -> LandingResult:
    """Ingest the files of a landing location that were not ingested yet, one file at a time."""
    found = scan(lake, source, location)
    result = LandingResult(found)
    manifest = _read_manifest(lake, source) if found.new else {}
    for f in found.new:
        started = time.perf_counter()
        try:
            (ingested,) = ingest_files(lake, source, [f.uri], run_id=run_id, encoding=encoding)
        except ShoplakeError as exc:
            log.info("%s", exc)
            result.failures.append(str(exc))
            continue
        log.info("%s: %s in %.1fs", f.uri, ingested.status, time.perf_counter() - started)
        result.results.append(ingested)
        manifest[f.uri] = {"size": f.size, "mtime_ns": f.mtime_ns, "batch_id": ingested.batch_id}
        _write_manifest(lake, source, manifest)
        if on_file:
            on_file(ingested)
    return result
