"""Web hardening: Host check, security headers, /docs offline, date ranges that give a page, remote listening."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest

from shoplake.serve.app import _STATIC, PLOTLY_JS


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
    ("?start=2030-01-01", "the start 2030-01-01 is after the last date with data on this page"),
])
@pytest.mark.parametrize("page", ["/", "/funnel", "/sales"])
def test_an_invalid_date_gives_a_friendly_html_error_page(client, page, query, message):
    response = client.get(page + query)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert message in response.text and 'id="notice"' in response.text and "default period" in response.text


def test_plotly_is_served_once_under_a_content_hashed_name_cached_for_a_year(client):
    html = client.get("/").text
    scripts = re.findall(r'<script src="(/static/plotly[^"]*)"', html)
    assert len(scripts) == 1
    digest = hashlib.sha256(PLOTLY_JS.read_bytes()).hexdigest()[:12]
    assert scripts[0] == f"/static/plotly-{digest}.min.js"
    response = client.get(scripts[0])
    assert response.status_code == 200 and response.content == PLOTLY_JS.read_bytes()
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get("/static/plotly.min.js").status_code == 404


def test_the_favicon_is_served(client):
    for path in ("/favicon.ico", "/static/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200 and response.text.startswith("<svg")
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/").text


def test_serve_on_a_remote_interface_needs_allow_remote(tmp_path):
    command = [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(tmp_path / "lake"),
               "serve", "--host", "0.0.0.0", "--port", "1"]
    refused = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert refused.returncode == 1 and "--allow-remote" in refused.stderr and "Traceback" not in refused.stderr


def test_a_segment_and_a_country_open_their_rows(client, served):
    from shoplake.query import run_query

    segment = run_query(served.lake, "SELECT rfm_segment AS s, count(*) AS n FROM gold.customer_rfm GROUP BY 1 "
                                     "ORDER BY 2 DESC, 1 LIMIT 1").to_pylist()[0]
    page = client.get("/rows", params={"segment": f"rfm:{segment['s']}"})
    assert page.status_code == 200
    body = page.text.split('id="table-rows-segment"', 1)[1].split("</table>", 1)[0]
    assert body.count("<tr") - 1 == min(segment["n"], 500)  # the header row, then one per customer
    customers = client.get("/customers").text
    assert f'href="/rows?segment=rfm%3A{segment["s"].replace(" ", "+")}"' in customers.replace("&#39;", "'")
    country = client.get("/rows", params={"country": "United Kingdom", "start": "1900-01-01"})
    assert country.status_code == 200 and 'id="table-rows-country"' in country.text
    assert client.get("/rows").status_code == 400


def test_a_funnel_breakdown_row_filters_the_page_by_its_category(client):
    import html as markup

    links = re.findall(r'href="(/funnel\?category=[^"]+)"', client.get("/funnel").text)
    assert links
    narrowed = client.get(markup.unescape(links[0]))
    assert narrowed.status_code == 200 and "category_l1 = " in narrowed.text
