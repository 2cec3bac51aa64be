"""Remote inputs: `s3://` against a local moto server and `http://` against a local HTTP server.

Both servers listen on 127.0.0.1 on a free port, are started by the fixtures and stopped in teardown.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import threading
import uuid
from pathlib import Path

import pytest

from shoplake.build import build_tables
from shoplake.config import load_settings
from shoplake.errors import SourceFormatError
from shoplake.ingest import ingest_files
from shoplake.lake import Lake, new_run_id

COSMETICS = "rees46_cosmetics_42variant"
MONTHS = ("data_2022_oct.csv.gz", "data_2022_nov.csv.gz")
LOCAL = "127.0.0.1"


def _events_csv(header: str, day: str, n: int) -> str:
    rows = [f"{day} 10:00:{i:02d} UTC,view,{100 + i},2053013555631882655,electronics.audio,sony,"
            f"{i + 1}.5,{7 + i},s-{i}" for i in range(n)]
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "SHOPLAKE_S3_ENDPOINT",
                 "SHOPLAKE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOCAL, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(e2e, s3_endpoint, aws_env):
    """A fresh bucket holding two real cosmetics files under events/2022/ plus a non-data object."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"shop-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    for month in MONTHS:
        client.upload_file(str(e2e.real_file(COSMETICS, month)), name, f"events/2022/{month}")
    client.put_object(Bucket=name, Key="events/README.txt", Body=b"not data")
    return client, name


def _lake(tmp_path: Path, **overrides) -> Lake:
    return Lake(load_settings(env={}, lake=tmp_path / "lake", **overrides))


def test_s3_prefix_ingests_every_data_object(e2e, bucket, s3_endpoint, tmp_path):
    _, name = bucket
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    results = ingest_files(lake, "clickstream", [f"s3://{name}/events/"], run_id=new_run_id())
    assert [(r.uri, r.status, r.rows_bronze) for r in results] == [
        (f"s3://{name}/events/2022/data_2022_nov.csv.gz", "ingested", 999),
        (f"s3://{name}/events/2022/data_2022_oct.csv.gz", "ingested", 999)]
    by_file = {r["f"]: r["n"] for r in e2e.rows(lake, "SELECT _source_file AS f, count(*) AS n "
                                                      "FROM bronze.clickstream GROUP BY 1")}
    assert by_file == {f"s3://{name}/events/2022/{m}": 999 for m in MONTHS}


def test_s3_same_bytes_as_local_file(e2e, bucket, s3_endpoint, tmp_path):
    """The spooled object is the stored .gz, not a decompressed copy: same batch id as the local file."""
    _, name = bucket
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    local = ingest_files(lake, "clickstream", [str(e2e.real_file(COSMETICS, MONTHS[0]))], run_id=new_run_id())
    remote = ingest_files(lake, "clickstream", [f"s3://{name}/events/2022/{MONTHS[0]}"], run_id=new_run_id())
    assert remote[0].batch_id == local[0].batch_id
    assert remote[0].status == "skipped"


def test_s3_glob_then_again_is_skipped(e2e, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    client.put_object(Bucket=name, Key="events/2022/extra.csv",
                      Body=_events_csv(e2e.CLICKSTREAM_HEADER, "2022-10-02", 3).encode())
    pattern = f"s3://{name}/events/2022/*.csv.gz"
    first = ingest_files(lake, "clickstream", [pattern], run_id=new_run_id())
    assert sorted(r.uri.rsplit("/", 1)[1] for r in first) == sorted(MONTHS)  # extra.csv does not match
    version = lake.store.version("bronze.clickstream")
    again = ingest_files(lake, "clickstream", [pattern], run_id=new_run_id())
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert lake.store.version("bronze.clickstream") == version
    results = build_tables(lake, run_id=new_run_id())
    assert not [r for r in results if r.status == "failed"]
    assert e2e.scalar(lake, "SELECT count(*) FROM bronze.clickstream") == 2 * 999


def test_s3_plain_csv_object(e2e, bucket, s3_endpoint, tmp_path):
    client, name = bucket
    client.put_object(Bucket=name, Key="plain/day.csv",
                      Body=_events_csv(e2e.CLICKSTREAM_HEADER, "2022-10-03", 4).encode())
    client.put_object(Bucket=name, Key="plain/day2.csv.gz",
                      Body=gzip.compress(_events_csv(e2e.CLICKSTREAM_HEADER, "2022-10-04", 2).encode()))
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    results = ingest_files(lake, "clickstream", [f"s3://{name}/plain/"], run_id=new_run_id())
    assert [(r.status, r.rows_bronze) for r in results] == [("ingested", 4), ("ingested", 2)]


@pytest.mark.parametrize("key", ["events/2022/missing.csv.gz", "nothing-here/", "events/2022/*.parquet"])
def test_s3_missing_object_is_one_line_error(bucket, s3_endpoint, tmp_path, key):
    _, name = bucket
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    with pytest.raises(SourceFormatError, match=r"^s3://") as caught:
        ingest_files(lake, "clickstream", [f"s3://{name}/{key}"], run_id=new_run_id())
    message = str(caught.value)
    assert "\n" not in message
    assert f"s3://{name}/" in message


def test_s3_missing_bucket_is_one_line_error(s3_endpoint, aws_env, tmp_path):
    lake = _lake(tmp_path, s3_endpoint=s3_endpoint)
    with pytest.raises(SourceFormatError, match=r"s3://no-such-bucket/x\.csv") as caught:
        ingest_files(lake, "clickstream", ["s3://no-such-bucket/x.csv"], run_id=new_run_id())
    assert "\n" not in str(caught.value)


def test_s3_through_the_cli(e2e, bucket, s3_endpoint, tmp_path):
    """The console script reads the endpoint from SHOPLAKE_S3_ENDPOINT and the AWS variables."""
    _, name = bucket
    lake = tmp_path / "lake"
    result = e2e.cli_ok("ingest", "clickstream", f"s3://{name}/events/2022/*.csv.gz", lake=lake,
                        env={"SHOPLAKE_S3_ENDPOINT": s3_endpoint})
    assert f"s3://{name}/events/2022/data_2022_oct.csv.gz: ingested, 999 rows" in result.stdout
    missing = e2e.run_cli("ingest", "clickstream", f"s3://{name}/events/2022/gone.csv.gz", lake=lake,
                          env={"SHOPLAKE_S3_ENDPOINT": s3_endpoint})
    e2e.assert_one_line_error(missing, names=f"s3://{name}/events/2022/gone.csv.gz")


# -- http(s) -------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture
def http_root(e2e, tmp_path):
    """A temp folder served over HTTP on 127.0.0.1 (free port); yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((LOCAL, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://{LOCAL}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_files_are_ingested(e2e, http_root, tmp_path):
    folder, base = http_root
    (folder / MONTHS[0]).write_bytes(e2e.real_file(COSMETICS, MONTHS[0]).read_bytes())
    (folder / "day.csv").write_text(_events_csv(e2e.CLICKSTREAM_HEADER, "2022-10-05", 5))
    lake = _lake(tmp_path)
    urls = [f"{base}/{MONTHS[0]}", f"{base}/day.csv"]
    results = ingest_files(lake, "clickstream", urls, run_id=new_run_id())
    assert [(r.uri, r.status, r.rows_bronze) for r in results] == [
        (f"{base}/{MONTHS[0]}", "ingested", 999), (f"{base}/day.csv", "ingested", 5)]
    sql = f"SELECT count(*) FROM bronze.clickstream WHERE _source_file = '{base}/day.csv'"
    assert e2e.scalar(lake, sql) == 5


def test_http_404_is_one_line_error(http_root, tmp_path):
    _, base = http_root
    lake = _lake(tmp_path)
    with pytest.raises(SourceFormatError, match=r"HTTP 404") as caught:
        ingest_files(lake, "clickstream", [f"{base}/missing.csv.gz"], run_id=new_run_id())
    assert str(caught.value).startswith(f"{base}/missing.csv.gz: ")
    assert "\n" not in str(caught.value)


def test_http_bad_header_is_one_line_error(e2e, http_root, tmp_path):
    folder, base = http_root
    (folder / "retail.csv").write_text("InvoiceNo,StockCode\nA,1\n")
    lake = _lake(tmp_path)
    with pytest.raises(SourceFormatError, match="is not a clickstream header") as caught:
        ingest_files(lake, "clickstream", [f"{base}/retail.csv"], run_id=new_run_id())
    assert str(caught.value).startswith(f"{base}/retail.csv: ")
    assert not lake.store.exists("bronze.clickstream")


def test_http_through_the_cli(e2e, http_root, tmp_path):
    folder, base = http_root
    (folder / "day.csv").write_text(_events_csv(e2e.CLICKSTREAM_HEADER, "2022-10-06", 6))
    lake = tmp_path / "lake"
    result = e2e.cli_ok("ingest", "clickstream", f"{base}/day.csv", lake=lake)
    assert f"{base}/day.csv: ingested, 6 rows to bronze.clickstream" in result.stdout
    missing = e2e.run_cli("ingest", "clickstream", f"{base}/nope.csv", lake=lake)
    line = e2e.assert_one_line_error(missing, names=f"{base}/nope.csv")
    assert "404" in line
