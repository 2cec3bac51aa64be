"""Tests of the synthetic source generators (shoplake.synth).

The files are read back with the csv module, the way an independent consumer would, and checked
against the source schemas of DATA_CONTRACT.md and the realism targets (funnel shares, empty
fields, cancellations, guests, countries, planted segments, dirty rows).
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import re
from collections import Counter, defaultdict
from math import comb
from pathlib import Path

import numpy as np
import pytest

from shoplake.synth import GenerationResult, generate

CLICK_HEADER = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]
PRODUCTS_HEADER = ["product_id", "category_id", "category_code", "brand"]
RETAIL_HEADER = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
EVENT_TYPES = {"view", "cart", "remove_from_cart", "purchase"}
CLICK_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC$")
RETAIL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PRICE = re.compile(r"^\d+\.\d{2}$")
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")

CLICK_ROWS = 200_000
RETAIL_ROWS = 200_000


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Reads a gzip CSV with the csv module; returns the header and the data rows."""
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def _read_truth(path: Path) -> dict[str, list[str]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        return {row[0]: row[1:] for row in reader}


def _parses(text: str, fmt: str) -> bool:
    try:
        dt.datetime.strptime(text, fmt)
    except ValueError:
        return False
    return True


def _share(rows: list[list[str]], predicate) -> float:
    return sum(1 for row in rows if predicate(row)) / len(rows)


@pytest.fixture(scope="module")
def clickstream(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[GenerationResult, list[str], list[list[str]]]:
    out = tmp_path_factory.mktemp("clickstream")
    result = generate("clickstream", out, rows=CLICK_ROWS, seed=11)
    header, rows = _read_csv(result.files[0])
    return result, header, rows


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerationResult, list[str], list[list[str]]]:
    out = tmp_path_factory.mktemp("retail")
    result = generate("retail", out, rows=RETAIL_ROWS, seed=11)
    header, rows = _read_csv(result.files[0])
    return result, header, rows


# --- API and arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "orders"}, "unknown source 'orders'"),
        ({"rows": 0}, "rows must be a positive integer"),
        ({"rows": -5}, "rows must be a positive integer"),
        ({"days": 0}, "days must be a positive integer"),
        ({"dirty_fraction": 0.5}, r"dirty_fraction must be in \[0, 0.5\)"),
        ({"dirty_fraction": -0.1}, r"dirty_fraction must be in \[0, 0.5\)"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"source": "clickstream", **kwargs}
    source = args.pop("source")
    with pytest.raises(ValueError, match=message):
        generate(source, tmp_path, **args)


def test_products_rejects_more_rows_than_the_universe(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="products rows must be at most 50000"):
        generate("products", tmp_path, rows=50_001)


def test_generate_creates_out_dir_and_reports_progress(tmp_path: Path) -> None:
    calls: list[int] = []
    out = tmp_path / "a" / "b"
    result = generate("clickstream", out, rows=1_234, seed=3, progress=calls.append)
    assert result.files == [out / "clickstream.csv.gz"]
    assert result.truth_file == out / "_truth" / "clickstream_truth_users.csv"
    assert result.rows == sum(calls) == 1_234
    assert result.dirty_rows == 0 and result.dirty_by_kind == {}


@pytest.mark.parametrize("source", ["clickstream", "retail", "products"])
@pytest.mark.parametrize("rows", [1, 7, 150])
def test_generate_writes_exactly_the_requested_rows(tmp_path: Path, source: str, rows: int) -> None:
    result = generate(source, tmp_path, rows=rows, seed=5)
    _, data = _read_csv(result.files[0])
    if source == "products":
        # Products listed twice come on top of the requested distinct products.
        assert len({row[0] for row in data}) == rows
    else:
        assert len(data) == rows
    assert len(data) == result.rows


def test_clickstream_stays_sorted_across_many_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sessions straddle chunk boundaries; the carried-over events must still come out in order.
    import shoplake.synth.clickstream as clickstream_module

    monkeypatch.setattr(clickstream_module, "_CHUNK_EVENTS", 2_000)
    calls: list[int] = []
    result = generate("clickstream", tmp_path, rows=30_000, seed=8, progress=calls.append)
    _, rows = _read_csv(result.files[0])
    assert len(rows) == sum(calls) == 30_000
    assert len(calls) >= 10
    times = [row[0] for row in rows]
    assert times == sorted(times)
    assert len({tuple(row) for row in rows}) == len(rows)


# --- Determinism and file format ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["clickstream", "retail", "products"])
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path, source: str) -> None:
    rows = None if source == "products" else 20_000
    first = generate(source, tmp_path / "a", rows=rows, seed=9, dirty_fraction=0.05)
    again = generate(source, tmp_path / "b", rows=rows, seed=9, dirty_fraction=0.05)
    other = generate(source, tmp_path / "c", rows=rows, seed=10, dirty_fraction=0.05)
    assert first.files[0].read_bytes() == again.files[0].read_bytes()
    assert first.files[0].read_bytes() != other.files[0].read_bytes()
    if first.truth_file is not None:
        assert first.truth_file.read_bytes() == again.truth_file.read_bytes()
    assert first.dirty_by_kind == again.dirty_by_kind


def test_gzip_header_has_no_timestamp_or_file_name(clickstream) -> None:
    result, _, _ = clickstream
    head = result.files[0].read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] & 0x08 == 0, "FNAME flag set: the file name would make bytes path-dependent"
    assert head[4:8] == b"\x00\x00\x00\x00", "mtime must be 0"


def test_files_use_lf_line_endings(clickstream) -> None:
    result, _, _ = clickstream
    with gzip.open(result.files[0], "rb") as handle:
        chunk = handle.read(1 << 16)
    assert b"\r" not in chunk and chunk.count(b"\n") > 100


# --- Clickstream ---------------------------------------------------------------------------------


def test_clickstream_header_and_fields(clickstream) -> None:
    result, header, rows = clickstream
    assert header == CLICK_HEADER
    assert len(rows) == result.rows == CLICK_ROWS
    assert all(len(row) == 9 for row in rows)
    assert all(row[1] in EVENT_TYPES for row in rows)
    assert all(PRICE.match(row[6]) for row in rows)
    assert all(re.fullmatch(r"\d{19}", row[3]) for row in rows)
    assert all(row[2].isdigit() and row[7].isdigit() for row in rows)
    assert all(UUID.match(row[8]) for row in rows)
    codes = {row[4] for row in rows if row[4]}
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+){1,2}", code) for code in codes)
    assert all(row[5] == row[5].lower() for row in rows)


def test_clickstream_event_type_shares(clickstream) -> None:
    _, _, rows = clickstream
    counts = Counter(row[1] for row in rows)
    n = len(rows)
    assert counts["view"] / n == pytest.approx(0.96, abs=0.01)
    assert counts["cart"] / n == pytest.approx(0.022, abs=0.004)
    assert counts["purchase"] / n == pytest.approx(0.0175, abs=0.004)
    assert 0.0005 <= counts["remove_from_cart"] / n <= 0.003


def test_clickstream_empty_category_code_and_brand_shares(clickstream) -> None:
    _, _, rows = clickstream
    assert _share(rows, lambda r: r[4] == "") == pytest.approx(0.32, abs=0.035)
    assert _share(rows, lambda r: r[5] == "") == pytest.approx(0.14, abs=0.03)


def test_clickstream_timestamps_are_formatted_sorted_and_in_span(clickstream) -> None:
    _, _, rows = clickstream
    times = [row[0] for row in rows]
    assert all(CLICK_TIME.match(t) for t in times)
    assert times == sorted(times)
    assert times[0] >= "2019-10-01 00:00:00 UTC" and times[-1] < "2019-11-01 00:00:00 UTC"
    days = Counter(t[:10] for t in times)
    assert len(days) == 31
    hours = Counter(int(t[11:13]) for t in times)
    # More traffic in the evening (UTC+3 store) than in the night trough.
    assert hours[17] > 5 * hours[2]


def test_clickstream_actions_follow_a_view_of_the_same_product_in_the_session(clickstream) -> None:
    _, _, rows = clickstream
    viewed: set[tuple[str, str]] = set()
    carted: set[tuple[str, str]] = set()
    for row in rows:  # rows are in time order
        key = (row[8], row[2])
        if row[1] == "view":
            viewed.add(key)
        else:
            assert key in viewed, row
            if row[1] == "cart":
                carted.add(key)
            if row[1] == "remove_from_cart":
                assert key in carted, row


def test_clickstream_has_sessions_and_heavy_tailed_activity(clickstream) -> None:
    _, _, rows = clickstream
    per_session = Counter(row[8] for row in rows)
    assert len({row[8] for row in rows}) > len({row[7] for row in rows})
    assert 3 <= np.mean(list(per_session.values())) <= 12
    # A session belongs to one user.
    assert all(len({r[7] for r in group}) == 1 for group in _group_by(rows, 8).values())
    per_user = np.array(list(Counter(row[7] for row in rows).values()))
    assert per_user.max() > 8 * np.median(per_user)
    per_product = np.array(sorted(Counter(row[2] for row in rows).values(), reverse=True))
    assert per_product[:100].sum() > 0.1 * len(rows)


def _group_by(rows: list[list[str]], column: int) -> dict[str, list[list[str]]]:
    groups: dict[str, list[list[str]]] = defaultdict(list)
    for row in rows:
        groups[row[column]].append(row)
    return groups


def test_clickstream_truth_covers_every_user(clickstream) -> None:
    result, _, rows = clickstream
    truth = _read_truth(result.truth_file)
    users = {row[7] for row in rows}
    assert users <= set(truth)
    assert len(truth) == len(users)
    types = Counter(t for t, _ in truth.values())
    assert set(types) == {"browser", "engaged", "high_value"}
    n = len(truth)
    assert types["browser"] / n == pytest.approx(0.70, abs=0.05)
    assert types["engaged"] / n == pytest.approx(0.22, abs=0.05)
    assert types["high_value"] / n == pytest.approx(0.08, abs=0.03)
    assert all(0.0 <= float(p) <= 1.0 for _, p in truth.values())


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 5) -> np.ndarray:
    best: tuple[float, np.ndarray] | None = None
    for _ in range(n_init):
        centers = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d2 = np.min(((x[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
            centers.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        c = np.array(centers)
        for _ in range(100):
            labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            new = np.array([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels)
    return best[1]


def _adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    pairs = sum(comb(int(v), 2) for v in table.ravel())
    rows = sum(comb(int(v), 2) for v in table.sum(1))
    cols = sum(comb(int(v), 2) for v in table.sum(0))
    expected = rows * cols / comb(int(table.sum()), 2)
    return (pairs - expected) / ((rows + cols) / 2 - expected)


def test_clickstream_user_types_are_recoverable_by_kmeans(clickstream) -> None:
    result, _, rows = clickstream
    truth = _read_truth(result.truth_file)
    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for row in rows:
        s = stats[row[7]]
        if row[1] == "view":
            s[0] += 1
        elif row[1] == "cart":
            s[1] += 1
        elif row[1] == "purchase":
            s[2] += 1
            s[3] += float(row[6])
    users = sorted(stats)
    x = np.log1p(np.array([stats[u] for u in users]))
    x = (x - x.mean(0)) / x.std(0)
    labels = _kmeans(x, 3, np.random.default_rng(0))
    planted = np.array([truth[u][0] for u in users])
    assert _adjusted_rand(labels, planted) >= 0.8
    revenue = {t: np.mean([stats[u][3] for u in users if truth[u][0] == t]) for t in set(planted)}
    assert revenue["high_value"] > 10 * revenue["engaged"] > 0


# --- Products ------------------------------------------------------------------------------------


def test_products_match_the_clickstream_catalog_of_the_same_seed(tmp_path: Path, clickstream) -> None:
    _, _, events = clickstream
    result = generate("products", tmp_path, seed=11)
    header, rows = _read_csv(result.files[0])
    assert header == PRODUCTS_HEADER
    assert result.truth_file is None
    latest = {row[0]: row[1:] for row in rows}  # the latest row of a product wins
    assert len(latest) == 50_000
    for row in events:
        assert latest[row[2]] == [row[3], row[4], row[5]], row
    repeated = len(rows) - len(latest)
    assert 0.005 * len(latest) <= repeated <= 0.02 * len(latest)
    first: dict[str, list[str]] = {}
    for row in rows:
        first.setdefault(row[0], row[1:])
    changed = [pid for pid in latest if first[pid] != latest[pid]]
    assert len(changed) == repeated
    assert all(first[pid][2] != latest[pid][2] and first[pid][:2] == latest[pid][:2] for pid in changed)


def test_products_rows_lists_the_first_products_of_the_universe(tmp_path: Path) -> None:
    small = generate("products", tmp_path / "small", rows=500, seed=4)
    full = generate("products", tmp_path / "full", seed=4)
    _, small_rows = _read_csv(small.files[0])
    _, full_rows = _read_csv(full.files[0])
    small_ids = list(dict.fromkeys(row[0] for row in small_rows))
    assert small_ids == list(dict.fromkeys(row[0] for row in full_rows))[:500]


# --- Retail --------------------------------------------------------------------------------------


def test_retail_header_and_fields(retail) -> None:
    result, header, rows = retail
    assert header == RETAIL_HEADER
    assert len(rows) == result.rows == RETAIL_ROWS
    assert all(len(row) == 8 for row in rows)
    assert all(RETAIL_TIME.match(row[4]) for row in rows)
    assert all(re.fullmatch(r"-?\d+", row[3]) for row in rows)
    assert all(NUMBER.match(row[5]) for row in rows)
    assert all(row[6] == "" or re.fullmatch(r"\d{5}\.0", row[6]) for row in rows)
    assert all(re.fullmatch(r"[CA]?\d{6}", row[0]) for row in rows)
    dates = [row[4] for row in rows]
    assert dates[0] >= "2019-10-01" and dates[-1] < "2019-11-01"
    descriptions = [row[2] for row in rows if row[2] and row[0][0] != "A"]
    assert all(d == d.upper() for d in descriptions)
    assert any("," in d for d in descriptions)


def test_retail_shares_match_the_uci_file(retail) -> None:
    _, _, rows = retail
    assert _share(rows, lambda r: r[0].startswith("C")) == pytest.approx(0.018, abs=0.004)
    assert _share(rows, lambda r: r[6] == "") == pytest.approx(0.25, abs=0.03)
    assert _share(rows, lambda r: r[7] == "United Kingdom") == pytest.approx(0.90, abs=0.03)
    countries = Counter(row[7] for row in rows)
    assert {"Germany", "France", "EIRE"} <= {c for c, _ in countries.most_common(6)}
    lines_per_invoice = Counter(row[0] for row in rows if not row[0].startswith("C"))
    assert 12 <= np.mean(list(lines_per_invoice.values())) <= 30
    duplicates = sum(1 for a, b in zip(rows, rows[1:], strict=False) if a == b)
    assert 0.005 * len(rows) <= duplicates <= 0.02 * len(rows)
    adjustments = [row for row in rows if row[0].startswith("A")]
    assert adjustments and all(row[2] == "Adjust bad debt" for row in adjustments)
    assert any(float(row[5]) < 0 for row in adjustments)
    assert any(float(row[5]) == 0 for row in rows if row[0][0].isdigit())


def test_retail_cancellations_negate_earlier_sales_of_the_customer(retail) -> None:
    _, _, rows = retail
    sold: dict[tuple[str, str, str], list[tuple[str, int]]] = defaultdict(list)
    cancellations = 0
    for row in rows:  # rows are in time order
        key = (row[6], row[1], row[5])
        if row[0].startswith("C"):
            cancellations += 1
            assert int(row[3]) < 0 and row[6] != ""
            earlier = sold[key]
            assert any(when < row[4] and qty >= -int(row[3]) for when, qty in earlier), row
        elif row[0][0].isdigit() and int(row[3]) > 0:
            sold[key].append((row[4], int(row[3])))
    assert cancellations > 0


def test_retail_truth_covers_every_customer_and_types_differ(retail) -> None:
    result, _, rows = retail
    truth = _read_truth(result.truth_file)
    customers = {str(int(float(row[6]))) for row in rows if row[6]}
    assert customers == set(truth)
    assert set(t for (t,) in truth.values()) == {"champion", "regular", "hibernating"}
    invoices: dict[str, set[str]] = defaultdict(set)
    last_day: dict[str, str] = {}
    for row in rows:
        if row[6] and row[0][0].isdigit():
            cid = str(int(float(row[6])))
            invoices[cid].add(row[0])
            last_day[cid] = max(last_day.get(cid, ""), row[4][:10])
    by_type: dict[str, list[str]] = defaultdict(list)
    for cid, (kind,) in truth.items():
        by_type[kind].append(cid)

    def median_invoices(kind: str) -> float:
        return float(np.median([len(invoices[c]) for c in by_type[kind]]))

    def share_active_late(kind: str) -> float:
        return float(np.mean([last_day.get(c, "") >= "2019-10-20" for c in by_type[kind]]))

    # Frequency and recency separate the planted types, as an RFM segmentation expects.
    assert median_invoices("champion") > median_invoices("regular") > median_invoices("hibernating")
    assert share_active_late("champion") > 0.9 and share_active_late("hibernating") < 0.05


# --- Dirty rows ----------------------------------------------------------------------------------


def test_clickstream_dirty_rows_match_the_reported_counts(tmp_path: Path) -> None:
    result = generate("clickstream", tmp_path, rows=40_000, seed=2, dirty_fraction=0.1)
    with gzip.open(result.files[0], "rt", newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    assert len(rows) == result.rows == 40_000
    assert result.dirty_rows == sum(result.dirty_by_kind.values())
    assert result.dirty_rows == pytest.approx(4_000, rel=0.1)
    found: Counter[str] = Counter()
    previous: list[str] | None = None
    for row in rows:
        if len(row) != 9:
            found["column_count"] += 1
        elif not _parses(row[0], "%Y-%m-%d %H:%M:%S UTC"):
            found["bad_timestamp"] += 1
        elif not PRICE.match(row[6]):
            found["bad_number"] += 1
        elif row[2] == "" or row[7] == "":
            found["missing_id"] += 1
        elif row[1] not in EVENT_TYPES:
            found["bad_event_type"] += 1
        elif row == previous:
            found["duplicate"] += 1
        previous = row
    assert dict(found) == result.dirty_by_kind
    assert set(found) == {
        "column_count",
        "bad_timestamp",
        "bad_number",
        "missing_id",
        "bad_event_type",
        "duplicate",
    }


def test_retail_dirty_rows_match_the_reported_counts(tmp_path: Path) -> None:
    clean = generate("retail", tmp_path / "clean", rows=40_000, seed=2)
    result = generate("retail", tmp_path / "dirty", rows=40_000, seed=2, dirty_fraction=0.08)
    _, rows = _read_csv(result.files[0])
    _, clean_rows = _read_csv(clean.files[0])
    assert len(rows) == result.rows == 40_000
    assert result.dirty_rows == pytest.approx(3_200, rel=0.15)
    found: Counter[str] = Counter()
    for row in rows:
        if len(row) != 8:
            found["column_count"] += 1
        elif not _parses(row[4], "%Y-%m-%d %H:%M:%S"):
            found["bad_timestamp"] += 1
        elif not NUMBER.match(row[3]) or not NUMBER.match(row[5]):
            found["bad_number"] += 1
        elif row[0] == "" or row[1] == "":
            found["missing_id"] += 1
    expected = {k: v for k, v in result.dirty_by_kind.items() if k != "duplicate"}
    assert dict(found) == expected
    # The real file already repeats about 1% of its lines; injected duplicates come on top.
    natural = sum(1 for a, b in zip(clean_rows, clean_rows[1:], strict=False) if a == b)
    dirty_dups = sum(1 for a, b in zip(rows, rows[1:], strict=False) if a == b)
    assert result.dirty_by_kind["duplicate"] > 0
    assert dirty_dups == pytest.approx(natural + result.dirty_by_kind["duplicate"], rel=0.1)


def test_products_dirty_rows_match_the_reported_counts(tmp_path: Path) -> None:
    result = generate("products", tmp_path, rows=20_000, seed=2, dirty_fraction=0.2)
    _, rows = _read_csv(result.files[0])
    found: Counter[str] = Counter()
    previous: list[str] | None = None
    for row in rows:
        if len(row) != 4:
            found["column_count"] += 1
        elif row[0] == "":
            found["missing_id"] += 1
        elif not (row[0].isdigit() and row[1].isdigit()):
            found["bad_number"] += 1
        elif row == previous:
            found["duplicate"] += 1
        previous = row
    assert dict(found) == result.dirty_by_kind
    assert result.dirty_rows == pytest.approx(0.2 * len(rows), rel=0.1)


def test_dates_follow_start_and_days(tmp_path: Path) -> None:
    start = dt.date(2021, 3, 5)
    click = generate("clickstream", tmp_path, rows=5_000, start=start, days=3)
    shop = generate("retail", tmp_path, rows=5_000, start=start, days=3)
    _, click_rows = _read_csv(click.files[0])
    _, shop_rows = _read_csv(shop.files[0])
    assert {row[0][:10] for row in click_rows} == {"2021-03-05", "2021-03-06", "2021-03-07"}
    assert {row[4][:10] for row in shop_rows} <= {"2021-03-05", "2021-03-06", "2021-03-07"}


def test_clickstream_plants_category_affinities_and_companions(clickstream) -> None:
    result, header, rows = clickstream
    truth = result.files[0].parent / "_truth"
    with open(truth / "clickstream_truth_affinities.csv", newline="") as handle:
        affinity = {int(r["user_id"]): r["category_id"] for r in csv.DictReader(handle)}
    with open(truth / "clickstream_truth_companions.csv", newline="") as handle:
        companion = {int(r["product_id"]): int(r["companion_product_id"]) for r in csv.DictReader(handle)}
    with open(truth / "clickstream_truth_users.csv", newline="") as handle:
        assert set(affinity) == {int(r["user_id"]) for r in csv.DictReader(handle)}
    col = {name: header.index(name) for name in ("event_type", "product_id", "category_id", "user_id",
                                                 "user_session")}
    purchases = [r for r in rows if len(r) == len(header) and r[col["event_type"]] == "purchase"
                 and r[col["user_id"]] and r[col["category_id"]]]
    users = [int(r[col["user_id"]]) for r in purchases]
    categories = [r[col["category_id"]] for r in purchases]
    own = np.mean([affinity[u] == c for u, c in zip(users, categories, strict=True)])
    # chance: the same purchases against another user's planted category
    shuffled = np.random.default_rng(0).permutation(users)
    other = np.mean([affinity[int(u)] == c for u, c in zip(shuffled, categories, strict=True)])
    print(f"\npurchases in the planted category {own:.3f}, in another user's {other:.3f}")
    assert own >= other + 0.25, (own, other)
    # Every session buying two or more products bought one product's companion with it.
    bought: dict[str, set[int]] = defaultdict(set)
    for r in purchases:
        bought[r[col["user_session"]]].add(int(r[col["product_id"]]))
    baskets = [b for b in bought.values() if len(b) >= 2]
    with_pair = np.mean([any(companion.get(p) in b for p in b) for b in baskets])
    print(f"{len(baskets)} baskets of 2+ products, {with_pair:.3f} holding a planted pair")
    assert len(baskets) > 20 and with_pair >= 0.9, (len(baskets), with_pair)
