"""`shoplake serve-token`, `shoplake dashboard export` and `shoplake serve` as a user runs them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import httpx

from shoplake.serve.pages import PAGES

from .conftest import free_port


def shoplake(lake, *args: str) -> list[str]:
    return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(lake), *args]


def run(lake, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(shoplake(lake, *args), capture_output=True, text=True, check=False)


def test_serve_token_add_prints_the_secret_once_and_stores_only_its_hash(tmp_path):
    lake = tmp_path / "lake"
    added = run(lake, "serve-token", "add", "alice", "--role", "analyst")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[-1]
    stored = (lake / "_serve" / "tokens.toml").read_text()
    assert secret.startswith("slk_") and secret not in stored
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    listed = run(lake, "serve-token", "list")
    assert "alice" in listed.stdout and "analyst" in listed.stdout
    wrong = run(lake, "serve-token", "add", "bad name!", "--role", "analyst")
    assert wrong.returncode == 1 and "token name" in wrong.stderr and "Traceback" not in wrong.stderr
    assert run(lake, "serve-token", "remove", "alice").returncode == 0
    assert "alice" not in run(lake, "serve-token", "list").stdout


def test_dashboard_export_writes_one_self_contained_file(served, tmp_path):
    target = tmp_path / "out" / "dashboard.html"
    result = run(served.lake.settings.lake, "dashboard", "export", str(target))
    assert result.returncode == 0, result.stderr
    html = target.read_text()
    assert 'src="/static' not in html and "<script src=" not in html  # nothing to fetch
    assert html.count('class="page"') == len(PAGES)  # every page, each once
    bad = run(served.lake.settings.lake, "dashboard", "export", str(target), "--start", "yesterday")
    assert bad.returncode == 1 and "dates must look like" in bad.stderr


def test_serve_starts_and_serves_the_dashboard(served):
    port = free_port()
    server = subprocess.Popen(shoplake(served.lake.settings.lake, "serve", "--port", str(port)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert page.status_code == 200 and 'data-kpi="click-events"' in page.text
        api = httpx.post(f"http://127.0.0.1:{port}/api/v1/sql", json={"query": "SELECT 1 AS x"},
                         headers=served.headers("analyst"))
        assert api.json()["rows"] == [[1]]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"http://127.0.0.1:{port}/" in server.stdout.read()
