"""The PostgreSQL endpoint with real clients: psql, psycopg 3, SQLAlchemy and pandas, the JDBC driver.

Each answers the same rows as `shoplake sql`; roles, the allow-list and the hostile-query corpus hold over
the wire exactly as over HTTP (the same query service serves both).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors

from shoplake.layers.ops import QUERY_LOG
from shoplake.query import run_query
from shoplake.serve.pg import PgServer, tls_context
from shoplake.serve.security import remove_token, tokens_file
from shoplake.serve.service import QueryService

from .conftest import free_port
from .hostile import CORPUS
from .test_hostile import _fill, _listing, _secrets_in

JDBC_JAR = Path("/usr/share/java/postgresql.jar")
JAVA_SOURCE = Path(__file__).with_name("jdbc") / "ShoplakeJdbc.java"
FUNNEL = "SELECT event_date, count_views, revenue FROM gold.daily_funnel ORDER BY event_date"
# Endless for practical purposes (hashes 10^12 numbers in constant memory): stopped only by a cancel or deadline.
RUNAWAY = "select sum(hash(range)) from range(1000000000000)"


@pytest.fixture(scope="module")
def pg(served):
    service = QueryService(served.lake.settings, query_log_interval=0.2)
    service.start()
    server = PgServer(service, port=0)
    server.start()
    yield server
    server.stop()
    service.close()


def _dsn(pg, served, role: str, password: str | None = None) -> str:
    secret = served.secrets[role] if password is None else password
    return f"host=127.0.0.1 port={pg.port} dbname=shoplake user={role}-token password={secret}"


def _expected(served, sql: str) -> list[tuple]:
    return [tuple(row.values()) for row in run_query(served.lake, sql).to_pylist()]


def _psql(pg, served, role: str, *commands: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": served.secrets[role], "PGCONNECT_TIMEOUT": "10"}
    args = ["psql", f"host=127.0.0.1 port={pg.port} dbname=shoplake user={role}-token", "-X", "-A", "-F", "|",
            "-v", "ON_ERROR_STOP=1"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


# -- psql -------------------------------------------------------------------------------------------------------
def test_psql_connects_lists_describes_and_queries(pg, served):
    done = _psql(pg, served, "analyst", r"\dt gold.*", r"\d gold.daily_funnel", FUNNEL + " LIMIT 3")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "gold|daily_funnel|table|shoplake" in out
    assert "event_date|date|" in out and "count_views|bigint|" in out and "revenue|double precision|" in out
    rows = _expected(served, FUNNEL + " LIMIT 3")
    for event_date, views, revenue in rows:
        assert f"{event_date}|{views}|{revenue!r}" in out


def test_psql_shows_an_analyst_no_table_of_bronze_silver_or_quarantine(pg, served):
    done = _psql(pg, served, "analyst", r"\dt *.*", r"\dn")
    assert done.returncode == 0, done.stderr
    listed = {line.split("|")[0] for line in done.stdout.splitlines() if "|" in line}
    assert {"gold", "ops"} <= listed
    assert not listed & {"bronze", "silver", "quarantine"}
    engineer = _psql(pg, served, "engineer", r"\dt silver.*")
    assert "silver|events|table" in engineer.stdout


# -- psycopg 3 ----------------------------------------------------------------------------------------------------
def test_psycopg_binds_parameters_and_reads_through_a_server_side_cursor(pg, served):
    sql = ("SELECT event_date, count_views FROM gold.daily_funnel WHERE event_date >= %s AND count_views > %s "
           "ORDER BY 1 LIMIT %s")
    first_date = _expected(served, "SELECT min(event_date) FROM gold.daily_funnel")[0][0]
    with psycopg.connect(_dsn(pg, served, "analyst")) as conn:
        with conn.cursor() as cur:
            cur.execute(sql, (first_date, 10, 5))
            assert cur.fetchall() == _expected(served, f"SELECT event_date, count_views FROM gold.daily_funnel "
                                                       f"WHERE event_date >= DATE '{first_date}' AND count_views > 10 "
                                                       f"ORDER BY 1 LIMIT 5")
        with conn.cursor(name="funnel") as cur:  # DECLARE ... CURSOR, then FETCH in batches of 4
            cur.itersize = 4
            cur.execute(FUNNEL + " LIMIT %s", (10,))
            assert list(cur) == _expected(served, FUNNEL + " LIMIT 10")


def test_psycopg_sees_catalog_and_typed_results(pg, served):
    with psycopg.connect(_dsn(pg, served, "analyst")) as conn:
        version = conn.execute("SELECT version()").fetchone()[0]
        assert version.startswith("PostgreSQL") and "shoplake" in version
        assert conn.execute("SELECT current_schema()").fetchone() == ("gold",)
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("15")
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
        assert ("gold", "daily_funnel") in tables
        assert {schema for schema, _ in tables} == {"gold", "ops"}
        columns = conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = 'gold' AND table_name = 'daily_funnel' "
                               "ORDER BY ordinal_position").fetchall()
        assert columns[:2] == [("event_date", "date"), ("count_views", "bigint")]


def test_a_wrong_password_or_unknown_user_is_refused_and_logged(pg, served):
    for dsn in (_dsn(pg, served, "analyst", password="slk_wrong"),
                f"host=127.0.0.1 port={pg.port} dbname=shoplake user=nobody password=x"):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(dsn, connect_timeout=10)
    pg.service.query_log.flush()
    logged = run_query(served.lake, f"SELECT status, error FROM {QUERY_LOG.name} WHERE query LIKE "
                                    f"'(PostgreSQL login as %'").to_pylist()
    assert len(logged) >= 2 and {r["status"] for r in logged} == {"unauthorized"}


def test_a_cancel_request_stops_a_running_query(served):
    # A deadline well past the cancel, so the query can only end by the cancel.
    service = QueryService(replace(served.lake.settings, serve_query_timeout=30), query_log_interval=0.2)
    service.start()
    server = PgServer(service, port=0)
    server.start()
    try:
        with psycopg.connect(_dsn(server, served, "engineer")) as conn:
            # cancel_safe: the blocking cancel() would hold the GIL that this in-process server needs.
            threading.Timer(1.0, conn.cancel_safe).start()
            started = time.monotonic()
            with pytest.raises(errors.QueryCanceled, match="user request"):
                conn.execute(RUNAWAY)
            assert time.monotonic() - started < 10
            conn.rollback()
            assert conn.execute("SELECT 1 AS one").fetchone() == (1,)  # the session goes on
        service.query_log.flush()
        logged = run_query(served.lake, f"SELECT status FROM {QUERY_LOG.name} WHERE query = '{RUNAWAY}'").to_pylist()
        assert {"status": "cancelled"} in logged
    finally:
        server.stop()
        service.close()


# -- SQLAlchemy and pandas -----------------------------------------------------------------------------------------
def test_sqlalchemy_reflects_the_role_tables_and_pandas_reads_them(pg, served):
    secret = served.secrets["analyst"]
    engine = sa.create_engine(f"postgresql+psycopg://analyst-token:{secret}@127.0.0.1:{pg.port}/shoplake")
    try:
        inspector = sa.inspect(engine)
        assert {"gold", "ops"} <= set(inspector.get_schema_names())
        assert not {"bronze", "silver", "quarantine"} & set(inspector.get_schema_names())
        assert "daily_funnel" in inspector.get_table_names(schema="gold")
        columns = inspector.get_columns("daily_funnel", schema="gold")
        spec = served.lake.catalog.get("gold.daily_funnel")
        assert [c["name"] for c in columns] == [c.name for c in spec.columns]
        assert isinstance(columns[0]["type"], sa.Date) and isinstance(columns[1]["type"], sa.BigInteger)
        frame = pd.read_sql(FUNNEL, engine)
        assert list(frame.itertuples(index=False, name=None)) == _expected(served, FUNNEL)
        counted = pd.read_sql(sa.text("SELECT count(*) AS n FROM gold.daily_funnel WHERE count_views > :v"),
                              engine, params={"v": 0})
        assert counted["n"].tolist() == [_expected(served, "SELECT count(*) FROM gold.daily_funnel "
                                                           "WHERE count_views > 0")[0][0]]
    finally:
        engine.dispose()


# -- JDBC -------------------------------------------------------------------------------------------------------------
def test_the_jdbc_driver_lists_tables_columns_and_runs_a_prepared_statement(pg, served, tmp_path):
    assert shutil.which("javac") and JDBC_JAR.is_file(), "make test installs Java and libpostgresql-jdbc-java"
    subprocess.run(["javac", "-d", str(tmp_path), str(JAVA_SOURCE)], check=True, timeout=120)
    sql = "SELECT event_date, count_views FROM gold.daily_funnel WHERE event_date >= CAST(? AS DATE) ORDER BY 1"
    first_date = _expected(served, "SELECT min(event_date) FROM gold.daily_funnel")[0][0]
    url = f"jdbc:postgresql://127.0.0.1:{pg.port}/shoplake"
    done = subprocess.run(["java", "-cp", f"{tmp_path}:{JDBC_JAR}", "ShoplakeJdbc", url, "analyst-token",
                           served.secrets["analyst"], sql, str(first_date)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    tables = {(line[1], line[2]) for line in lines if line[0] == "TABLE"}
    assert ("gold", "daily_funnel") in tables
    assert {schema for schema, _ in tables} == {"gold"}
    columns = [(line[1], line[2]) for line in lines if line[0] == "COLUMN"]
    assert columns[:2] == [("event_date", "date"), ("count_views", "int8")]
    rows = [tuple(line[1:]) for line in lines if line[0] == "ROW"]
    expected = _expected(served, f"SELECT event_date, count_views FROM gold.daily_funnel "
                                 f"WHERE event_date >= DATE '{first_date}' ORDER BY 1")
    assert rows == [(str(d), str(v)) for d, v in expected]


# -- roles and the hostile corpus over the wire ------------------------------------------------------------------------
@pytest.mark.parametrize("sql", ["SELECT count(*) FROM silver.events", "SELECT * FROM bronze.clickstream LIMIT 1",
                                 "SELECT count(*) FROM quarantine.clickstream"])
def test_an_analyst_cannot_read_bronze_silver_or_quarantine_over_the_wire(pg, served, sql):
    with psycopg.connect(_dsn(pg, served, "analyst")) as conn:
        with pytest.raises(errors.InsufficientPrivilege, match="denied"):
            conn.execute(sql)


def test_an_analyst_catalog_shows_no_bronze_silver_or_quarantine(pg, served):
    with psycopg.connect(_dsn(pg, served, "analyst")) as conn:
        namespaces = {r[0] for r in conn.execute("SELECT nspname FROM pg_catalog.pg_namespace")}
        relations = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                                 "ON n.oid = c.relnamespace").fetchall()
        columns = conn.execute("SELECT DISTINCT table_schema FROM information_schema.columns").fetchall()
    forbidden = {"bronze", "silver", "quarantine"}
    assert {"gold", "ops"} <= namespaces and not namespaces & forbidden
    assert relations and not {schema for schema, _ in relations} & forbidden
    assert not {schema for (schema,) in columns} & forbidden


@pytest.fixture(scope="module")
def escape(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("escape-pg") / "escaped.out"


def test_the_hostile_corpus_is_refused_over_the_wire(pg, served, escape):
    lake = served.lake.settings.lake
    before = _listing(lake)
    answered = {}
    with psycopg.connect(_dsn(pg, served, "analyst"), autocommit=True) as conn:
        for key, sql in CORPUS.items():
            try:
                rows = conn.execute(_fill(sql, lake, escape)).fetchall()
                answered[key] = ("ok", str(rows)[:200])
            except psycopg.Error as exc:
                answered[key] = (exc.sqlstate, str(exc))
    # Probes of DuckDB's system views by a PostgreSQL name are answered from the emulated catalog of the
    # analyst's own tables (the over-the-wire equivalent of `GET /api/v1/tables`), never from DuckDB's.
    from_catalog = {key for key, (status, _) in answered.items() if status == "ok" and key != "nul_byte"}
    assert from_catalog <= {"information_schema_tables", "information_schema_columns", "pg_catalog",
                            "version_function"}, {key: answered[key] for key in from_catalog}
    for key in from_catalog:
        text = answered[key][1]
        assert not any(layer in text for layer in ("bronze", "silver", "quarantine", "duckdb", "main")), text
    # A query string ends at its first NUL byte on the wire: libpq sends only "select 1" of this one.
    assert answered.pop("nul_byte") == ("ok", "[(1,)]")
    not_refused = {key: answer for key, answer in answered.items()
                   if key not in from_catalog and answer[0] not in ("42601", "42501")}
    assert not_refused == {}
    assert [key for key, (_, text) in answered.items() if _secrets_in(text.encode(), served)] == []
    assert not escape.exists()
    assert _listing(lake) == before


def test_tls_and_a_cleartext_password_for_a_token_made_before_scram(served, tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    path = tokens_file(served.lake.settings)
    secret = "slk_made-before-the-postgresql-endpoint"
    with path.open("a") as tokens:  # as `serve-token add` wrote tokens before SCRAM verifiers: no `scram`
        tokens.write(f'\n[tokens.legacy]\nrole = "analyst"\nsha256 = "{hashlib.sha256(secret.encode()).hexdigest()}"\n')
    service = QueryService(served.lake.settings, query_log_interval=0.2)
    service.start()
    plain, encrypted = PgServer(service, port=0), PgServer(service, port=0, tls=tls_context(str(cert), str(key)))
    plain.start()
    encrypted.start()
    try:
        dsn = f"host=127.0.0.1 dbname=shoplake user=legacy password={secret}"
        with psycopg.connect(f"{dsn} port={encrypted.port} sslmode=require") as conn:
            assert conn.info.pgconn.ssl_in_use
            assert conn.execute("SELECT count(*) FROM gold.daily_funnel").fetchone()[0] > 0
        with pytest.raises(psycopg.OperationalError, match="recreate it"):
            psycopg.connect(f"{dsn} port={plain.port} sslmode=disable")
        # A token with a verifier still logs in with SCRAM over TLS.
        with psycopg.connect(_dsn(encrypted, served, "analyst") + " sslmode=require") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        plain.stop()
        encrypted.stop()
        service.close()
        remove_token(path, "legacy")


def _shoplake(lake, *args: str) -> list[str]:
    return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(lake), *args]


def test_serve_with_a_pg_port_answers_both_protocols_and_pg_refuses_a_remote_host(served):
    lake = served.lake.settings.lake
    refused = subprocess.run(_shoplake(lake, "pg", "--host", "0.0.0.0"), capture_output=True, text=True,
                             timeout=60, check=False)
    assert refused.returncode == 1 and "--allow-remote" in refused.stderr
    port, pg_port = free_port(), free_port()
    server = subprocess.Popen(_shoplake(lake, "serve", "--port", str(port), "--pg-port", str(pg_port)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(f"host=127.0.0.1 port={pg_port} dbname=shoplake user=analyst-token "
                                       f"password={served.secrets['analyst']}", connect_timeout=5)
                break
            except psycopg.OperationalError:
                assert server.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        with conn:
            assert conn.execute("SELECT 1 AS x").fetchone() == (1,)
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=10).json()["query_log"] == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert f"port={pg_port} dbname=shoplake" in server.stdout.read()
