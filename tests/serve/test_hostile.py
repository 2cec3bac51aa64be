"""The hostile-query corpus against the SQL API: refused for an analyst, nothing written anywhere; and the
sandboxed session alone (allow-list switched off) still reads not one byte of what the role may not see."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import shoplake.serve.worker
from shoplake.layers.ops import QUERY_LOG
from shoplake.query import run_query
from shoplake.serve.security import ROLE_LAYERS, load_tokens, tokens_file
from shoplake.serve.worker import QueryJob, execute

from .hostile import CORPUS, TOKEN_FILE_PROBES

SQL = "/api/v1/sql"
# Aimed at data an analyst may not read: these must fail even with the allow-list switched off.
FORBIDDEN_TARGETS = ("{lake}", "bronze.", "silver.", "quarantine.", "tokens.toml", "mlflow", "bronze\"", "BRONZE",
                     "bronze .", "/etc/passwd", "~/")


@pytest.fixture(scope="module")
def escape(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("escape") / "escaped.out"


def _fill(sql: str, lake: Path, escape: Path) -> str:
    return sql.replace("{lake}", str(lake)).replace("{escape}", str(escape))


def _listing(lake: Path) -> dict[str, tuple[int, int]]:
    """Every file of the lake with size and mtime, except the query log (which records the refusals) and
    its writer lock (taken for each append)."""
    log_dir = lake / "ops" / "query_log"
    log_lock = {lake / "_locks" / "ops.query_log.lock", lake / "_locks" / "ops.query_log.holder"}
    return {str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")
            if p.is_file() and log_dir not in p.parents and p not in log_lock}


def _secrets_in(text: bytes, served) -> list[str]:
    """Bytes that only a read of the tokens file, the MLflow store or /etc/passwd could produce."""
    markers = [t.sha256 for t in load_tokens(tokens_file(served.lake.settings)).values()]
    markers += ["SQLite format 3", "root:x:0:0"]
    return [m for m in markers if m.encode() in text]


def test_the_corpus_has_at_least_80_queries():
    assert len(CORPUS) >= 80, len(CORPUS)


@pytest.mark.parametrize("key", CORPUS)
def test_a_hostile_query_is_refused_for_an_analyst_and_writes_nothing(client, served, escape, key):
    lake = served.lake.settings.lake
    before = _listing(lake)
    response = client.post(SQL, json={"query": _fill(CORPUS[key], lake, escape)}, headers=served.headers("analyst"))
    assert response.status_code in (400, 403), response.text
    assert response.json()["status"] in ("refused", "forbidden")
    assert _secrets_in(response.content, served) == []
    assert not escape.exists()
    assert _listing(lake) == before


def test_every_refusal_is_logged_with_the_status_sent(client, served, escape):
    lake = served.lake.settings.lake
    sent = {}
    for key in list(CORPUS)[::7]:
        response = client.post(SQL, json={"query": _fill(CORPUS[key], lake, escape)},
                               headers=served.headers("analyst"))
        sent[response.headers["x-query-id"]] = response.json()["status"]
    client.app.state.query_log.flush()
    logged = run_query(served.lake, f"SELECT query_id, status FROM {QUERY_LOG.name}").to_pylist()
    assert {r["query_id"]: r["status"] for r in logged if r["query_id"] in sent} == sent


@pytest.mark.parametrize("key", [k for k, sql in CORPUS.items()
                                 if any(t in sql for t in FORBIDDEN_TARGETS) and "1000000000000" not in sql])
def test_without_the_allow_list_an_analyst_still_reads_no_byte_of_forbidden_data(served, escape, monkeypatch, key):
    monkeypatch.setattr(shoplake.serve.worker, "check_allowed", lambda statement: None)
    lake = served.lake.settings.lake
    before = _listing(lake)
    job = QueryJob(_fill(CORPUS[key], lake, escape), ROLE_LAYERS["analyst"], limit=100, row_cap=100,
                   byte_cap=1_000_000)
    answer = execute(served.lake, job)
    # A probe that tries to write may "succeed" as a no-op (DuckDB's logging accepts a path it then cannot
    # open); the listing below proves nothing was written. Every read is refused by the session.
    if "enable_logging" not in job.query:
        assert answer.status in ("refused", "forbidden"), (answer.status, answer.body[:300])
    assert answer.rows == 0 and _secrets_in(answer.body, served) == []
    assert not escape.exists()
    assert _listing(lake) == before


@pytest.mark.parametrize("key", TOKEN_FILE_PROBES)
def test_an_engineer_cannot_read_the_tokens_file(client, served, escape, monkeypatch, key):
    sql = _fill(TOKEN_FILE_PROBES[key], served.lake.settings.lake, escape)
    response = client.post(SQL, json={"query": sql}, headers=served.headers("engineer"))
    assert response.status_code == 400, response.text
    monkeypatch.setattr(shoplake.serve.worker, "check_allowed", lambda statement: None)
    answer = execute(served.lake, QueryJob(sql, ROLE_LAYERS["engineer"], limit=100, row_cap=100, byte_cap=10**6))
    assert answer.status != "ok" and _secrets_in(answer.body, served) == []


@pytest.mark.parametrize("table", ["bronze.clickstream", "silver.events", "quarantine.clickstream", "gold.daily_funnel",
                                   "ops.ledger"])
def test_an_engineer_reads_every_layer(client, served, table):
    response = client.post(SQL, json={"query": f"SELECT count(*) AS n FROM {table}"},
                           headers=served.headers("engineer"))
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [[served.lake.store.row_count(table)]]


def test_the_tokens_file_holds_only_hashes(served):
    text = tokens_file(served.lake.settings).read_text()
    for secret in served.secrets.values():
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() in text
