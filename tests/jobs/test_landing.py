"""Idempotency and the landing zone: a second `daily` with no new files writes no table version (only
its run history), a new file in a landing folder is ingested exactly once, and `--watch` runs on arrival."""

from __future__ import annotations

import shutil
from dataclasses import replace

import yaml

from shoplake import landing
from shoplake.jobs.definitions import load_jobs, shipped_text
from shoplake.jobs.runner import run_job, watch_job
from shoplake.lake import Lake


def _run(ws, job: str):
    """A run through the Python API, tasks inline (this process): fast, and the same task code."""
    lake = ws.lake()
    return run_job(lake, load_jobs(lake.settings, lake.catalog).get(job), isolation="inline")


def _daily_without_ml(ws) -> None:
    """The shipped `daily` minus its ML and maintenance tasks (shoplake.ml is another subsystem; maintenance
    rewrites files, which this file's tests count), as the user's file."""
    daily = yaml.safe_load(shipped_text())["jobs"]["daily"]
    daily["tasks"] = {name: t for name, t in daily["tasks"].items()
                      if not t["kind"].startswith("ml_") and t["kind"] != "maintain"}
    daily["tasks"]["verify"]["depends_on"] = ["build"]
    ws.write_jobs({"daily": daily})


def test_second_daily_with_no_new_files_writes_only_its_run_history(workspace):
    workspace.land_all()
    _daily_without_ml(workspace)
    assert _run(workspace, "daily").ok  # the first run: everything is new
    before = workspace.versions()
    history_commits = before["ops.job_runs"]

    second = workspace.cli("run", "daily")
    assert second.returncode == 0, second.stdout + second.stderr
    after = workspace.versions()
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"ops.job_runs"}
    # Exactly one commit per task attempt: 3 ingest tasks, build and verify, all succeeded at once.
    assert after["ops.job_runs"] - history_commits == 5
    run_id = workspace.attempts()[-1].run_id
    details = {a.task: a.detail for a in workspace.attempts(run_id)}
    assert details.pop("verify").startswith("verify: all ")
    assert details == {"ingest_products": "no new file, 1 already ingested",
                       "ingest_clickstream": "no new file, 1 already ingested",
                       "ingest_retail": "no new file, 1 already ingested",
                       "build": f"0 table(s) built, {len(workspace.lake().catalog.select(None))} unchanged"}
    assert {a.rows_written for a in workspace.attempts(run_id)} == {0}


def test_new_landing_file_is_ingested_once(workspace, jobs_env):
    workspace.land_all()
    workspace.job("t", {**jobs_env.ingest_tasks(), "build": jobs_env.task(
        "build", depends_on=list(jobs_env.ingest_tasks()))})
    assert _run(workspace, "t").ok
    store = workspace.store()
    events_before = store.row_count("silver.events")
    bronze_before = store.row_count("bronze.clickstream")

    new = workspace.land("clickstream", key="clickstream_2", name="day_11.csv.gz")
    assert _run(workspace, "t").ok
    run_id = workspace.attempts()[-1].run_id
    detail = {a.task: a.detail for a in workspace.attempts(run_id)}["ingest_clickstream"]
    assert detail.startswith("1 new file(s) ingested (1,500 rows") and detail.endswith("1 already ingested")
    assert store.row_count("bronze.clickstream") == bronze_before + 1500
    assert store.row_count("silver.events") > events_before
    versions = workspace.versions()

    # Again: nothing new. The same content under another name is recognised by its hash.
    shutil.copyfile(new, new.with_name("copy_of_day_11.csv.gz"))
    assert _run(workspace, "t").ok
    run_id = workspace.attempts()[-1].run_id
    detail = {a.task: a.detail for a in workspace.attempts(run_id)}["ingest_clickstream"]
    assert detail == "no new file, 3 already ingested"
    after = workspace.versions()
    assert {name for name in after if after[name] != versions[name]} == {"ops.job_runs"}
    ledger = store.open("ops.ledger").to_pyarrow_table().to_pylist()
    assert sum(r["table_name"] == "bronze.clickstream" for r in ledger) == 2  # one entry per distinct file


def test_known_files_are_skipped_without_reading_them(workspace, monkeypatch):
    workspace.land_all()
    lake = workspace.lake()
    location = str(workspace.landing / "retail")
    first = landing.ingest_landing(lake, "retail", location, run_id="r1")
    assert [r.status for r in first.results] == ["ingested"]

    def no_reading(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr("shoplake.sources.locations.content_digest", no_reading)
    again = landing.ingest_landing(lake, "retail", location, run_id="r2")
    assert (len(again.scan.known), again.results) == (1, [])
    # A file rewritten in place (new size or time) is looked at again.
    (workspace.landing / "retail" / "retail.csv.gz").touch()
    assert len(landing.scan(lake, "retail", location).new) == 1


def test_missing_or_hidden_landing_files_are_nothing_to_do(workspace):
    lake = workspace.lake()
    missing = landing.scan(lake, "products", str(workspace.landing / "products"))
    assert not missing.exists and missing.new == []
    folder = workspace.landing / "products"
    folder.mkdir(parents=True)
    (folder / ".uploading.csv").write_text("partial")
    (folder / "_tmp").mkdir()
    (folder / "_tmp" / "x.csv").write_text("partial")
    (folder / "notes.txt").write_text("not data")
    assert landing.scan(lake, "products", str(folder)).new == []


def test_watch_runs_when_files_arrive(workspace, jobs_env):
    workspace.land("products")
    workspace.job("w", {"ingest_products": jobs_env.task("ingest", source="products", landing="products"),
                        "ingest_retail": jobs_env.task("ingest", source="retail", landing="retail"),
                        "build": jobs_env.task("build", select="+gold.product_sales",
                                               depends_on=["ingest_products", "ingest_retail"])})
    lake = workspace.lake()
    job = load_jobs(lake.settings, lake.catalog).get("w")
    polls = []

    def on_poll(poll) -> None:
        polls.append((poll.number, poll.new_files, poll.ran.status if poll.ran else None))
        if poll.number == 2:
            workspace.land("retail")  # arrives while the watcher sleeps

    runs = watch_job(lake, job, poll_seconds=0, max_polls=4, on_poll=on_poll, isolation="inline")
    assert polls == [(1, 1, "succeeded"), (2, 0, None), (3, 1, "succeeded"), (4, 0, None)]
    assert [r.trigger for r in runs] == ["watch", "watch"]
    assert workspace.store().row_count("gold.product_sales") > 0
    assert {a.trigger for a in workspace.attempts()} == {"watch"}


def test_watch_from_the_command_line(workspace, jobs_env):
    workspace.land("products")
    workspace.job("w", {"ingest": jobs_env.task("ingest", source="products", landing="products")})
    result = workspace.cli("run", "w", "--watch", "--poll-interval", "0.1", "--max-polls", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "poll 1: 1 new file(s), run" in result.stdout and "succeeded" in result.stdout
    assert "poll 2: 0 new file(s)" in result.stdout


def test_s3_landing_prefix(workspace, monkeypatch, jobs_env):
    """A landing root on S3 (a local moto server): new objects are ingested once, a missing prefix is no work."""
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="shop")
        client.upload_file(str(workspace.files["retail"]), "shop", "landing/retail/2010-12.csv.gz")
        client.put_object(Bucket="shop", Key="landing/retail/_incoming/partial.csv", Body=b"half a file")
        workspace.job("s3", {"ingest_retail": jobs_env.task("ingest", source="retail", landing="retail"),
                             "ingest_products": jobs_env.task("ingest", source="products", landing="products")})
        lake = Lake(replace(workspace.settings(), landing="s3://shop/landing", s3_endpoint=endpoint))
        job = load_jobs(lake.settings, lake.catalog).get("s3")
        first = run_job(lake, job, isolation="inline")
        assert first.ok, first.summary_lines()
        assert first.tasks["ingest_retail"].detail.startswith("1 new file(s) ingested (")
        assert first.tasks["ingest_products"].detail == "nothing to do: no landing location s3://shop/landing/products/"
        rows = lake.store.row_count("bronze.retail")
        again = run_job(lake, job, isolation="inline")
        assert again.tasks["ingest_retail"].detail == "no new file, 1 already ingested"
        assert lake.store.row_count("bronze.retail") == rows
    finally:
        server.stop()
