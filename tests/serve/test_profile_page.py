"""The dashboard's Profile view (`/profile/<table>`): the same figures as `shoplake profile`."""

from __future__ import annotations

import html
import re

from shoplake.profile import profile_table


def _cells(page: str, table_id: str) -> list[list[str]]:
    body = page.split(f'id="table-{table_id}"', 1)[1].split("</table>", 1)[0]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_profile_page_shows_every_column_with_the_cli_figures(client, served):
    response = client.get("/profile/silver.events")
    assert response.status_code == 200
    expected = profile_table(served.lake, "silver.events")
    assert f"{expected.rows:,} rows" in response.text
    rows = [r for r in _cells(response.text, "profile-summary") if r]
    assert [r[0] for r in rows] == [c.name for c in expected.columns]
    brand = next(r for r in rows if r[0] == "brand")
    column = expected.column("brand")
    assert brand[2] == f"{column.null_share:.1%}" and brand[4] == f"{column.distinct:,}"
    assert 'id="chart-profile-price-histogram"' in response.text


def test_one_column_and_refusals(client):
    one = client.get("/profile/silver.events?column=price")
    assert one.status_code == 200
    assert [r[0] for r in _cells(one.text, "profile-summary") if r] == ["price"]
    assert client.get("/profile/gold.nope").status_code == 404
    refused = client.get("/profile/silver.events?column=nope")
    assert refused.status_code == 400 and "has no column 'nope'" in html.unescape(refused.text)


def test_every_table_on_the_data_health_page_links_to_its_profile(client, served):
    health = client.get("/health").text
    versions = health.split('id="table-health-versions"', 1)[1].split("</table>", 1)[0]
    linked = re.findall(r'href="/profile/([a-z_]+\.[a-z_0-9]+)"', versions)
    assert linked == [spec.name for spec in served.lake.catalog.ordered()]
    assert client.get(f"/profile/{linked[-1]}").status_code == 200


def test_refusals_are_html_pages(client):
    for path, status in (("/profile/gold.nope", 404), ("/profile/silver.events?column=nope", 400)):
        response = client.get(path)
        assert response.status_code == status and response.headers["content-type"].startswith("text/html")
        assert "<html" in response.text and '"detail"' not in response.text
