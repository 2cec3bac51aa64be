"""The promises of the README's "Guarantees" section, one by one, on small lakes.

verify catches what the ledger alone cannot; bad data cannot wedge the lake; one command has one
outcome; errors a person can act on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from shoplake.catalog import default_catalog
from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.lake import Lake
from shoplake.quality.batches import list_batches
from shoplake.quality.ledger import LedgerEntry
from shoplake.quality.verify import verify_lake
from shoplake.synth import generate

from .conftest import assert_verified, cli

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


@pytest.fixture
def lake_copy(tmp_path, built) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(built, copy)
    return copy


def _failures(lake: Path) -> list[tuple[str, str, str]]:
    return [(f.check, f.subject, f.what) for f in verify_lake(Lake(Settings(lake=lake))).failures]


# -- verify ---------------------------------------------------------------------------------------------

def test_verify_passes_on_a_built_lake_and_prints_its_verdict(built):
    assert_verified(built)
    done = cli(built, "summary")
    assert "verify: all" in done.stdout and "reconciliations hold" in done.stdout


def test_verify_finds_a_missing_ledger_row(lake_copy):
    ledger = DeltaTable(str(lake_copy / "ops" / "ledger"))
    ledger.delete("table_name = 'silver.events'")
    failures = _failures(lake_copy)
    assert ("ledger", "ops.ledger", "commits whose ledger entry is missing") in failures
    done = cli(lake_copy, "verify", check=False)
    assert done.returncode == 1 and "FAIL" in done.stdout and "silver.events" not in done.stderr


def test_verify_finds_rows_that_appeared_in_silver(lake_copy):
    store = DeltaStore(lake_copy)
    events = store.open("silver.events").to_pyarrow_table()
    # Rows written behind shoplake's back (no ledger entry): Silver no longer equals what came in.
    store.write("silver.events", events.slice(0, 3), mode="append", meta={"write_key": "tamper"})
    failures = _failures(lake_copy)
    assert ("silver", "silver.events", "rows in the table per ledger") in failures
    assert ("silver", "silver.events", "bronze rows = table + quarantine + duplicates") in failures


def test_verify_finds_lost_quarantine_rows(lake_copy):
    DeltaTable(str(lake_copy / "quarantine" / "clickstream")).delete("_stage = 'ingest'")
    failures = _failures(lake_copy)
    assert any(check == "ingest" and what == "ingest rows in quarantine.clickstream" for check, _, what in failures)


def test_verify_finds_gold_that_does_not_match_silver(lake_copy):
    funnel = DeltaTable(str(lake_copy / "gold" / "daily_funnel"))
    first_day = min(funnel.to_pyarrow_table().column("event_date").to_pylist())
    funnel.delete(f"event_date = '{first_day.isoformat()}'")
    assert ("gold", "gold.daily_funnel", "events = silver") in _failures(lake_copy)


# -- bad data cannot wedge the lake ----------------------------------------------------------------------

def _append_bronze_batch(lake: Path, batch_id: str, rows: list[dict]) -> None:
    """A bronze batch written as an older shoplake (that accepted NaN prices) would have."""
    spec = default_catalog().get("bronze.retail")
    now = dt.datetime.now(dt.UTC)
    for i, row in enumerate(rows, start=1):
        row.update(_source_file="old-export.csv", _source_row=i, _batch_id=batch_id, _ingested_at=now)
    table = pa.Table.from_pylist(rows, schema=spec.arrow_schema)
    store = DeltaStore(lake)
    version = store.write(spec.name, table, mode="append", meta={"write_key": batch_id, "run_id": "old"})
    # ...with its ingest accounting, as ingestion records it (on the batch's quarantine commit).
    entry = LedgerEntry(run_id="old", table_name=spec.name, write_key=f"ingest:{batch_id}", rows_in=len(rows),
                        rows_out=len(rows), rows_written=len(rows), table_version=version,
                        inputs={"batch_id": batch_id})
    quarantine = default_catalog().get("quarantine.retail")
    store.write(quarantine.name, quarantine.arrow_schema.empty_table(), mode="append",
                meta={"write_key": f"{batch_id}:ingest", "run_id": "old", "ledger": entry.as_meta()})
    Lake(Settings(lake=lake)).sync_ledger()


def _retail_row(invoice: str, quantity: int, price: float) -> dict:
    return {"InvoiceNo": invoice, "StockCode": "85123A", "Description": "LINE", "Quantity": quantity,
            "InvoiceDate": dt.datetime(2011, 1, 20, 10, tzinfo=dt.UTC), "UnitPrice": price, "CustomerID": 17850,
            "Country": "United Kingdom"}


@pytest.mark.slow  # the whole daily job, models included
def test_a_nan_cancellation_in_bronze_is_quarantined_and_the_daily_job_finishes(tmp_path):
    # A month of clickstream (the propensity model needs three weeks) and a month of retail.
    data, lake = tmp_path / "data", tmp_path / "lake"
    generate("clickstream", data, rows=20_000, seed=42, days=31)
    generate("retail", data, rows=5_000, seed=42, days=30)
    cli(lake, "ingest", "clickstream", str(data / "clickstream.csv.gz"))
    cli(lake, "ingest", "retail", str(data / "retail.csv.gz"))
    _append_bronze_batch(lake, "retail-nan", [_retail_row("C990001", -1, float("nan")),
                                              _retail_row("990002", 2, 3.5)])
    landing = tmp_path / "landing"
    for source in ("products", "clickstream", "retail"):
        (landing / source).mkdir(parents=True)
    done = cli(lake, "run", "daily", check=False, SHOPLAKE_LANDING=str(landing))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify: all" in done.stdout  # the job's last task reconciled the lake
    store = DeltaStore(lake)
    quarantined = store.open("quarantine.retail").to_pyarrow_table().filter(
        pa.compute.equal(pa.compute.field("_batch_id"), "retail-nan")).to_pylist()
    assert [(q["InvoiceNo"], q["reason"], q["_stage"]) for q in quarantined] == [
        ("C990001", "returns_are_negative", "silver")]
    assert "990002" in store.open("silver.sales").to_pyarrow_table().column("invoice_id").to_pylist()
    assert_verified(lake)


def test_an_excluded_batch_is_not_built_until_included(lake_copy, tmp_path):
    late = tmp_path / "late.csv"
    late.write_text(f"{RETAIL_HEADER}\n990001,85123A,LATE,3,2011-01-29 10:00:00,2.55,17850,United Kingdom\n")
    cli(lake_copy, "ingest", "retail", str(late))
    batch = "retail-" + hashlib.sha256(late.read_bytes()).hexdigest()[:24]  # a batch is a file content
    assert batch in cli(lake_copy, "batches", "list", "retail").stdout
    refused = cli(lake_copy, "batches", "exclude", batch, "--reason", "", check=False)
    assert refused.returncode == 1 and "--reason" in refused.stderr
    cli(lake_copy, "batches", "exclude", batch, "--reason", "exported twice by mistake")
    cli(lake_copy, "build")
    sales = DeltaStore(lake_copy).open("silver.sales").to_pyarrow_table().column("invoice_id").to_pylist()
    assert "990001" not in sales
    [info] = [b for b in list_batches(Lake(Settings(lake=lake_copy)), "retail") if b.batch_id == batch]
    assert (info.excluded, info.consumed_by) == ("exported twice by mistake", ())
    assert_verified(lake_copy)
    cli(lake_copy, "batches", "include", batch, "--reason", "checked: it is new")
    cli(lake_copy, "build")
    sales = DeltaStore(lake_copy).open("silver.sales").to_pyarrow_table().column("invoice_id").to_pylist()
    assert "990001" in sales
    again = cli(lake_copy, "batches", "exclude", batch, "--reason", "too late", check=False)
    assert again.returncode == 1 and "already in silver.sales" in again.stderr
    decisions = DeltaStore(lake_copy).open("ops.batch_exclusions").to_pyarrow_table().sort_by("decided_at").to_pylist()
    assert [(d["batch_id"], d["action"]) for d in decisions] == [(batch, "exclude"), (batch, "include")]
    assert_verified(lake_copy)


# -- one command, one outcome ------------------------------------------------------------------------------

def test_a_corrupt_parquet_beside_a_good_csv_means_nothing_is_ingested(tmp_path, inputs):
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(inputs.retail, folder / "a-good.csv.gz")
    good = pa.table({"InvoiceNo": ["1"] * 5000, "StockCode": ["X"] * 5000, "Description": ["D"] * 5000,
                     "Quantity": ["1"] * 5000, "InvoiceDate": ["2011-01-01 10:00:00"] * 5000,
                     "UnitPrice": ["1.0"] * 5000, "CustomerID": ["1"] * 5000, "Country": ["UK"] * 5000})
    pq.write_table(good, folder / "b-corrupt.parquet", compression="none")
    data = bytearray((folder / "b-corrupt.parquet").read_bytes())
    # The data pages follow the 4-byte magic at the start; the footer (schema) at the end stays intact.
    data[4:min(400, len(data) // 3)] = b"\xff" * (min(400, len(data) // 3) - 4)
    (folder / "b-corrupt.parquet").write_bytes(bytes(data))
    lake = tmp_path / "lake"
    done = cli(lake, "ingest", "retail", str(folder), check=False)
    assert done.returncode == 1, done.stdout
    assert "b-corrupt.parquet" in done.stderr and "none of the 2 files" in done.stderr
    assert "Traceback" not in done.stderr
    store = DeltaStore(lake)
    assert not store.exists("bronze.retail")
    # No staged file is left behind either.
    assert not list(lake.rglob("*.parquet"))


def test_dry_run_counts_and_writes_nothing(tmp_path, inputs):
    lake = tmp_path / "lake"
    done = cli(lake, "ingest", "clickstream", "--dry-run", str(inputs.clickstream))
    assert "would be ingested" in done.stdout and "nothing written" in done.stdout
    assert "quarantined" in done.stdout
    assert not lake.exists()
    real = cli(lake, "ingest", "clickstream", str(inputs.clickstream))
    again = cli(lake, "ingest", "clickstream", "--dry-run", str(inputs.clickstream))
    assert "skipped (already ingested)" in again.stdout and "would be ingested" not in again.stdout
    # The dry run counted what the real ingest then did.
    count = lambda out: [line for line in out.splitlines() if "rows to bronze" in line][0]  # noqa: E731
    assert count(done.stdout).split(": ", 1)[1].replace("would be ingested", "ingested") == \
        count(real.stdout).split(": ", 1)[1]


# -- errors a person can act on -------------------------------------------------------------------------------

def _immutable(path: Path, on: bool) -> None:
    subprocess.run(["chattr", "+i" if on else "-i", str(path)], check=True)


@pytest.fixture
def chattr_works(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _immutable(probe, True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i is not available here (needed to make a folder unwritable for root)")
    _immutable(probe, False)


def test_an_unwritable_lake_is_one_line_naming_it(lake_copy, inputs, chattr_works):
    _immutable(lake_copy, True)
    try:
        for args in (("ingest", "clickstream", str(inputs.clickstream)), ("build",)):
            done = cli(lake_copy, *args, check=False)
            assert done.returncode == 1
            assert done.stderr.strip().splitlines() == [
                f"error: cannot write to the lake {lake_copy.resolve()}: permission denied (the lake folder must "
                f"be writable by this user; use --lake to choose another)"]
    finally:
        _immutable(lake_copy, False)
    log = lake_copy / "silver" / "events" / "_delta_log"
    late = lake_copy.parent / "late.csv"
    late.write_text("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                    "2019-10-30 10:00:00 UTC,view,1,2,a.b,x,1.5,7,s1\n")
    cli(lake_copy, "ingest", "clickstream", str(late))
    _immutable(log, True)
    try:
        done = cli(lake_copy, "build", check=False)
    finally:
        _immutable(log, False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"cannot write the table folder {(lake_copy / 'silver' / 'events').resolve()}" in done.stderr


def test_symlink_loops_are_skipped_or_named(tmp_path, inputs):
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(inputs.clickstream, folder / "events.csv.gz")
    (folder / "a.csv").symlink_to(folder / "b.csv")
    (folder / "b.csv").symlink_to(folder / "a.csv")
    (folder / "loop").symlink_to(folder)
    lake = tmp_path / "lake"
    globbed = cli(lake, "ingest", "clickstream", "--dry-run", str(folder / "*.csv*"))
    assert "events.csv.gz" in globbed.stdout and "Traceback" not in globbed.stderr
    walked = cli(lake, "ingest", "clickstream", "--dry-run", str(folder))
    assert walked.stdout.count(": would be ingested") == 1  # the file, once; the links are not files
    named = cli(lake, "ingest", "clickstream", str(folder / "a.csv"), check=False)
    assert named.returncode == 1
    assert named.stderr.strip() == (f"error: {folder / 'a.csv'}: a symbolic link that leads to no file "
                                    f"(dangling or in a loop)")


def test_time_travel_before_the_first_version_is_refused(built):
    first = DeltaStore(built).history("gold.daily_funnel")[-1].timestamp
    before = (first - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    done = cli(built, "sql", f"select count(*) from gold.daily_funnel TIMESTAMP AS OF '{before}'", check=False)
    assert done.returncode == 1
    assert "did not exist at" in done.stderr and "its first version (0) was written at" in done.stderr


def test_a_waiting_writer_says_what_it_waits_for_and_gives_up_on_time(lake_copy):
    from shoplake import locks

    with locks.writing(lake_copy, ["silver.events"]):
        done = cli(lake_copy, "--wait-timeout", "1", "build", "silver.events", check=False)
    assert done.returncode == 1
    assert "waiting for table silver.events, being written by" in done.stderr
    assert "gave up waiting for table silver.events after 1s" in done.stderr
    assert json.loads((lake_copy / "_locks" / "silver.events.holder").read_text())["pid"] > 0
