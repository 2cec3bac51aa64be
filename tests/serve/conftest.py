"""Fixtures of the serving tests: one small lake with every page's tables (built, trained and scored once
per session), tokens of both roles, the app under TestClient and the real app under uvicorn on loopback.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from shoplake.config import Settings
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.runner import run_job
from shoplake.lake import Lake
from shoplake.serve.app import create_app
from shoplake.serve.security import add_token, tokens_file
from shoplake.synth import generate


def pytest_configure(config):
    # MLflow's SQLite store still uses a SQLAlchemy loader strategy that SQLAlchemy deprecates.
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy:DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


SEED = 5
LOCAL = "http://127.0.0.1"
TIMEOUT_SECONDS = 2
ROW_CAP = 500


@dataclass
class ServedLake:
    """A built, trained and scored lake with one token per role."""

    lake: Lake
    landing: Path
    secrets: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[role]}"}


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> ServedLake:
    root = tmp_path_factory.mktemp("serve")
    landing, data = root / "landing", root / "data"
    generated = [
        generate("products", data, rows=3000, seed=SEED),
        generate("clickstream", data, rows=120_000, seed=SEED, days=40, dirty_fraction=0.002),
        generate("retail", data, rows=6000, seed=SEED, start=dt.date(2011, 1, 1), days=120, dirty_fraction=0.002),
    ]
    for source, result in zip(("products", "clickstream", "retail"), generated, strict=True):
        (landing / source).mkdir(parents=True)
        shutil.copy(result.files[0], landing / source)  # the data file only (not the planted-truth files)
    # The tests send queries faster than any person; the rate limit has its own test.
    settings = Settings(lake=root / "lake", serve_row_cap=ROW_CAP, serve_query_timeout=TIMEOUT_SECONDS,
                        serve_token_rate=10_000, serve_token_concurrency=64)
    lake = Lake(settings)
    # The shipped `daily` job (ingest, build, train, score), so ops.job_runs has rows for the health page.
    daily = load_jobs(settings, lake.catalog, cwd=root).get("daily")
    result = run_job(lake, daily, landing=str(landing), isolation="inline")
    assert result.status == "succeeded", [(s.task.name, s.status, s.error) for s in result.tasks.values()]
    path = tokens_file(settings)
    secrets = {role: add_token(path, f"{role}-token", role) for role in ("analyst", "engineer")}
    return ServedLake(lake, landing, secrets)


@pytest.fixture(scope="session")
def client(served) -> TestClient:
    # The app accepts only loopback host names (DNS rebinding): the client talks to 127.0.0.1.
    with TestClient(create_app(served.lake.settings, query_log_interval=0.2), base_url=LOCAL) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """The real app under uvicorn on a loopback port, in a thread."""

    def __init__(self, settings: Settings):
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="session")
def live_server(served):
    with BackgroundServer(served.lake.settings) as server:
        yield server
