"""The real `shoplake` console script, run as a subprocess on lakes in temp folders."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

import pytest

from shoplake.build import build_tables
from shoplake.ingest import ingest_files
from shoplake.lake import new_run_id

NOV_FILE = ("rees46_multicategory", "2019-Nov_head_683rows.csv.gz")
OCT_FILE = ("rees46_multicategory", "2019-Oct_head_17434rows.csv.gz")

# A second, small batch (a new day), so silver.events gets a version 1 for time travel.
_PHONE = "1003461,2053013555631882655,electronics.smartphone,xiaomi,489.07,520088904,s-1"
SECOND_BATCH = [
    f"2019-11-02 10:00:00 UTC,view,{_PHONE}",
    f"2019-11-02 10:01:00 UTC,cart,{_PHONE}",
    f"2019-11-02 10:02:00 UTC,purchase,{_PHONE}",
    "2019-11-02 11:00:00 UTC,view,5000088,2053013566100866035,appliances.sewing_machine,janome,293.65,"
    "530496790,s-2",
]


@pytest.fixture(scope="module")
def shop(e2e, tmp_path_factory):
    """A lake with the real November head, ingested and built by the CLI; then a second batch."""
    root = tmp_path_factory.mktemp("cli")
    nov = e2e.real_file(*NOV_FILE)
    lake = root / "lake"
    first = e2e.cli_ok("ingest", "clickstream", str(nov), lake=lake)
    assert "ingested, 683 rows to bronze.clickstream" in first.stdout
    e2e.cli_ok("build", lake=lake)
    second = root / "batch2.csv"
    second.write_text("\n".join([e2e.CLICKSTREAM_HEADER, *SECOND_BATCH]) + "\n")
    # The second batch goes through the Python API the CLI wraps (two fewer interpreter starts).
    api_lake = e2e.open_lake(lake)
    assert [r.status for r in ingest_files(api_lake, "clickstream", [str(second)], run_id=new_run_id())] == [
        "ingested"]
    assert not [r for r in build_tables(api_lake, run_id=new_run_id()) if r.status == "failed"]
    return {"lake": lake, "root": root, "nov": nov, "second": second}


def test_cli_sql_csv(e2e, shop):
    result = e2e.cli_ok("sql", "select event_date, count_views, count_purchases from gold.daily_funnel "
                               "order by event_date", "--format", "csv", lake=shop["lake"])
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["event_date", "count_views", "count_purchases"],
        ["2019-11-01", "678", "2"],
        ["2019-11-02", "2", "1"],
    ]


def test_cli_sql_json(e2e, shop):
    result = e2e.cli_ok("sql", "select event_type, count(*) as n from silver.events group by 1 order by 1",
                        "-f", "json", lake=shop["lake"])
    assert json.loads(result.stdout) == [{"event_type": "cart", "n": 4}, {"event_type": "purchase", "n": 3},
                                         {"event_type": "view", "n": 680}]


def test_cli_sql_limit_and_table_format(e2e, shop):
    result = e2e.cli_ok("sql", "select * from silver.events", "--limit", "3", lake=shop["lake"])
    assert "3 row(s)" in result.stdout


def test_cli_tables_lists_every_table_with_rows(e2e, shop):
    result = e2e.cli_ok("tables", lake=shop["lake"])
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    expected = ("bronze.clickstream", "silver.events", "gold.daily_funnel", "ops.ledger", "quarantine.retail")
    for name in expected:
        assert name in lines, result.stdout
    assert "687" in lines["bronze.clickstream"]
    assert "687" in lines["silver.events"]
    assert lines["bronze.retail"].split("│")[3].strip() == "-"  # never ingested


def test_cli_describe_shows_lineage(e2e, shop):
    funnel = e2e.cli_ok("describe", "gold.daily_funnel", lake=shop["lake"]).stdout
    assert "upstream: silver.events" in funnel
    assert "downstream: -" in funnel
    assert "grain: event_date" in funnel
    assert "session_conversion_rate" in funnel
    events = e2e.cli_ok("describe", "silver.events", lake=shop["lake"]).stdout
    assert "upstream: bronze.clickstream, silver.products" in events
    downstream = next(line for line in events.splitlines() if line.startswith("downstream:"))
    assert {"gold.daily_funnel", "gold.user_features", "gold.product_performance"} <= {
        name.strip() for name in downstream.removeprefix("downstream:").split(",")}


def test_cli_history_lists_versions(e2e, shop):
    result = e2e.cli_ok("history", "silver.events", lake=shop["lake"])
    rows = [line.split("│") for line in result.stdout.splitlines() if line.count("│") > 3]
    versions = {cells[1].strip(): cells for cells in rows}
    assert set(versions) == {"0", "1"}, result.stdout
    assert versions["0"][4].strip() == "683" and versions["1"][4].strip() == "4"
    assert versions["1"][3].strip() == "WRITE"


def test_cli_time_travel_reads_an_earlier_version(e2e, shop):
    old = e2e.cli_json("select count(*) as n from silver.events VERSION AS OF 0", lake=shop["lake"])
    new = e2e.cli_json("select count(*) as n from silver.events", lake=shop["lake"])
    assert (old, new) == ([{"n": 683}], [{"n": 687}])
    both = e2e.cli_json("select (select count(*) from gold.daily_funnel version as of 0) as old_days, "
                        "(select count(*) from gold.daily_funnel) as days", lake=shop["lake"])
    assert both == [{"old_days": 1, "days": 2}]


def test_cli_time_travel_to_a_missing_version_is_one_line(e2e, shop):
    result = e2e.run_cli("sql", "select count(*) from silver.events VERSION AS OF 99", lake=shop["lake"])
    e2e.assert_one_line_error(result, names="silver.events")


@pytest.mark.parametrize("statement", [
    "delete from silver.events",
    "create table gold.hacked as select 1 as x",
    "drop table silver.events",
    "select 1; delete from silver.events",
    "copy silver.events to 'copied.csv'",
])
def test_cli_sql_refuses_writes(e2e, shop, statement):
    before = e2e.table_versions(shop["lake"])
    result = e2e.run_cli("sql", statement, lake=shop["lake"], cwd=shop["root"])
    line = e2e.assert_one_line_error(result, names="")
    assert "allowed" in line or "one SQL statement" in line
    assert e2e.table_versions(shop["lake"]) == before
    assert not (shop["root"] / "copied.csv").exists()
    assert e2e.scalar(e2e.open_lake(shop["lake"]), "select count(*) from silver.events") == 687


def test_cli_same_file_twice_is_skipped(e2e, shop):
    before = e2e.table_versions(shop["lake"])
    result = e2e.cli_ok("ingest", "clickstream", str(shop["nov"]), lake=shop["lake"])
    assert f"{shop['nov']}: skipped" in result.stdout
    assert e2e.table_versions(shop["lake"]) == before
    rebuilt = e2e.cli_ok("build", lake=shop["lake"])
    assert "error" not in rebuilt.stderr.lower()
    assert e2e.table_versions(shop["lake"])["silver.events"] == before["silver.events"]
    assert e2e.table_versions(shop["lake"])["gold.daily_funnel"] == before["gold.daily_funnel"]


def test_cli_same_content_under_another_name_is_skipped(e2e, shop, tmp_path):
    copy = tmp_path / "renamed.csv.gz"
    shutil.copyfile(shop["nov"], copy)
    before = e2e.table_versions(shop["lake"])
    result = e2e.cli_ok("ingest", "clickstream", str(copy), lake=shop["lake"])
    assert "skipped" in result.stdout
    assert e2e.table_versions(shop["lake"]) == before


# -- errors: exit 1, one line naming the file, no traceback, nothing written --------------------------

def _truncated_gzip(e2e, folder: Path) -> Path:
    data = e2e.real_file(*OCT_FILE).read_bytes()
    path = folder / "truncated.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


BAD_FILES = {
    "wrong_header": lambda e2e, d: _write(d / "wrong_header.csv", "a,b,c\n1,2,3\n"),
    "missing": lambda e2e, d: d / "no_such_file.csv",
    "empty": lambda e2e, d: _write(d / "empty.csv", ""),
    "header_only": lambda e2e, d: _write(d / "header_only.csv", e2e.CLICKSTREAM_HEADER + "\n"),
    "header_only_gz": lambda e2e, d: _write_gz(d / "header_only.csv.gz", e2e.CLICKSTREAM_HEADER + "\n"),
    "truncated_gzip": _truncated_gzip,
    "not_gzip": lambda e2e, d: _write(d / "plain_text.csv.gz", e2e.CLICKSTREAM_HEADER + "\nx\n"),
    "unsupported_type": lambda e2e, d: _write(d / "events.json", "{}"),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _write_gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_cli_bad_file_is_one_line_and_creates_no_table(e2e, tmp_path, case):
    bad = BAD_FILES[case](e2e, tmp_path)
    lake = tmp_path / "lake"
    result = e2e.run_cli("ingest", "clickstream", str(bad), lake=lake)
    e2e.assert_one_line_error(result, names=str(bad))
    assert e2e.delta_logs(lake) == []


def test_cli_bad_file_in_a_folder_leaves_the_lake_unchanged(e2e, shop, tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    good = folder / "a_good.csv"  # sorts first: it must not be written either
    row = SECOND_BATCH[0].replace("2019-11-02", "2019-11-05")
    good.write_text(f"{e2e.CLICKSTREAM_HEADER}\n{row}\n")
    bad = _truncated_gzip(e2e, folder)
    before = e2e.table_versions(shop["lake"])
    result = e2e.run_cli("ingest", "clickstream", str(folder), lake=shop["lake"])
    e2e.assert_one_line_error(result, names=str(bad))
    assert e2e.table_versions(shop["lake"]) == before


def test_cli_describe_unknown_table(e2e, shop):
    before = e2e.table_versions(shop["lake"])
    result = e2e.run_cli("describe", "gold.daily_funel", lake=shop["lake"])
    line = e2e.assert_one_line_error(result, names="gold.daily_funel")
    assert "did you mean gold.daily_funnel" in line
    assert e2e.table_versions(shop["lake"]) == before


def test_cli_sql_unknown_table(e2e, shop):
    result = e2e.run_cli("sql", "select * from gold.nothing_here", lake=shop["lake"])
    e2e.assert_one_line_error(result, names="gold.nothing_here")


# -- a file with 5% bad rows: every row is accounted ---------------------------------------------------

def _good_row(i: int) -> str:
    event_type = ("view", "cart", "purchase")[i % 3]
    return (f"2019-10-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d} UTC,{event_type},{1000 + i},"
            f"2053013555631882655,electronics.smartphone,apple,{10 + i}.5,{500 + i % 17},s-{i % 17}")


# 10 bad rows of 200 (5%), each with the reason it must be quarantined under.
BAD_ROWS = [
    ("2019-10-01 05:00:01 UTC,view,1,2,a.b,x,1.0,5", "wrong_column_count"),
    ("2019-10-01 05:00:02 UTC,view,1,2,a.b,x,1.0,5,s-1,surplus", "wrong_column_count"),
    ("yesterday,view,1,2,a.b,x,1.0,5,s-1", "invalid_event_time"),
    ("2019-13-45 99:00:00 UTC,view,1,2,a.b,x,1.0,5,s-1", "invalid_event_time"),
    ("2019-10-01 05:00:03 UTC,view,1,2,a.b,x,abc,5,s-1", "invalid_price"),
    ("2019-10-01 05:00:04 UTC,view,1,2,a.b,x,1.2.3,5,s-1", "invalid_price"),
    ("2019-10-01 05:00:05 UTC,click,1,2,a.b,x,1.0,5,s-1", "accepted_values_event_type"),
    ("2019-10-01 05:00:06 UTC,wishlist,1,2,a.b,x,1.0,5,s-1", "accepted_values_event_type"),
    ("2019-10-01 05:00:07 UTC,view,1,2,a.b,x,1.0,,s-1", "not_null_user_id"),
    ("2019-10-01 05:00:08 UTC,cart,1,2,a.b,x,1.0,,s-1", "not_null_user_id"),
]
INGEST_REASONS = {"wrong_column_count", "invalid_event_time", "invalid_price"}


def test_cli_five_percent_bad_rows_are_all_accounted(e2e, tmp_path):
    good = [_good_row(i) for i in range(187)]
    body = good + [good[3], good[50], good[99]]  # three exact duplicates (valid rows, removed by silver)
    for position, (row, _) in enumerate(BAD_ROWS):
        body.insert(7 + position * 19, row)
    assert len(body) == 200
    path = tmp_path / "dirty.csv"
    path.write_text("\n".join([e2e.CLICKSTREAM_HEADER, *body]) + "\n")
    lake = tmp_path / "lake"

    ingest = e2e.cli_ok("ingest", "clickstream", str(path), lake=lake)
    assert f"{path}: ingested, 194 rows to bronze.clickstream, 6 quarantined" in ingest.stdout
    e2e.cli_ok("build", lake=lake)

    dirty_lake = e2e.open_lake(lake)
    (counts,) = e2e.rows(dirty_lake, """
        select (select count(*) from bronze.clickstream) as bronze,
               (select count(*) from silver.events) as silver,
               (select count(*) from quarantine.clickstream where _stage = 'ingest') as q_ingest,
               (select count(*) from quarantine.clickstream where _stage = 'silver') as q_silver,
               (select count(*) from quarantine.clickstream) as q_total
    """)
    ledger = {r["table_name"]: r for r in e2e.rows(
        dirty_lake, "select table_name, rows_in, rows_out, rows_diverted, diverted, is_balanced "
                    "from ops.ledger where table_name in ('bronze.clickstream', 'silver.events')")}
    duplicates = json.loads(ledger["silver.events"]["diverted"]).get("duplicate", 0)

    assert counts["bronze"] + counts["q_ingest"] == 200
    assert counts["silver"] + counts["q_silver"] + duplicates == counts["bronze"]
    assert duplicates == 3
    assert counts["q_total"] == len(BAD_ROWS)
    assert all(entry["is_balanced"] for entry in ledger.values())
    assert ledger["bronze.clickstream"]["rows_in"] == 200

    reasons = e2e.cli_json("select reason, _stage, count(*) as n from quarantine.clickstream "
                           "group by all order by all", lake=lake)  # reasons are queryable from the CLI
    expected: dict[tuple[str, str], int] = {}
    for _, reason in BAD_ROWS:
        key = (reason, "ingest" if reason in INGEST_REASONS else "silver")
        expected[key] = expected.get(key, 0) + 1
    assert {(r["reason"], r["_stage"]): r["n"] for r in reasons} == expected
    # The ledger records the same reasons, per stage.
    assert json.loads(ledger["bronze.clickstream"]["diverted"]) == {
        f"quarantine:{reason}": n for (reason, stage), n in expected.items() if stage == "ingest"}
    assert {k: v for k, v in json.loads(ledger["silver.events"]["diverted"]).items() if k != "duplicate"} == {
        f"quarantine:{reason}": n for (reason, stage), n in expected.items() if stage == "silver"}
    # Rows that could not be split keep their raw line; the others keep their raw values.
    raw = e2e.rows(dirty_lake, "select _raw_line, event_time, price from quarantine.clickstream "
                             "where reason in ('wrong_column_count', 'invalid_price')")
    assert {r["_raw_line"] for r in raw if r["_raw_line"]} == {BAD_ROWS[0][0], BAD_ROWS[1][0]}
    assert {r["price"] for r in raw if not r["_raw_line"]} == {"abc", "1.2.3"}


@pytest.mark.parametrize("module", ["shoplake", "shoplake.cli"])
def test_python_dash_m_honours_the_lake_in_command_groups(module, tmp_path):
    """`python -m` must run the same CLI module the command groups import, so `--lake` reaches them
    (a second copy of the module once left `ml` commands on the default lake)."""
    import subprocess
    import sys

    lake = tmp_path / "lake"
    done = subprocess.run([sys.executable, "-m", module, "--lake", str(lake), "ml", "models"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (lake / "_mlflow").is_dir()
    assert not (tmp_path / "lakehouse").exists()


def test_generated_data_ingests_with_the_command_generate_prints(e2e, tmp_path):
    out, lake = tmp_path / "generated", tmp_path / "lake"
    generated = e2e.cli_ok("generate", "clickstream", "--out", str(out), "--rows", "3000", lake=lake)
    truth = out / "_truth" / "clickstream_truth_users.csv"
    assert truth.is_file()  # the planted truth sits in a side folder, not next to the data
    (next_line,) = [line for line in generated.stdout.splitlines() if line.startswith("next: ")]
    assert next_line == f"next: shoplake --lake {lake} ingest clickstream {out}"

    ingested = e2e.cli_ok("ingest", "clickstream", str(out), lake=lake)
    assert "ingested, 3,000 rows to bronze.clickstream" in ingested.stdout
    assert "truth" not in ingested.stdout  # the side folder was passed by, not refused
    (counts,) = e2e.rows(e2e.open_lake(lake), "select count(*) as n from bronze.clickstream")
    assert counts["n"] == 3000
