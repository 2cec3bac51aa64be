"""Readers never fail and never mix versions while a real `shoplake build` writes new ones."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import threading
from dataclasses import replace

from fastapi.testclient import TestClient

from shoplake.lake import Lake
from shoplake.query import run_query
from shoplake.serve.app import create_app
from shoplake.synth import generate

from .conftest import LOCAL, SEED

QUERY = """SELECT (SELECT count(*) FROM silver.events) AS events,
                  (SELECT count(*) FROM gold.daily_funnel) AS days,
                  (SELECT sum(count_events) FROM gold.daily_funnel) AS funnel_events"""


def shoplake(lake_path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(lake_path), *args]


def test_api_queries_see_one_version_while_a_build_writes(served, tmp_path):
    lake_path = tmp_path / "lake"
    shutil.copytree(served.lake.settings.lake, lake_path)  # the tokens file is inside the lake
    settings = replace(served.lake.settings, lake=lake_path)
    lake = Lake(settings)
    new_file = generate("clickstream", tmp_path / "new", rows=60_000, seed=SEED + 1, start=dt.date(2019, 11, 10),
                        days=6).files[0]
    outcome: dict[str, subprocess.CompletedProcess] = {}

    def write_new_versions() -> None:
        for name, args in (("ingest", ("ingest", "clickstream", str(new_file))), ("build", ("build",))):
            outcome[name] = subprocess.run(shoplake(lake_path, *args), capture_output=True, text=True, check=False)

    writer = threading.Thread(target=write_new_versions)
    observed: list[tuple] = []
    failures: list[str] = []
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        def ask() -> None:
            response = client.post("/api/v1/sql", json={"query": QUERY}, headers=served.headers("engineer"))
            if response.status_code == 200:
                observed.append(tuple(response.json()["rows"][0]))
            else:
                failures.append(response.text)

        ask()
        writer.start()
        while writer.is_alive():
            ask()
        writer.join()
        ask()
    assert all(r.returncode == 0 for r in outcome.values()), {k: r.stderr[-500:] for k, r in outcome.items()}
    assert failures == []

    def at_each_version(table: str, select: str) -> set[tuple]:
        last = lake.store.version(table)
        return {tuple(run_query(lake, f"SELECT {select} FROM {table} VERSION AS OF {v}").to_pylist()[0].values())
                for v in range(last + 1)}

    events_versions = at_each_version("silver.events", "count(*)")
    funnel_versions = at_each_version("gold.daily_funnel", "count(*), sum(count_events)")
    assert len({events for events, _, _ in observed}) >= 2  # the build really wrote while we read
    for events, days, funnel_events in observed:
        assert (events,) in events_versions
        assert (days, funnel_events) in funnel_versions
