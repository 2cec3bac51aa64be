"""Physical lines of a CSV file, counted independently of the CSV parser.

The parsers (DuckDB's, Spark's) report rows; a row they cannot split can swallow the lines after it (one
unterminated quote once turned 999 lines into a single refused row). So every CSV file is first scanned
byte by byte, vectorised with numpy, in fixed-size chunks:

- a *physical line* ends at LF (CRLF is one line end; a last line without LF still counts);
- a line is *blank* when it holds nothing but an optional CR;
- the quotes of each line decide which lines form one record: a line with an odd number of double quotes
  opens (or closes) a quoted field that spans line breaks. An opening line is accepted only when it and
  the lines up to the next odd line parse as exactly one record with the header's field count (Python's
  `csv` module, strict); otherwise it is a broken line on its own (`unterminated_quote`) and the next odd
  line is tried as an opener. So a stray quote costs its own line, never the lines after it;
- lines that no parser should see are set aside with a reason before parsing: `invalid_encoding` (not
  valid in the declared encoding), `nul_byte`, `control_character` (other than TAB, or a CR not ending the
  line), `line_too_long`, `repeated_header`, `unterminated_quote`.

The invariant every ingest keeps (see README, "Row accounting"): the file's *physical data lines* — all
lines after the header except blank lines outside quoted fields — equal the sum of `_source_lines` over
the file's bronze rows and its ingest-stage quarantine rows. A record whose quoted field spans k lines is
one row with `_source_lines = k`; every set-aside or refused line is one quarantine row with its own
line number.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from isal import isal_zlib

from shoplake.errors import SourceFormatError

# A line or record longer than this is refused (`line_too_long`); the CSV parsers get the same limit.
MAX_LINE_BYTES = 8 * 1024 * 1024
# A quoted field may span at most this many lines: it bounds the work of judging a stray quote, whose
# would-be record otherwise runs to the next odd line, however far.
MAX_RECORD_LINES = 1_000
_CHUNK = 16 * 1024 * 1024  # bounds the scan's memory: about three blocks at a time
_TAB, _LF, _CR, _QUOTE, _NUL = 9, 10, 13, 34, 0
_BOM = b"\xef\xbb\xbf"
# What ISA-L raises for a corrupt stream (its stubs declare `error` as an instance, not a class)
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)

# Encodings a source file may declare (allow-list): names as Python's codecs spell them.
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "latin-1": "latin-1", "latin1": "latin-1",
             "iso-8859-1": "latin-1", "cp1252": "cp1252", "windows-1252": "cp1252"}


def check_encoding(name: str) -> str:
    """The codec name for a declared encoding, or a one-line error listing the accepted ones."""
    codec = ENCODINGS.get(name.strip().lower())
    if codec is None:
        raise SourceFormatError(f"unsupported encoding {name!r}: expected one of utf-8, latin-1, cp1252 "
                                f"(windows-1252)")
    return codec


@dataclass(frozen=True)
class BrokenLine:
    """A physical line set aside before parsing, or refused by the parser."""

    line: int  # 1-based physical line number (the header is line 1)
    reason: str
    raw: bytes  # the line's bytes exactly as in the file, without its line end
    lines: int = 1  # physical lines it covers (more than 1 only for a refused multi-line record)


@dataclass
class LineScan:
    """Where the physical lines of one CSV file are, and which of them form records.

    Nothing is kept per line: memory is two numbers per scanned block plus the exceptional lines (blank,
    set aside, multi-line records), so a file of any length is scanned in bounded memory (at 100M lines,
    arrays per line took 1.8 GB). A line's bytes are found again by reading its block of the plain file.
    """

    physical_lines: int
    end_offset: int  # bytes of the file, uncompressed
    block_lines: np.ndarray  # 0-based index of the first line of each scanned block, in order
    block_offsets: np.ndarray  # byte offset of that line (decompressed)
    blank_lines: np.ndarray  # sorted 0-based indexes of the blank lines
    set_aside: dict[int, str]  # 0-based line index -> reason
    encoding: str
    plain: Path  # the file's bytes uncompressed: the file itself, or the copy made while scanning a gzip file
    spool_dir: Path | None = None  # where temporary copies go
    mixed_line_ends: bool = False  # some lines end in CRLF, others in LF
    records: dict[int, int] = field(default_factory=dict)  # a multi-line record: its first line -> its last
    _cleanup: list[Path] = field(default_factory=list)

    @property
    def multiline_records(self) -> int:
        return len(self.records)

    def continuation_lines(self) -> np.ndarray:
        """Sorted 0-based lines inside a record that began on an earlier line."""
        if not self.records:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(first + 1, last + 1, dtype=np.int64)
                               for first, last in sorted(self.records.items())])

    @property
    def data_lines(self) -> int:
        """Lines after the header, except blank lines outside quoted fields: what destinations must sum to."""
        blank = self.blank_lines[self.blank_lines > 0]
        outside = np.count_nonzero(~np.isin(blank, self.continuation_lines()))
        return int(self.physical_lines - 1 - outside)

    def excluded_units(self, *, multiline: bool = True) -> np.ndarray:
        """Sorted lines that are not the first line of what a CSV parser sees as one line: lines set aside
        (not in the parse input) and, for a parser reading quoted fields across lines, continuation lines."""
        aside = np.array(sorted(self.set_aside), dtype=np.int64)
        return np.union1d(aside, self.continuation_lines()) if multiline else aside

    def spans(self, first_lines: np.ndarray) -> np.ndarray:
        """Physical lines covered by the records starting at `first_lines` (0-based)."""
        if not self.records:
            return np.ones(len(first_lines), dtype=np.int64)
        return np.array([self.records.get(int(f), int(f)) - int(f) + 1 for f in first_lines], dtype=np.int64)

    def locate(self, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(byte offset, bytes without the line end) of each 0-based line in `lines`; a line equal to
        `physical_lines` is the end of the file (offset `end_offset`, length 0). Reads each block that holds
        one of them once."""
        lines = np.asarray(lines, dtype=np.int64)
        starts, lengths = np.zeros(len(lines), dtype=np.int64), np.zeros(len(lines), dtype=np.int64)
        at_end = lines >= self.physical_lines
        starts[at_end] = self.end_offset
        inside = np.flatnonzero(~at_end)
        blocks = np.searchsorted(self.block_lines, lines[inside], side="right") - 1
        bounds = np.append(self.block_offsets, self.end_offset)
        with open(self.plain, "rb") as handle:
            for block in np.unique(blocks):
                begin, end = int(bounds[block]), int(bounds[block + 1])
                handle.seek(begin)
                data = np.frombuffer(handle.read(end - begin), dtype=np.uint8)
                ends = np.flatnonzero(data == _LF)
                if len(ends) == 0 or ends[-1] != len(data) - 1:
                    ends = np.append(ends, len(data))  # the file's last line, without LF
                line_starts = np.concatenate(([0], ends[:-1] + 1))
                wanted = inside[blocks == block]
                local = lines[wanted] - int(self.block_lines[block])
                first, stop = line_starts[local], ends[local]
                has_cr = (stop > first) & (data[np.maximum(stop - 1, 0)] == _CR)
                starts[wanted] = begin + first
                lengths[wanted] = stop - first - has_cr
        return starts, lengths

    def raw(self, line_index: int) -> bytes:
        """The bytes of one physical line (0-based) as in the file, without its line end."""
        (start,), (length,) = self.locate(np.array([line_index]))
        return self.read(int(start), int(start + length))

    def read(self, start: int, end: int) -> bytes:
        """Bytes `start:end` of the file, uncompressed."""
        with open(self.plain, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    def set_aside_lines(self) -> list[BrokenLine]:
        lines = np.array(sorted(self.set_aside), dtype=np.int64)
        starts, lengths = self.locate(lines)
        return [BrokenLine(int(i) + 1, self.set_aside[int(i)], self.read(int(s), int(s + n)))
                for i, s, n in zip(lines, starts, lengths, strict=True)]

    def close(self) -> None:
        for path in self._cleanup:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._cleanup.clear()


def kept_lines(excluded: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The `positions`-th (0-based) integers from 0 up that are not in the sorted, distinct `excluded`:
    the k-th kept line is k plus the excluded lines at or below it, found without listing the kept ones."""
    shifted = excluded - np.arange(len(excluded), dtype=np.int64)  # non-decreasing
    positions = np.asarray(positions, dtype=np.int64)
    return positions + np.searchsorted(shifted, positions, side="right")


def _raw_chunks(path: Path, fmt: str, *, display: str) -> Iterator[bytes]:
    """The file's (decompressed) bytes in large blocks; a truncated or corrupt gzip is a one-line error."""
    try:
        with open(path, "rb") as handle:
            if fmt != "csv.gz":
                while chunk := handle.read(_CHUNK):
                    yield chunk
                return
            # ISA-L's inflater, zlib's interface at twice its speed (the 10M-event file: 1.82 s against
            # 3.57 s), not the gzip module, whose small internal reads cost a third more. It checks each
            # member's CRC-32 and length, so a file this scan reads whole is a verified gzip. A new
            # decompressor per member, as `gzip -c a b > c` concatenates members. Output is bounded per call.
            inflater, fed = isal_zlib.decompressobj(wbits=31), False
            while block := handle.read(_CHUNK // 4):
                while block:
                    fed = True
                    out = inflater.decompress(block, _CHUNK)
                    if out:
                        yield out
                    if inflater.eof:
                        block = inflater.unused_data
                        inflater, fed = isal_zlib.decompressobj(wbits=31), False
                    else:
                        block = inflater.unconsumed_tail
            if fed and not inflater.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
    except (OSError, EOFError, _ISAL_ERROR) as exc:
        raise SourceFormatError(f"{display}: cannot read the {fmt} file ({_first_line(exc)}); is it truncated "
                                f"or corrupt? nothing was written") from exc


def _chunks(path: Path, fmt: str, *, display: str, copy_to: Path | None) -> Iterator[bytes]:
    """`_raw_chunks` read ahead on a thread: ISA-L (measured: two threads inflate as fast as one) and file
    reads release the GIL, so inflating the next block overlaps with the numpy scan of this one. With
    `copy_to`, the bytes are also written there."""
    blocks: queue.Queue = queue.Queue(maxsize=2)
    done = object()

    def produce() -> None:
        try:
            with open(copy_to, "wb") if copy_to else contextlib.nullcontext() as copy:
                for block in _raw_chunks(path, fmt, display=display):
                    if copy:
                        copy.write(block)
                    blocks.put(block)
        except SourceFormatError as exc:
            blocks.put(exc)
        except OSError as exc:
            folder = copy_to.parent if copy_to else "the spool folder"
            blocks.put(SourceFormatError(f"{display}: cannot write its uncompressed copy in {folder} "
                                         f"({_first_line(exc)}); set spool_dir to a folder with room"))
        blocks.put(done)

    threading.Thread(target=produce, name=f"line-scan {path.name}", daemon=True).start()
    while (block := blocks.get()) is not done:
        if isinstance(block, SourceFormatError):
            raise block
        yield block


def count_physical_lines(path: Path, fmt: str, *, display: str | None = None) -> int:
    """The file's physical data lines (the accounting invariant's total; see the module docstring).

    For the ingest ledger (`inputs.physical_lines`). Parquet files have no lines: their row count.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    scan = scan_csv(path, fmt, expected_fields=None, encoding="utf-8", display=display or str(path))
    try:
        return scan.data_lines
    finally:
        scan.close()


def scan_csv(path: Path, fmt: str, *, expected_fields: int | None, encoding: str, display: str,
             spool_dir: Path | None = None) -> LineScan:
    """Scan the physical lines of a CSV(.gz) file; see the module docstring for what is set aside.

    Args:
        expected_fields: the header's field count, to judge records spanning lines (None: count only).
        encoding: a codec from `ENCODINGS`; lines that do not decode are set aside as `invalid_encoding`.
        spool_dir: where temporary copies go (None: the system temp folder). A gzip file is written there
            uncompressed while it is scanned: the parser then reads plain bytes, in parallel, instead of
            inflating the file a second time on one thread; refused lines are read back from it.
    """
    block_lines: list[int] = []
    block_offsets: list[int] = []
    odd_parts: list[np.ndarray] = []  # line indexes with an odd number of quotes
    blank_parts: list[np.ndarray] = []
    set_aside: dict[int, str] = {}
    decoder_check = _decodable_check(encoding)
    offset = 0  # of the next region in the decompressed stream
    line_base = 0
    carry = b""
    header_content: bytes | None = None
    line_ends = [0, 0]  # lines ending in CRLF, in LF alone

    def process(buffer: bytes, begin: int, end: int, final: bool) -> None:
        """Scan the whole lines of `buffer[begin:end]` (a view, not a copy, of a large block)."""
        nonlocal line_base, header_content, offset
        region = memoryview(buffer)[begin:end]
        data = np.frombuffer(buffer, dtype=np.uint8, count=end - begin, offset=begin)
        # One pass finds every control byte; line ends (LF) are among them.
        controls = np.flatnonzero(data < 32)
        control_bytes = data[controls]
        ends = controls[control_bytes == _LF]
        if final and (len(ends) == 0 or ends[-1] != len(data) - 1):
            ends = np.append(ends, len(data))  # a last line without LF
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        lengths = ends - starts
        has_cr = np.zeros(len(starts), dtype=bool)
        nonempty = lengths > 0
        ends_in_data = np.minimum(ends, len(data)) - 1
        has_cr[nonempty] = data[ends_in_data[nonempty]] == _CR
        lengths = lengths - has_cr
        with_lf = ends < len(data)
        line_ends[0] += int(np.count_nonzero(has_cr & with_lf))
        line_ends[1] += int(np.count_nonzero(~has_cr & with_lf))
        # bytes.find runs at memory speed: most blocks of most files have no quote to locate.
        odd = np.zeros(len(starts), dtype=bool)
        if buffer.find(b'"', begin, end) >= 0:
            quote_pos = np.flatnonzero(data == _QUOTE)
            odd = np.bincount(np.searchsorted(starts, quote_pos, side="right") - 1, minlength=len(starts)) % 2 == 1
        # Allow-list of control bytes: TAB, and CR only right before a line's LF. Anything else (NUL, a CR
        # alone, which DuckDB takes for a line end and then stops at) sets its line aside. Counted first:
        # locating them costs a pass only in a block that has one.
        suspect = controls[(control_bytes != _LF) & (control_bytes != _TAB)]
        if len(suspect) != np.count_nonzero(has_cr):  # more than the CRs that end lines
            for position in np.setdiff1d(suspect, ends_in_data[has_cr]):
                line = int(np.searchsorted(starts, position, side="right") - 1)
                set_aside.setdefault(line_base + line, "nul_byte" if data[position] == _NUL else "control_character")
        for index in np.flatnonzero(lengths > MAX_LINE_BYTES):
            set_aside.setdefault(line_base + int(index), "line_too_long")
        for bad in decoder_check(region, starts):
            set_aside.setdefault(line_base + bad, "invalid_encoding")
        if line_base == 0 and len(starts):
            # The header again later is a repeated header; a byte order mark is not part of it.
            header_content = bytes(region[: lengths[0]]).removeprefix(_BOM)
        if header_content:
            # Cheap filter first (same length, same first byte), then compare the few candidates.
            probe = np.flatnonzero((lengths == len(header_content))
                                   & (data[np.minimum(starts, max(len(data) - 1, 0))] == header_content[0]))
            for index in probe:
                global_index = line_base + int(index)
                if global_index > 0 and bytes(region[starts[index]: starts[index] + lengths[index]]) == header_content:
                    set_aside.setdefault(global_index, "repeated_header")
        block_lines.append(line_base)
        block_offsets.append(offset)
        odd_parts.append(np.flatnonzero(odd) + line_base)  # only the parity of a line's quotes matters
        blank_parts.append(np.flatnonzero(lengths == 0) + line_base)
        line_base += len(starts)
        offset += end - begin

    plain_copy = _temp_file(spool_dir, "shoplake-plain-") if fmt == "csv.gz" else None
    try:
        for chunk in _chunks(path, fmt, display=display, copy_to=plain_copy):
            begin = 0
            if carry:  # the line cut at the end of the previous block: finish it on its own
                first = chunk.find(b"\n")
                if first < 0:
                    carry += chunk
                    continue
                joint = carry + chunk[: first + 1]
                process(joint, 0, len(joint), final=False)
                begin, carry = first + 1, b""
            last = chunk.rfind(b"\n", begin)
            if last < 0:
                carry = chunk[begin:]
                continue
            process(chunk, begin, last + 1, final=False)
            carry = chunk[last + 1:]
        if carry:
            process(carry, 0, len(carry), final=True)
        if line_base == 0:
            raise SourceFormatError(f"{display}: file is empty; expected a CSV header line")
        if 0 in set_aside:
            raise SourceFormatError(f"{display}: the header line has a {set_aside[0].replace('_', ' ')} problem; "
                                    f"expected a plain CSV header line ending in LF or CRLF (are the line ends "
                                    f"CR alone? convert them); nothing was written")
        scan = LineScan(physical_lines=line_base, end_offset=offset,
                        block_lines=np.array(block_lines, dtype=np.int64),
                        block_offsets=np.array(block_offsets, dtype=np.int64),
                        blank_lines=np.concatenate(blank_parts).astype(np.int64),
                        set_aside=set_aside, encoding=encoding, mixed_line_ends=all(line_ends),
                        plain=plain_copy or path, spool_dir=spool_dir)
        if plain_copy is not None:
            scan._cleanup.append(plain_copy)
    except BaseException:
        if plain_copy is not None:
            plain_copy.unlink(missing_ok=True)
        raise
    odd = np.concatenate(odd_parts).astype(np.int64)
    odd = odd[odd > 0]
    if len(odd):
        _pair_quoted_lines(scan, odd, expected_fields)
    return scan


def _decodable_check(encoding: str):
    """A function (region, line starts) -> line indexes of the region that do not decode."""
    def check(region: bytes, starts: np.ndarray) -> list[int]:
        if encoding == "latin-1":
            return []  # every byte is a latin-1 character
        if encoding == "utf-8" and (not region or np.frombuffer(region, dtype=np.uint8).max() < 0x80):
            return []  # plain ASCII
        bad: list[int] = []
        position = 0
        while position < len(region):
            try:
                codecs.decode(region[position:], encoding)
                break
            except UnicodeDecodeError as exc:
                line = int(np.searchsorted(starts, position + exc.start, side="right") - 1)
                bad.append(line)
                position = int(starts[line + 1]) if line + 1 < len(starts) else len(region)
        return bad

    return check


def _pair_quoted_lines(scan: LineScan, odd: np.ndarray, expected_fields: int | None) -> None:
    """Join each line with an odd number of quotes to the next such line, when they make one record.

    Loops over odd lines only (rare), not over all lines.
    """
    pending = [int(i) for i in odd if int(i) not in scan.set_aside]
    starts, lengths = scan.locate(np.array(pending, dtype=np.int64))  # one read of each block holding one
    where = {line: (int(start), int(start + length)) for line, start, length in zip(pending, starts, lengths,
                                                                                    strict=True)}
    i = 0
    while i < len(pending):
        first = pending[i]
        last = pending[i + 1] if i + 1 < len(pending) else None
        if last is not None and _is_one_record(scan, first, last, where[first][0], where[last][1], expected_fields):
            scan.records[first] = last
            i += 2
        else:
            scan.set_aside[first] = "unterminated_quote"
            i += 1


def _is_one_record(scan: LineScan, first: int, last: int, start: int, end: int, expected_fields: int | None) -> bool:
    """Whether lines `first` to `last` (bytes `start:end`) make one CSV record."""
    if end - start > MAX_LINE_BYTES or last - first + 1 > MAX_RECORD_LINES:
        return False
    if any(first < line <= last for line in scan.set_aside):
        return False
    if expected_fields is None:
        return True
    try:
        text = scan.read(start, end).decode(scan.encoding)
        records = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return False
    return len(records) == 1 and len(records[0]) == expected_fields


def _temp_file(folder: Path | None, prefix: str) -> Path:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".csv", dir=folder)
    os.close(fd)
    return Path(name)


def write_parse_input(scan: LineScan) -> tuple[Path, str]:
    """The plain CSV file a parser should read, and its format (`csv`).

    The file's uncompressed bytes (the file itself, or the copy made while scanning a gzip file) when it is
    UTF-8, nothing was set aside and its lines all end alike; otherwise a UTF-8 copy without the set-aside
    lines and with LF line ends (DuckDB stops at a file mixing LF and CRLF). Copies go when `scan.close`.
    """
    if not scan.set_aside and scan.encoding == "utf-8" and not scan.mixed_line_ends:
        return scan.plain, "csv"
    name = _temp_file(scan.spool_dir, "shoplake-parse-")
    scan._cleanup.append(name)
    decoder = codecs.getincrementaldecoder(scan.encoding)() if scan.encoding != "utf-8" else None
    aside = np.array(sorted(scan.set_aside), dtype=np.int64)
    starts, _ = scan.locate(np.concatenate((aside, aside + 1)))
    begins = dict(zip(aside.tolist(), starts[: len(aside)].tolist(), strict=True))
    afters = dict(zip(aside.tolist(), starts[len(aside):].tolist(), strict=True))
    with open(name, "wb") as out, open(scan.plain, "rb") as handle:
        position = 0
        pending_cr = b""
        for line in [*aside.tolist(), None]:
            end = begins[line] if line is not None else scan.end_offset
            handle.seek(position)
            size = end - position
            while size > 0:
                block = handle.read(min(size, _CHUNK))
                if not block:
                    break
                size -= len(block)
                if decoder is not None:  # every line left decodes (the others were set aside)
                    block = decoder.decode(block).encode("utf-8")
                if scan.mixed_line_ends:
                    block = pending_cr + block
                    pending_cr = b"\r" if block.endswith(b"\r") else b""  # its LF may start the next block
                    block = block[: len(block) - len(pending_cr)].replace(b"\r\n", b"\n")
                out.write(block)
            if line is not None:
                position = afters[line]
        out.write(pending_cr)
    return name, "csv"


class LineAccount:
    """Ties a parser's output back to physical lines: what it refused, and where each readable row began.

    `multiline`: whether the parser reads a quoted field across line breaks (DuckDB) or sees every line as
    its own row (Spark's line-based parse).
    """

    def __init__(self, scan: LineScan | None, *, multiline: bool):
        self.scan = scan
        self.multiline = multiline
        self.parser_rejects: list[tuple[int, str]] = []  # (1-based line number in the parse input, reason)
        # Set by an engine whose refusals are only known once its reader is consumed.
        self.before_check: Callable[[], None] | None = None
        self._readable: np.ndarray | None = None  # lines beginning no readable row (`_unreadable`)

    @property
    def physical_lines(self) -> int | None:
        """The file's physical data lines, as counted by the scan (None for Parquet: count its rows)."""
        return self.scan.data_lines if self.scan is not None else None

    def _excluded_units(self) -> np.ndarray:
        """Sorted lines that do not begin a line of the parser's input (see `LineScan.excluded_units`)."""
        assert self.scan is not None
        return self.scan.excluded_units(multiline=self.multiline)

    def _spans(self, first_lines: np.ndarray) -> np.ndarray:
        if self.multiline:
            assert self.scan is not None, "a multiline account has its scan"
            return self.scan.spans(first_lines)
        return np.ones(len(first_lines), dtype=np.int64)

    def _rejected_units(self) -> np.ndarray:
        """0-based first lines of the records the parser refused (it numbers its input's lines from 1)."""
        numbers = np.array([line for line, _ in self.parser_rejects], dtype=np.int64)
        return kept_lines(self._excluded_units(), numbers - 1)

    def _collect(self) -> None:
        if self.before_check is not None:
            self.before_check()
            self.before_check = None

    def rejected(self) -> list[BrokenLine]:
        """Lines set aside before parsing and records the parser refused, by physical line."""
        if self.scan is None:
            return []
        self._collect()
        found = self.scan.set_aside_lines()
        firsts = self._rejected_units()
        spans = self._spans(firsts)
        starts, _ = self.scan.locate(firsts)
        last_starts, last_lengths = self.scan.locate(firsts + spans - 1)
        for first, span, start, last_start, last_length, (_, reason) in zip(
                firsts, spans, starts, last_starts, last_lengths, self.parser_rejects, strict=True):
            raw = self.scan.read(int(start), int(last_start + last_length))
            found.append(BrokenLine(int(first) + 1, reason, raw, int(span)))
        return sorted(found, key=lambda b: b.line)

    def __call__(self) -> list[BrokenLine]:
        return self.rejected()

    def _unreadable(self) -> np.ndarray:
        """Sorted lines that begin no readable row: not parser lines, the header, blank lines the parser
        skips, and the records it refused."""
        if self._readable is None:
            self._collect()
            assert self.scan is not None
            excluded = self._excluded_units()
            blank = self.scan.blank_lines[~np.isin(self.scan.blank_lines, excluded)]
            self._readable = np.union1d(np.union1d(excluded, blank), np.append(self._rejected_units(), 0))
        return self._readable

    def readable_rows(self) -> int:
        """How many rows the parser should return, from the scan alone (once its refusals are known)."""
        assert self.scan is not None
        return self.scan.physical_lines - len(self._unreadable())

    def row_lines(self, source_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1-based first physical line, physical lines spanned) of readable rows numbered `source_rows`."""
        firsts = kept_lines(self._unreadable(), np.asarray(source_rows, dtype=np.int64) - 1)
        return firsts + 1, self._spans(firsts)

    def check(self, readable_rows: int, display: str) -> None:
        """Refuse the file when the parser's rows and refusals do not cover the scanned records exactly."""
        if self.scan is None:
            return
        self._collect()
        expected = self.readable_rows()
        if readable_rows != expected:
            raise SourceFormatError(
                f"{display}: the CSV parser read {readable_rows:,} rows and refused {len(self.parser_rejects):,}, "
                f"but the line scan found {expected + len(self.parser_rejects):,} records; the file's lines "
                f"cannot be accounted for; nothing was written")

    def close(self) -> None:
        if self.scan is not None:
            self.scan.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
