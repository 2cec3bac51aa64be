"""Web hardening: Host check, security headers, /docs offline, date ranges that give a page, remote listening."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from shoplake.serve.app import _STATIC


def test_a_foreign_host_header_is_refused(client):
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/v1/health", headers={"Host": "evil.example:8000"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8000"}).status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/api/v1/health", "/docs", "/static/dashboard.js"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert ("'unsafe-inline'" in csp.split("script-src")[1].split(";")[0]) == (path == "/docs")
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_api_docs_load_nothing_from_another_host(client):
    html = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith("/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert "SwaggerUIBundle" in client.get("/static-offline-docs/swagger-ui-bundle.js").text


def test_charts_have_no_send_to_cloud_button():
    script = (_STATIC / "dashboard.js").read_text()
    assert "showSendToCloud: false" in script and "showEditInChartStudio: false" in script


@pytest.mark.parametrize(("query", "message"), [
    ("?start=0001-01-01&end=9999-12-31", "dates must lie between 1900-01-01 and 2199-12-31"),
    ("?start=yesterday", "dates must look like 2019-10-31"),
    ("?end=2019-13-45", "dates must look like 2019-10-31"),
])
@pytest.mark.parametrize("page", ["/", "/funnel", "/sales"])
def test_an_invalid_date_range_gives_the_page_with_a_message(client, page, query, message):
    response = client.get(page + query)
    assert response.status_code == 200
    assert message in response.text and 'id="notice"' in response.text


def test_serve_on_a_remote_interface_needs_allow_remote(tmp_path):
    command = [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(tmp_path / "lake"),
               "serve", "--host", "0.0.0.0", "--port", "1"]
    refused = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 1 and "--allow-remote" in refused.stderr and "Traceback" not in refused.stderr
