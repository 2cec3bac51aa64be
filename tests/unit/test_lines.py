"""The physical-line scan: the same answer whatever the block size, on plain and gzip files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from shoplake.errors import SourceFormatError
from shoplake.sources import lines
from shoplake.sources.lines import count_physical_lines, scan_csv, write_parse_input

HEADER = b"a,b,c"
# Line numbers (1-based, the header is 1) of what must be set aside, by construction.
TEXT = b"\r\n".join([
    HEADER,                 # 1
    b"1,2,3",               # 2
    b"",                    # 3 blank, outside quotes
    b'4,"x',                # 4 opens a quoted field ...
    b"",                    # 5 ... a blank line inside it ...
    b'y",6',                # 6 ... closed here: lines 4-6 are one record
    b'7,"unterminated,9',   # 7 unterminated_quote
    b"a,b,c",               # 8 repeated_header
    b"10,1\x002,3",          # 9 nul_byte
    b"11,\xff,3",           # 10 invalid_encoding
    b'12,"z""q",3',         # 11 escaped quotes: an even count, a plain line
    b"13,14,15",            # 12, no line end after it
])
SET_ASIDE = {7: "unterminated_quote", 8: "repeated_header", 9: "nul_byte", 10: "invalid_encoding"}
DATA_LINES = 10  # lines 2..12 except the blank line 3 (line 5 is inside quotes: it counts)


def _scan(path, fmt):
    scan = scan_csv(path, fmt, expected_fields=3, encoding="utf-8", display=str(path))
    found = ({i + 1: r for i, r in scan.set_aside.items()}, scan.data_lines, scan.multiline_records,
             scan.locate(np.arange(scan.physical_lines + 1))[0].tolist(), scan.continuation_lines().tolist(),
             scan.mixed_line_ends)
    return scan, found


@pytest.mark.parametrize("fmt", ["csv", "csv.gz"])
@pytest.mark.parametrize("chunk", [4, 5, 7, 16, 64 * 1024 * 1024])
def test_scan_is_the_same_for_every_block_size(tmp_path, monkeypatch, fmt, chunk):
    path = tmp_path / f"t.{fmt}"
    path.write_bytes(gzip.compress(TEXT) if fmt == "csv.gz" else TEXT)
    monkeypatch.setattr(lines, "_CHUNK", chunk)
    scan, (set_aside, data_lines, multiline, starts, continuation, mixed) = _scan(path, fmt)
    try:
        assert set_aside == SET_ASIDE
        assert data_lines == DATA_LINES
        assert multiline == 1
        assert continuation == [4, 5]  # 0-based: lines 5 and 6 continue the record of line 4
        assert starts[-1] == len(TEXT) and len(starts) == 13
        assert not mixed
        assert scan.raw(9) == b"11,\xff,3"
        assert [b.line for b in scan.set_aside_lines()] == [7, 8, 9, 10]
    finally:
        scan.close()


def test_parse_input_drops_only_the_set_aside_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(TEXT)
    scan, _ = _scan(path, "csv")
    try:
        parse_path, fmt = write_parse_input(scan)
        kept = [line for number, line in enumerate(TEXT.split(b"\r\n"), 1) if number not in SET_ASIDE]
        assert (fmt, parse_path.read_bytes()) == ("csv", b"\r\n".join(kept))
    finally:
        scan.close()
    assert not parse_path.exists()


def test_mixed_line_ends_are_made_lf_for_the_parser(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b,c\r\n1,2,3\n4,5,6\r\n7,8,9")
    scan = scan_csv(path, "csv", expected_fields=3, encoding="utf-8", display="t")
    try:
        assert scan.mixed_line_ends and scan.data_lines == 3
        parse_path, _ = write_parse_input(scan)
        assert parse_path.read_bytes() == b"a,b,c\n1,2,3\n4,5,6\n7,8,9"
    finally:
        scan.close()


def test_a_clean_file_is_parsed_as_it_is_and_a_gzip_file_from_its_uncompressed_copy(tmp_path):
    text = b"a,b,c\n1,2,3\n\n4,5,6\n"
    (tmp_path / "t.csv").write_bytes(text)
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(text))
    plain = scan_csv(tmp_path / "t.csv", "csv", expected_fields=3, encoding="utf-8", display="t")
    packed = scan_csv(tmp_path / "t.csv.gz", "csv.gz", expected_fields=3, encoding="utf-8", display="t",
                      spool_dir=tmp_path / "spool")
    try:
        assert write_parse_input(plain) == (tmp_path / "t.csv", "csv")
        copy, fmt = write_parse_input(packed)
        assert (copy.parent, fmt, copy.read_bytes()) == (tmp_path / "spool", "csv", text)
        assert plain.data_lines == packed.data_lines == 2
    finally:
        plain.close()
        packed.close()
    assert not copy.exists() and (tmp_path / "t.csv").exists()


def test_a_refused_gzip_leaves_no_copy_behind(tmp_path):
    (tmp_path / "t.csv.gz").write_bytes(gzip.compress(b"a,b,c\n1,2,3\n" * 1000)[:-20])
    with pytest.raises(SourceFormatError, match="truncated or corrupt"):
        scan_csv(tmp_path / "t.csv.gz", "csv.gz", expected_fields=3, encoding="utf-8", display="t",
                 spool_dir=tmp_path / "spool")
    assert list((tmp_path / "spool").iterdir()) == []


def test_latin1_is_transcoded_for_the_parser(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("a,b,c\n1,£,3\n".encode("latin-1"))
    scan = scan_csv(path, "csv", expected_fields=3, encoding="latin-1", display="t")
    try:
        assert not scan.set_aside
        parse_path, _ = write_parse_input(scan)
        assert parse_path.read_text(encoding="utf-8") == "a,b,c\n1,£,3\n"
    finally:
        scan.close()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_gzip_is_one_line(tmp_path, damage):
    packed = bytearray(gzip.compress(b"a,b,c\n" + b"1,2,3\n" * 5000))
    if damage == "truncated":
        packed = packed[: len(packed) // 2]
    else:
        packed[len(packed) // 2: len(packed) // 2 + 16] = bytes(16)
    path = tmp_path / "t.csv.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(SourceFormatError, match="truncated or corrupt") as refusal:
        count_physical_lines(path, "csv.gz")
    assert "\n" not in str(refusal.value)


def test_a_quote_is_not_joined_to_a_line_too_far_away(tmp_path):
    body = [b"a,b,c", b'1,"x', *[b"2,3,4"] * (lines.MAX_RECORD_LINES - 1), b'y",5', b'6,"z', b'w",7']
    path = tmp_path / "t.csv"
    path.write_bytes(b"\n".join(body))
    scan = scan_csv(path, "csv", expected_fields=3, encoding="utf-8", display="t")
    try:
        # Line 2 would make a record of MAX_RECORD_LINES + 1 lines: it stands alone; so does the line
        # that would have closed it (its partner is gone); the last two lines still make one record.
        far = lines.MAX_RECORD_LINES + 2
        assert scan.set_aside == {1: "unterminated_quote", far - 1: "unterminated_quote"}
        assert scan.multiline_records == 1 and scan.data_lines == len(body) - 1
    finally:
        scan.close()
