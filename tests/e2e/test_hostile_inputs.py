"""A hostile-input corpus: files made from real rows (../shared/data/real), each broken in one way.

For every file, either the ingest refuses it whole (one-line `SourceFormatError`, nothing written), or the
sum over all its destinations, counted in the tables (bronze rows + ingest-stage quarantine rows, each
weighted by the physical lines it spans), equals the file's physical data lines as this test counts them:
every line after the header except blank lines outside quoted fields (see README, "Row accounting").

`_check_lake` is the one place to add lake-wide checks that must hold after every file.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoplake.errors import SourceFormatError
from shoplake.ingest import ingest_files
from shoplake.lake import new_run_id
from shoplake.quality.verify import verify_lake
from shoplake.sources.lines import MAX_LINE_BYTES, count_physical_lines

ROWS = 2_000  # data rows taken from each real file: the "2,000-line CSV"
CLICK_FILE = ("rees46_multicategory", "2019-Oct_head_17434rows.csv.gz")
RETAIL_FILE = ("online_retail", "online_retail_uci_2010-12_2011-12.csv.gz")
COSMETICS_FILE = ("rees46_cosmetics_42variant", "data_2022_oct.csv.gz")


@dataclass(frozen=True)
class Real:
    """Header and the first data lines (bytes, without line ends) of each real file."""

    click_header: bytes
    click: list[bytes]
    retail_header: bytes
    retail: list[bytes]
    cosmetics_header: bytes
    cosmetics: list[bytes]


def _head(path: Path, rows: int) -> tuple[bytes, list[bytes]]:
    with gzip.open(path, "rb") as handle:
        lines = [handle.readline().rstrip(b"\r\n") for _ in range(rows + 1)]
    return lines[0], lines[1:]


@pytest.fixture(scope="module")
def real(e2e) -> Real:
    click_header, click = _head(e2e.real_file(*CLICK_FILE), ROWS)
    retail_header, retail = _head(e2e.real_file(*RETAIL_FILE), ROWS)
    cosmetics_header, cosmetics = _head(e2e.real_file(*COSMETICS_FILE), ROWS)
    return Real(click_header, click, retail_header, retail, cosmetics_header, cosmetics)


def _csv(header: bytes, lines: list[bytes], *, end: bytes = b"\n", last_end: bool = True) -> bytes:
    body = end.join([header, *lines])
    return body + end if last_end else body


def _replace(lines: list[bytes], at: int, line: bytes) -> list[bytes]:
    return [*lines[:at], line, *lines[at + 1:]]


def _field(line: bytes, index: int, value: bytes) -> bytes:
    """`line` with its `index`-th field replaced (the real rows used here hold no quoted commas)."""
    fields = line.split(b",")
    fields[index] = value
    return b",".join(fields)


def _click(real: Real, lines: list[bytes] | None = None, **kwargs) -> bytes:
    return _csv(real.click_header, real.click if lines is None else lines, **kwargs)


def _retail(real: Real, lines: list[bytes] | None = None, **kwargs) -> bytes:
    return _csv(real.retail_header, real.retail if lines is None else lines, **kwargs)


# Clickstream fields: event_time 0, event_type 1, product_id 2, category_id 3, category_code 4, brand 5,
# price 6, user_id 7, user_session 8. Retail: InvoiceNo 0, StockCode 1, Description 2, Quantity 3,
# InvoiceDate 4, UnitPrice 5, CustomerID 6, Country 7 (the first rows have no quoted field).
PRICE, PRODUCT, EVENT_TIME, BRAND = 6, 2, 0, 5
DESCRIPTION, QUANTITY, CUSTOMER = 2, 3, 6


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    content: Callable[[Real], bytes]  # the CSV text as it lies on disk before `pack` (or Parquet bytes)
    suffix: str = ".csv"
    pack: Callable[[bytes], bytes] = staticmethod(lambda data: data)
    refused: str | None = None  # a fragment of the one-line refusal; None: the file is ingested
    reasons: dict[str, int] = field(default_factory=dict)  # exact ingest quarantine reasons -> rows
    encoding: str = "utf-8"
    blank_inside_quotes: int = 0  # blank lines this test knows to lie inside a quoted field
    extra_lines: int = 0  # lines this test knows to continue a row (quoted line breaks)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _truncated_gzip(data: bytes) -> bytes:
    packed = _gzip(data)
    return packed[: len(packed) * 2 // 3]


def _corrupt_gzip(data: bytes) -> bytes:
    packed = bytearray(_gzip(data))
    middle = len(packed) // 2
    packed[middle: middle + 64] = bytes(64)
    return bytes(packed)


def _wrong_trailer(field: slice):
    """A gzip whose blocks are intact but whose trailer's CRC-32 (bytes -8:-4) or length (-4:) is wrong:
    only an inflater that checks the trailer refuses it."""
    def pack(data: bytes) -> bytes:
        packed = bytearray(_gzip(data))
        packed[field] = bytes(b ^ 0xFF for b in packed[field])
        return bytes(packed)
    return pack


def _two_members(data: bytes) -> bytes:
    cut = data.index(b"\n", len(data) // 2) + 1
    return _gzip(data[:cut]) + _gzip(data[cut:])


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _click_parquet(real: Real, change: Callable[[dict], dict]) -> bytes:
    names = real.click_header.decode().split(",")
    rows = [dict(zip(names, line.decode().split(","), strict=True)) for line in real.click[:200]]
    columns = change({n: [r[n] for r in rows] for n in names})
    return _parquet(pa.table(columns))


def _latin1_retail(real: Real) -> bytes:
    lines = [_field(line, DESCRIPTION, b"CAKE STAND \xa3 SALE") if i % 100 == 7 else line
             for i, line in enumerate(real.retail)]  # 0xA3 is the pound sign in Latin-1 and CP1252
    return _retail(real, lines)


def _everything_at_once(real: Real) -> bytes:
    """One file with a bit of every kind of damage, so the line mapping is tested after each kind."""
    r = real.retail
    lines = [b"", *r[:100], b"", _field(r[100], DESCRIPTION, b'"RED\nHEART"'), *r[101:200],
             _field(r[200], DESCRIPTION, b'"WHITE HEART'), *r[201:300], real.retail_header, *r[300:400],
             r[400] + b",extra", *r[401:500], _field(r[500], QUANTITY, b"1.5"), *r[501:600],
             _field(r[600], DESCRIPTION, b"NUL\x00"), *r[601:700], _field(r[700], 5, b"NaN"), b"", *r[701:800],
             _field(r[800], DESCRIPTION, b'"A ""QUOTED"", DESCRIPTION"'), _field(r[801], 4, b"1999-12-31 23:59:00"),
             *r[802:]]
    return _retail(real, lines, end=b"\r\n")


EVERYTHING_REASONS = {"unterminated_quote": 1, "repeated_header": 1, "wrong_column_count": 1,
                      "invalid_Quantity": 1, "nul_byte": 1, "invalid_UnitPrice": 1,
                      "out_of_range_InvoiceDate": 1}
UNTERMINATED = b'2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,"shiseido,35.79,541312140,abc'
HUGE = 3 * 1024 * 1024

CASES = [
    # -- clean real rows: the baseline every other case departs from
    Case("clean_clickstream", "clickstream", lambda r: _click(r)),
    Case("clean_retail_with_quoted_commas", "retail",
         lambda r: _csv(r.retail_header, [b'536999,22000,"BOX OF 6 ""MINI"" CAKES, PINK",6,2010-12-01 08:26:00,'
                                          b'2.55,17850.0,United Kingdom', *r.retail[1:]])),
    Case("clean_cosmetics_variant", "clickstream", lambda r: _csv(r.cosmetics_header, r.cosmetics)),
    Case("online_retail_ii_header", "retail",
         lambda r: _csv(b"Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country", r.retail)),
    # -- quotes
    Case("unterminated_quote_mid_file", "clickstream", lambda r: _click(r, _replace(r.click, 500, UNTERMINATED)),
         reasons={"unterminated_quote": 1}),
    Case("unterminated_quote_last_line", "clickstream", lambda r: _click(r, [*r.click[:-1], UNTERMINATED]),
         reasons={"unterminated_quote": 1}),
    Case("unterminated_quote_first_line", "clickstream", lambda r: _click(r, [UNTERMINATED, *r.click[1:]]),
         reasons={"unterminated_quote": 1}),
    Case("two_unterminated_quotes_far_apart", "clickstream",
         lambda r: _click(r, _replace(_replace(r.click, 300, UNTERMINATED), 1500, UNTERMINATED)),
         reasons={"unterminated_quote": 2}),
    Case("stray_quote_inside_unquoted_field", "clickstream",
         lambda r: _click(r, _replace(r.click, 42, _field(r.click[42], BRAND, b'shi"seido'))),
         reasons={"unterminated_quote": 1}),
    Case("text_after_closing_quote", "clickstream",
         lambda r: _click(r, _replace(r.click, 42, _field(r.click[42], BRAND, b'"shiseido"x'))),
         reasons={"unquoted_value": 1}),
    Case("unterminated_quote_in_gzip", "clickstream", lambda r: _click(r, _replace(r.click, 999, UNTERMINATED)),
         suffix=".csv.gz", pack=_gzip, reasons={"unterminated_quote": 1}),
    # -- line breaks and blank lines
    Case("quoted_newline_in_description", "retail",
         lambda r: _retail(r, _replace(r.retail, 10, _field(r.retail[10], DESCRIPTION, b'"RED\nHEART"'))),
         extra_lines=1),
    Case("quoted_crlf_in_description", "retail",
         lambda r: _retail(r, _replace(r.retail, 10, _field(r.retail[10], DESCRIPTION, b'"RED\r\nHEART"'))),
         extra_lines=1),
    Case("quoted_field_holding_a_blank_line", "retail",
         lambda r: _retail(r, _replace(r.retail, 10, _field(r.retail[10], DESCRIPTION, b'"RED\n\nHEART"'))),
         blank_inside_quotes=1, extra_lines=2),
    Case("blank_line_after_header", "clickstream", lambda r: _click(r, [b"", *r.click])),
    Case("blank_lines_everywhere", "clickstream",
         lambda r: _click(r, [b"", *r.click[:700], b"", b"", *r.click[700:], b"", b""])),
    Case("whitespace_only_line", "clickstream", lambda r: _click(r, _replace(r.click, 5, b"   ")),
         reasons={"wrong_column_count": 1}),
    Case("crlf_line_ends", "clickstream", lambda r: _click(r, end=b"\r\n")),
    Case("crlf_with_blank_lines", "retail", lambda r: _retail(r, [b"", *r.retail[:50], b"", *r.retail[50:]],
                                                              end=b"\r\n")),
    Case("mixed_lf_and_crlf", "clickstream",
         lambda r: _csv(r.click_header, [line + (b"\r" if i % 2 else b"") for i, line in enumerate(r.click)])),
    Case("no_line_end_at_eof", "clickstream", lambda r: _click(r, last_end=False)),
    Case("utf8_bom", "clickstream", lambda r: b"\xef\xbb\xbf" + _click(r)),
    Case("utf8_bom_and_crlf", "retail", lambda r: b"\xef\xbb\xbf" + _retail(r, end=b"\r\n")),
    # -- bytes that are not text
    Case("nul_byte_in_a_line", "clickstream",
         lambda r: _click(r, _replace(r.click, 77, _field(r.click[77], BRAND, b"shi\x00seido"))),
         reasons={"nul_byte": 1}),
    Case("stray_carriage_return", "clickstream",
         lambda r: _click(r, _replace(r.click, 79, _field(r.click[79], BRAND, b"shi\rseido"))),
         reasons={"control_character": 1}),
    Case("other_control_bytes", "retail",
         lambda r: _retail(r, _replace(_replace(r.retail, 8, _field(r.retail[8], DESCRIPTION, b"BELL\x07")), 9,
                                       _field(r.retail[9], DESCRIPTION, b"TAB\tIS FINE"))),
         reasons={"control_character": 1}),
    Case("cr_only_line_ends", "clickstream", lambda r: _click(r, end=b"\r"), refused="CR alone"),
    Case("nul_bytes_only_line", "clickstream", lambda r: _click(r, _replace(r.click, 78, b"\x00" * 40)),
         reasons={"nul_byte": 1}),
    Case("invalid_utf8", "clickstream",
         lambda r: _click(r, _replace(r.click, 88, _field(r.click[88], BRAND, b"caf\xe9"))),
         reasons={"invalid_encoding": 1}),
    Case("latin1_without_encoding", "retail", _latin1_retail, reasons={"invalid_encoding": 20}),
    Case("latin1_with_encoding", "retail", _latin1_retail, encoding="latin-1"),
    Case("cp1252_with_encoding", "retail",
         lambda r: _retail(r, _replace(r.retail, 3, _field(r.retail[3], DESCRIPTION, b"MUG \x80 EURO"))),
         encoding="cp1252"),
    Case("cp1252_undefined_byte", "retail",
         lambda r: _retail(r, _replace(r.retail, 3, _field(r.retail[3], DESCRIPTION, b"MUG \x81"))),
         encoding="cp1252", reasons={"invalid_encoding": 1}),
    # -- sizes and shapes
    Case("huge_quoted_field", "retail",
         lambda r: _retail(r, _replace(r.retail, 9, _field(r.retail[9], DESCRIPTION, b'"' + b"X" * HUGE + b'"')))),
    Case("line_over_the_limit", "clickstream",
         lambda r: _click(r, _replace(r.click, 9, _field(r.click[9], BRAND, b"y" * (MAX_LINE_BYTES + 10)))),
         reasons={"line_too_long": 1}),
    Case("too_many_columns", "clickstream", lambda r: _click(r, _replace(r.click, 12, r.click[12] + b",extra")),
         reasons={"wrong_column_count": 1}),
    Case("too_many_columns_in_gzip", "clickstream",
         lambda r: _click(r, _replace(r.click, 1999, r.click[1999] + b",extra")), suffix=".csv.gz", pack=_gzip,
         reasons={"wrong_column_count": 1}),
    Case("too_few_columns", "clickstream", lambda r: _click(r, _replace(r.click, 12, r.click[12].rsplit(b",", 3)[0])),
         reasons={"wrong_column_count": 1}),
    Case("repeated_header_mid_file", "clickstream",
         lambda r: _click(r, [*r.click[:1000], r.click_header, *r.click[1000:]]), reasons={"repeated_header": 1}),
    Case("repeated_header_crlf_twice", "retail",
         lambda r: _retail(r, [*r.retail[:10], r.retail_header, *r.retail[10:], r.retail_header], end=b"\r\n"),
         reasons={"repeated_header": 2}),
    # -- values
    Case("non_finite_prices", "clickstream",
         lambda r: _click(r, [_field(line, PRICE, {0: b"NaN", 1: b"inf", 2: b"-Infinity", 3: b"1e309"}[i % 50])
                              if i % 50 < 4 else line for i, line in enumerate(r.click)]),
         reasons={"invalid_price": 160}),
    Case("fractional_quantity", "retail",
         lambda r: _retail(r, _replace(r.retail, 4, _field(r.retail[4], QUANTITY, b"1.5"))),
         reasons={"invalid_Quantity": 1}),
    Case("fractional_product_id", "clickstream",
         lambda r: _click(r, _replace(r.click, 4, _field(r.click[4], PRODUCT, b"123.5"))),
         reasons={"invalid_product_id": 1}),
    Case("integers_written_otherwise", "clickstream",
         lambda r: _click(r, [_field(line, PRODUCT, {0: b"1e3", 1: b"1_000", 2: b"0x10", 3: b" 42 "}[i % 100])
                              if i % 100 < 4 else line for i, line in enumerate(r.click)]),
         reasons={"invalid_product_id": 60}),
    Case("float_formatted_customer_id", "retail",
         lambda r: _retail(r, _replace(r.retail, 4, _field(r.retail[4], CUSTOMER, b"17850.0")))),
    Case("fractional_customer_id", "retail",
         lambda r: _retail(r, _replace(r.retail, 4, _field(r.retail[4], CUSTOMER, b"17850.5"))),
         reasons={"invalid_CustomerID": 1}),
    Case("dates_out_of_range", "clickstream",
         lambda r: _click(r, _replace(_replace(r.click, 6, _field(r.click[6], EVENT_TIME, b"1970-01-01 00:00:00 UTC")),
                                      7, _field(r.click[7], EVENT_TIME, b"2999-10-01 00:00:00 UTC"))),
         reasons={"out_of_range_event_time": 2}),
    Case("unparseable_date", "retail",
         lambda r: _retail(r, _replace(r.retail, 6, _field(r.retail[6], 4, b"2010-13-45 08:26:00"))),
         reasons={"invalid_InvoiceDate": 1}),
    Case("empty_fields_line", "clickstream", lambda r: _click(r, _replace(r.click, 3, b"," * 8))),
    Case("everything_at_once", "retail", _everything_at_once, reasons=EVERYTHING_REASONS, extra_lines=1),
    Case("everything_at_once_gzip", "retail", _everything_at_once, suffix=".csv.gz", pack=_gzip,
         reasons=EVERYTHING_REASONS, extra_lines=1),
    # -- gzip
    Case("gzip_clean", "retail", lambda r: _retail(r), suffix=".csv.gz", pack=_gzip),
    Case("gzip_two_members", "clickstream", lambda r: _click(r), suffix=".csv.gz", pack=_two_members),
    Case("gzip_truncated", "clickstream", lambda r: _click(r), suffix=".csv.gz", pack=_truncated_gzip,
         refused="truncated"),
    Case("gzip_corrupt", "clickstream", lambda r: _click(r), suffix=".csv.gz", pack=_corrupt_gzip,
         refused="corrupt"),
    Case("gzip_wrong_crc", "clickstream", lambda r: _click(r), suffix=".csv.gz", pack=_wrong_trailer(slice(-8, -4)),
         refused="checksum"),
    Case("gzip_wrong_length", "clickstream", lambda r: _click(r), suffix=".csv.gz",
         pack=_wrong_trailer(slice(-4, None)), refused="checksum"),
    Case("fake_gzip", "clickstream", lambda r: _click(r), suffix=".csv.gz", refused="Not a gzipped file"),
    # -- refused whole
    Case("empty_file", "clickstream", lambda r: b"", refused="file is empty"),
    Case("header_only", "clickstream", lambda r: r.click_header + b"\n", refused="header but no data rows"),
    Case("header_and_blank_lines_only", "clickstream", lambda r: r.click_header + b"\n\n\r\n\n",
         refused="header but no data rows"),
    Case("wrong_column_name", "clickstream", lambda r: _csv(r.click_header.replace(b"price", b"prize"), r.click),
         refused="is not a clickstream header"),
    Case("missing_column", "retail",
         lambda r: _csv(r.retail_header.rsplit(b",", 1)[0], [line.rsplit(b",", 1)[0] for line in r.retail]),
         refused="is not a retail header"),
    Case("extra_column", "clickstream", lambda r: _csv(r.click_header + b",extra", [x + b",1" for x in r.click]),
         refused="is not a clickstream header"),
    Case("tab_separated", "clickstream",
         lambda r: _csv(r.click_header.replace(b",", b"\t"), [x.replace(b",", b"\t") for x in r.click]),
         refused="is not a clickstream header"),
    # -- Parquet
    Case("parquet_prices_as_text", "clickstream",
         lambda r: _click_parquet(r, lambda c: {**c, "price": ["abc" if i % 20 == 0 else p
                                                               for i, p in enumerate(c["price"])]}),
         suffix=".parquet", reasons={"invalid_price": 10}),
    Case("parquet_wrong_numeric_types", "clickstream",
         lambda r: _click_parquet(r, lambda c: {**c, "product_id": [float(p) + 0.5 for p in c["product_id"]],
                                                "price": [float("nan")] * 3 + [float(p) for p in c["price"][3:]],
                                                "user_id": [True] * len(c["user_id"])}),
         suffix=".parquet", reasons={"invalid_product_id": 200}),
    Case("parquet_missing_column", "clickstream",
         lambda r: _click_parquet(r, lambda c: {k: v for k, v in c.items() if k != "price"}),
         suffix=".parquet", refused="is not a clickstream header"),
    Case("parquet_truncated", "clickstream", lambda r: _click_parquet(r, lambda c: c)[:-100],
         suffix=".parquet", refused="not a readable parquet file"),
]


def physical_data_lines(text: bytes, *, blank_inside_quotes: int = 0) -> int:
    """This test's own count: lines after the header that are not blank, plus known blanks in quotes."""
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the last line's LF ends it; it does not start another line
    return sum(1 for line in lines[1:] if line not in (b"", b"\r")) + blank_inside_quotes


def _destinations(e2e, lake, source: str) -> dict[str, int]:
    (counts,) = e2e.rows(lake, f"""
        SELECT (SELECT count(*) FROM bronze.{source})                                      AS bronze_rows,
               (SELECT coalesce(sum(_source_lines), 0) FROM bronze.{source})               AS bronze_lines,
               (SELECT count(*) FROM quarantine.{source} WHERE _stage = 'ingest')          AS quarantine_rows,
               (SELECT coalesce(sum(_source_lines), 0) FROM quarantine.{source}
                WHERE _stage = 'ingest')                                                   AS quarantine_lines""")
    return counts


def _reasons(e2e, lake, source: str) -> dict[str, int]:
    found = e2e.rows(lake, f"SELECT reason, count(*) AS n FROM quarantine.{source} WHERE _stage = 'ingest' "
                           f"GROUP BY reason")
    return {r["reason"]: r["n"] for r in found}


def _check_lake(e2e, lake) -> None:
    """Lake-wide checks after every file: the ledger balances and `shoplake verify` passes (it counts, in
    the tables, the rows and the lines of every batch against the ledger and the line scan)."""
    for entry in e2e.rows(lake, "SELECT rows_in, rows_out, rows_diverted, diverted FROM ops.ledger"):
        assert entry["rows_in"] == entry["rows_out"] + entry["rows_diverted"], entry
        assert entry["rows_diverted"] == sum(json.loads(entry["diverted"]).values()), entry
    verification = verify_lake(lake)
    assert verification.ok, verification.failures


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_file_is_accounted_line_for_line(e2e, real, tmp_path, case):
    reasons = _ingest_and_account(e2e, real, tmp_path, case, engine="duckdb")
    assert reasons == case.reasons


# On Spark every line is parsed alone (README, "Engines"): a quoted line break makes two refused lines, and
# text after a closing quote is parsed leniently. The line scan, the invariant and the other reasons hold.
SPARK_REASONS = {"quoted_newline_in_description": {"wrong_column_count": 2}, "text_after_closing_quote": {},
                 "everything_at_once_gzip": {**EVERYTHING_REASONS, "wrong_column_count": 3}}
SPARK_CASES = ("unterminated_quote_mid_file", "unterminated_quote_in_gzip", "two_unterminated_quotes_far_apart",
               "quoted_newline_in_description", "text_after_closing_quote", "blank_line_after_header",
               "crlf_with_blank_lines", "mixed_lf_and_crlf", "utf8_bom", "nul_byte_in_a_line", "invalid_utf8",
               "latin1_with_encoding", "repeated_header_mid_file", "too_many_columns_in_gzip", "non_finite_prices",
               "fractional_quantity", "integers_written_otherwise", "dates_out_of_range",
               "parquet_wrong_numeric_types", "gzip_truncated", "everything_at_once_gzip", "stray_carriage_return",
               "header_only", "empty_fields_line")


@pytest.mark.parametrize("case", [c for c in CASES if c.name in SPARK_CASES], ids=lambda c: c.name)
def test_hostile_file_is_accounted_line_for_line_on_spark(e2e, real, tmp_path, case, spark_available):
    reasons = _ingest_and_account(e2e, real, tmp_path, case, engine="spark")
    assert reasons == SPARK_REASONS.get(case.name, case.reasons)


def _ingest_and_account(e2e, real, tmp_path, case: Case, *, engine: str) -> dict[str, int] | None:
    """Ingest the case's file; assert it is refused whole or accounted line for line; return the reasons."""
    text = case.content(real)
    path = tmp_path / f"{case.name}{case.suffix}"
    path.write_bytes(case.pack(text))
    lake = e2e.open_lake(tmp_path / "lake", engine=engine)

    if case.refused:
        with pytest.raises(SourceFormatError) as refusal:
            ingest_files(lake, case.source, [str(path)], run_id=new_run_id(), encoding=case.encoding)
        message = str(refusal.value)
        assert case.refused in message and str(path) in message, message
        assert "\n" not in message
        assert all(version is None for version in e2e.table_versions(lake.settings.lake).values())
        _check_lake(e2e, lake)
        return case.reasons

    (result,) = ingest_files(lake, case.source, [str(path)], run_id=new_run_id(), encoding=case.encoding)
    assert result.status == "ingested"
    found = _destinations(e2e, lake, case.source)
    if case.suffix == ".parquet":
        expected = pq.read_metadata(path).num_rows  # a Parquet row is the unit: no lines
    else:
        expected = physical_data_lines(text, blank_inside_quotes=case.blank_inside_quotes)
        assert count_physical_lines(path, case.suffix.lstrip(".")) == expected  # the function the ledger uses
        (entry,) = e2e.rows(lake, "SELECT inputs FROM ops.ledger WHERE table_name LIKE 'bronze.%'")
        assert json.loads(entry["inputs"])["physical_lines"] == expected
    assert found["bronze_lines"] + found["quarantine_lines"] == expected, found
    if engine == "duckdb":  # Spark reads a quoted line break as two rows (see SPARK_REASONS)
        assert found["bronze_rows"] + found["quarantine_rows"] == expected - case.extra_lines, found
    if case.suffix != ".parquet":
        _assert_quarantine_points_at_its_lines(e2e, lake, case.source, text, case.encoding)
    _check_lake(e2e, lake)
    return _reasons(e2e, lake, case.source)


def _as_text(raw: bytes, encoding: str) -> str | None:
    try:
        decoded = raw.decode(encoding)
    except UnicodeDecodeError:
        return None
    return None if "\0" in decoded else decoded


def _assert_quarantine_points_at_its_lines(e2e, lake, source: str, text: bytes, encoding: str) -> None:
    """Each quarantine row names the physical line(s) it came from: its raw bytes are exactly those lines,
    and a value refused by its column is found on its line."""
    lines = text.split(b"\n")
    for row in e2e.rows(lake, f"SELECT * FROM quarantine.{source} WHERE _stage = 'ingest'"):
        first = row["_source_line"] - 1
        own = b"\n".join(lines[first: first + row["_source_lines"]])
        own = own[:-1] if own.endswith(b"\r") else own
        if row["_raw_bytes"] is not None:
            assert row["_raw_bytes"] == own, row["reason"]
            assert row["_raw_line"] == _as_text(own, encoding), row["reason"]
        else:
            column = row["reason"].removeprefix("invalid_").removeprefix("out_of_range_")
            assert row[column].encode() in own, (row["reason"], row[column], own[:200])


# -- the encoding reaches the parser from every entry point -------------------------------------------------

def test_cli_ingest_with_encoding_keeps_the_pound_sign(e2e, real, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(_latin1_retail(real))
    lake = tmp_path / "lake"
    e2e.cli_ok("ingest", "retail", str(path), "--encoding", "latin-1", lake=lake)
    opened = e2e.open_lake(lake)
    assert e2e.scalar(opened, "SELECT count(*) FROM bronze.retail WHERE Description = 'CAKE STAND £ SALE'") == 20
    assert e2e.scalar(opened, "SELECT count(*) FROM quarantine.retail") == 0


def test_cli_ingest_refuses_an_unknown_encoding_in_one_line(e2e, real, tmp_path):
    path = tmp_path / "clean.csv"
    path.write_bytes(_retail(real))
    result = e2e.run_cli("ingest", "retail", str(path), "--encoding", "utf-16", lake=tmp_path / "lake")
    e2e.assert_one_line_error(result, names="utf-16")
    assert not e2e.delta_logs(tmp_path / "lake")


def test_job_worker_ingest_passes_the_encoding(e2e, real, tmp_path):
    """`shoplake jobs task ingest` is the command the job runner (and a Databricks task) runs."""
    path = tmp_path / "cp1252.csv"
    path.write_bytes(_retail(real, _replace(real.retail, 3, _field(real.retail[3], DESCRIPTION, b"MUG \x80 EURO"))))
    lake = tmp_path / "lake"
    e2e.cli_ok("jobs", "task", "ingest", "retail", "--path", str(path), "--encoding", "cp1252", lake=lake)
    opened = e2e.open_lake(lake)
    assert e2e.scalar(opened, "SELECT count(*) FROM bronze.retail WHERE Description = 'MUG € EURO'") == 1


def test_a_lake_from_before_the_line_columns_is_continued(e2e, real, tmp_path):
    """Bronze and quarantine tables created without `_source_lines` / `_raw_bytes` take them on append."""
    from datetime import UTC, datetime

    from shoplake.build import build_tables

    lake = e2e.open_lake(tmp_path / "lake")
    old_columns = {"bronze.clickstream": ("_source_lines",), "quarantine.clickstream": ("_source_lines", "_raw_bytes")}
    for name, dropped in old_columns.items():
        spec = lake.catalog.get(name)
        old = pa.schema([f for f in spec.arrow_schema if f.name not in dropped])
        rows = old.empty_table()
        if name.startswith("bronze"):
            values = {f.name: pa.nulls(1, f.type) for f in old}
            values.update(event_time=pa.array([datetime(2019, 10, 1, tzinfo=UTC)], old.field("event_time").type),
                          event_type=pa.array(["view"]), product_id=pa.array([1], pa.int64()),
                          user_id=pa.array([2], pa.int64()), price=pa.array([1.0]), _source_row=pa.array([1]),
                          _batch_id=pa.array(["clickstream-old"]), _source_file=pa.array(["old.csv"]),
                          _ingested_at=pa.array([datetime(2019, 10, 2, tzinfo=UTC)], old.field("_ingested_at").type))
            rows = pa.table(values, schema=old)
        lake.store.write(name, rows, mode="append", meta={"write_key": "old", "run_id": "old"})
    path = tmp_path / "unterminated.csv"
    path.write_bytes(_click(real, _replace(real.click, 500, UNTERMINATED)))

    ingest_files(lake, "clickstream", [str(path)], run_id=new_run_id())
    results = {r.table: r.status for r in build_tables(lake, run_id=new_run_id(), selection="silver.events")}

    assert results == {"silver.events": "built"}
    by_batch = e2e.rows(lake, "SELECT _batch_id = 'clickstream-old' AS old, count(*) AS n, sum(_source_lines) AS lines "
                              "FROM bronze.clickstream GROUP BY 1 ORDER BY 1")
    assert by_batch == [{"old": False, "n": ROWS - 1, "lines": ROWS - 1}, {"old": True, "n": 1, "lines": None}]
    assert e2e.scalar(lake, "SELECT count(*) FROM silver.events") >= 1
    (refused,) = e2e.rows(lake, "SELECT reason, _source_line, octet_length(_raw_bytes) AS size "
                                "FROM quarantine.clickstream")
    assert refused == {"reason": "unterminated_quote", "_source_line": 502, "size": len(UNTERMINATED)}
