"""Where input files live: local paths, folders and globs, `s3://` and `http(s)://` URLs.

Remote files are streamed to a local spool file in fixed-size chunks (bounded memory) and parsed from
there, so one parser serves every location and a re-read never hits the network twice.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import glob
import gzip
import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from shoplake.config import Settings
from shoplake.errors import SourceFormatError

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")
_CHUNK = 8 * 1024 * 1024


def file_format(name: str) -> str:
    """`csv`, `csv.gz` or `parquet` from a file name, or a one-line error."""
    lowered = name.lower().split("?", 1)[0]
    for suffix in (".csv.gz", ".csv", ".parquet", ".gz"):
        if lowered.endswith(suffix):
            return "csv.gz" if suffix == ".gz" else suffix[1:]
    raise SourceFormatError(f"{name}: unsupported file type; expected .csv, .csv.gz or .parquet")


def _is_data_file(name: str) -> bool:
    return name.lower().endswith(DATA_SUFFIXES)


def visible(relative: str) -> bool:
    """Whether a file below a folder is data: no part of its path starts with `.` or `_`.

    The Hadoop/Spark convention: `_truth/`, `_SUCCESS`, `.staging/` and editors' `.swp` files are
    side files, so listing a folder (`shoplake ingest SOURCE DIR`, a landing folder) passes them by.
    """
    return not any(part.startswith((".", "_")) for part in Path(relative).parts)


def s3_filesystem(settings: Settings):
    from pyarrow import fs

    kwargs: dict[str, object] = {"region": settings.s3_region}
    if settings.s3_endpoint:
        parsed = urlparse(settings.s3_endpoint)
        kwargs["endpoint_override"] = parsed.netloc or settings.s3_endpoint
        kwargs["scheme"] = parsed.scheme or "http"
    return fs.S3FileSystem(**kwargs)


def expand(paths: Sequence[str], settings: Settings) -> list[str]:
    """Every data file named by `paths` (files, folders, globs, URLs), sorted within each path."""
    found: list[str] = []
    for raw in paths:
        scheme = urlparse(raw).scheme
        if scheme in ("http", "https"):
            found.append(raw)
        elif scheme == "s3":
            found.extend(_expand_s3(raw, settings))
        else:
            found.extend(_expand_local(raw))
    unique = list(dict.fromkeys(found))
    return unique


def _readable_file(path: Path) -> bool:
    """A file to ingest: a regular file, or a link that ends at one (not a dangling link or a link loop)."""
    try:
        return path.is_file()
    except OSError:  # ELOOP on some Pythons; others answer False
        return False


def _expand_local(raw: str) -> list[str]:
    path = Path(raw).expanduser()
    if any(ch in raw for ch in "*?["):
        found = sorted(p for p in glob.glob(str(path), recursive=True) if _is_data_file(p))
        # Links that lead nowhere (dangling, or in a loop) are not files: leave them out, and say so.
        matches = [m for m in found if _readable_file(Path(m))]
        for skipped in sorted(set(found) - set(matches)):
            log.warning("%s: a broken symbolic link (dangling or in a loop); skipped", skipped)
        if not matches:
            raise SourceFormatError(f"{raw}: no .csv, .csv.gz or .parquet file matches this pattern")
        return [str(Path(m).resolve()) for m in matches]
    if path.is_dir():
        matches = sorted(str(p.resolve()) for p in path.rglob("*")
                         if p.is_file() and _is_data_file(p.name) and visible(str(p.relative_to(path))))
        if not matches:
            raise SourceFormatError(f"{raw}: folder holds no .csv, .csv.gz or .parquet file "
                                    "(names starting with '.' or '_' are side files, not data)")
        return matches
    if path.is_symlink() and not _readable_file(path):
        raise SourceFormatError(f"{raw}: a symbolic link that leads to no file (dangling or in a loop)")
    if not path.exists():
        raise SourceFormatError(f"{raw}: no such file or folder")
    return [str(path.resolve())]


def _expand_s3(raw: str, settings: Settings) -> list[str]:
    from pyarrow import fs

    s3 = s3_filesystem(settings)
    location = raw[len("s3://"):]
    pattern = None
    if any(ch in location for ch in "*?["):
        # List the folder above the first wildcard, then filter by the pattern.
        head = location.split("*")[0].split("?")[0].split("[")[0]
        pattern, location = location, head.rsplit("/", 1)[0]
    try:
        info = s3.get_file_info(location)
        if info.type == fs.FileType.File and pattern is None:
            return [raw]
        if info.type == fs.FileType.NotFound and pattern is None:
            raise SourceFormatError(f"{raw}: no such object or prefix")
        listed = s3.get_file_info(fs.FileSelector(location, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise SourceFormatError(f"{raw}: cannot list S3 location: {_first_line(exc)}") from exc
    keys = sorted(i.path for i in listed if i.type == fs.FileType.File and _is_data_file(i.path))
    if pattern is not None:
        keys = [k for k in keys if fnmatch.fnmatch(k, pattern)]
    else:  # a prefix is listed like a folder: side files below it are not data
        keys = [k for k in keys if visible(k[len(location):].lstrip("/"))]
    if not keys:
        raise SourceFormatError(f"{raw}: no .csv, .csv.gz or .parquet object found")
    return [f"s3://{k}" for k in keys]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def local_copy(uri: str, settings: Settings,
               progress: Callable[[int], None] | None = None) -> Iterator[Path]:
    """A local path for `uri`: the file itself, or a spooled download removed afterwards."""
    scheme = urlparse(uri).scheme
    if scheme not in ("http", "https", "s3"):
        path = Path(uri)
        if not path.is_file():
            raise SourceFormatError(f"{uri}: no such file")
        yield path
        return
    suffix = "." + file_format(uri)
    spool_dir = settings.spool_dir
    if spool_dir:
        spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="shoplake-spool-", suffix=suffix, dir=spool_dir)
    try:
        with os.fdopen(fd, "wb") as out, _open_remote(uri, settings) as stream:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def _open_remote(uri: str, settings: Settings):
    if uri.startswith("s3://"):
        try:
            # compression=None: spool the bytes as stored (pyarrow would otherwise gunzip a .gz key).
            with s3_filesystem(settings).open_input_stream(uri[len("s3://"):], compression=None) as stream:
                yield stream
        except FileNotFoundError as exc:
            raise SourceFormatError(f"{uri}: no such object") from exc
        except OSError as exc:
            raise SourceFormatError(f"{uri}: cannot read from S3: {_first_line(exc)}") from exc
        return
    try:
        response = urllib.request.urlopen(uri, timeout=60)  # noqa: S310 - http(s) only, checked above
    except urllib.error.HTTPError as exc:
        raise SourceFormatError(f"{uri}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SourceFormatError(f"{uri}: cannot download: {_first_line(exc)}") from exc
    with response:
        yield response


def content_digest(path: Path) -> str:
    """SHA-256 of the file's bytes: the identity used for exactly-once ingestion."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_csv_header(path: Path, fmt: str, *, display: str, encoding: str = "utf-8") -> list[str]:
    """The header fields of a CSV(.gz) file, with one-line errors for empty or corrupt files.

    Blank lines after the header are skipped when looking for a first data line: they are not rows.
    """
    if path.stat().st_size == 0:
        raise SourceFormatError(f"{display}: file is empty; expected a CSV header line")
    opener = gzip.open if fmt == "csv.gz" else open
    # A UTF-8 byte order mark is not part of the first column's name.
    text_encoding = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        with opener(path, "rt", encoding=text_encoding, errors="replace", newline="") as handle:
            first = handle.readline()
            has_data = any(line.strip() for line in handle)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceFormatError(f"{display}: cannot read {fmt} file: {_first_line(exc)}") from exc
    if not first.strip():
        raise SourceFormatError(f"{display}: file is empty; expected a CSV header line")
    if not has_data:
        raise SourceFormatError(f"{display}: file has a header but no data rows")
    return next(csv.reader([first]))
