#!/usr/bin/env python3
"""Benchmark: the SQL API under load while `shoplake build` writes new table versions.

Starts `shoplake serve` on loopback against a lake (by default a fresh one built from generated data),
starts `shoplake ingest` + `shoplake build` of a new clickstream batch in a subprocess (so the build
really writes), and runs N concurrent clients x M queries against `POST /api/v1/sql`. Prints clients,
queries, errors, latency percentiles, wall time and how many queries overlapped the build.

    python bench/serve_load.py --clients 50 --queries 20 --events 500000
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [
    ("analyst", "SELECT event_date, count_views, count_purchases, revenue FROM gold.daily_funnel ORDER BY 1"),
    ("analyst", "SELECT sum(count_events) AS events, sum(revenue) AS revenue FROM gold.daily_funnel"),
    ("analyst", "SELECT product_id, revenue FROM gold.product_performance ORDER BY revenue DESC LIMIT 10"),
    ("analyst", "SELECT country, sum(net_revenue) AS net FROM gold.daily_sales_by_country GROUP BY 1 ORDER BY 2 DESC"),
    ("engineer", "SELECT event_type, count(*) AS n FROM silver.events GROUP BY 1"),
    ("analyst", "SELECT status, count(*) AS n FROM ops.job_runs GROUP BY 1"),
]


def shoplake(lake: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from shoplake.cli import run; run()", "--lake", str(lake), *args]


def run(command: list[str], env: dict[str, str]) -> None:
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_lake(work: Path, events: int, env: dict[str, str]) -> Path:
    """Generate a month of clickstream and some retail, ingest and build."""
    from shoplake.synth import generate

    lake = work / "lake"
    click = generate("clickstream", work / "data", rows=events, seed=1, days=30).files[0]
    retail = generate("retail", work / "data", rows=20_000, seed=1, start=dt.date(2011, 1, 1), days=180).files[0]
    run(shoplake(lake, "ingest", "clickstream", str(click)), env)
    run(shoplake(lake, "ingest", "retail", str(retail)), env)
    run(shoplake(lake, "build"), env)
    return lake


def client_loop(url: str, secrets: dict[str, str], queries: int, offset: int, results: list) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        for i in range(queries):
            role, sql = QUERIES[(offset + i) % len(QUERIES)]
            started = time.perf_counter()
            try:
                response = http.post("/api/v1/sql", json={"query": sql},
                                     headers={"Authorization": f"Bearer {secrets[role]}"})
                ok = response.status_code == 200
                detail = "" if ok else f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            ended = time.perf_counter()
            results.append((started, ended, ok, detail))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="an existing lake (default: build a fresh one)")
    parser.add_argument("--events", type=int, default=500_000, help="clickstream events of a fresh lake")
    parser.add_argument("--new-events", type=int, default=200_000, help="events of the batch the build adds")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queries", type=int, default=20, help="queries per client")
    args = parser.parse_args()

    from shoplake.serve.security import add_token
    from shoplake.synth import generate

    with tempfile.TemporaryDirectory(prefix="shoplake-serve-bench-") as tmp:
        work = Path(tmp)
        tokens = work / "tokens.toml"
        env = {**os.environ, "SHOPLAKE_SERVE_TOKENS_FILE": str(tokens), "SHOPLAKE_SERVE_QUERY_TIMEOUT": "120"}
        started_setup = time.perf_counter()
        lake = args.lake or prepare_lake(work, args.events, env)
        secrets = {role: add_token(tokens, f"bench-{role}", role) for role in ("analyst", "engineer")}
        new_batch = generate("clickstream", work / "new", rows=args.new_events, seed=2,
                             start=dt.date(2019, 11, 1), days=7).files[0]
        print(f"lake {lake} ready in {time.perf_counter() - started_setup:.1f} s", flush=True)

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(shoplake(lake, "serve", "--port", str(port)), env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"server did not start: {server.stderr.read().decode()[-1000:]}")
                time.sleep(0.2)

            build_window: dict[str, float] = {}

            def build() -> None:
                build_window["start"] = time.perf_counter()
                run(shoplake(lake, "ingest", "clickstream", str(new_batch)), env)
                run(shoplake(lake, "build"), env)
                build_window["end"] = time.perf_counter()

            peak_rss = [0]
            sampling = threading.Event()

            def sample_server_rss() -> None:
                process = psutil.Process(server.pid)
                while not sampling.is_set():
                    try:
                        peak_rss[0] = max(peak_rss[0], process.memory_info().rss)
                    except psutil.Error:
                        return
                    sampling.wait(0.1)

            sampler = threading.Thread(target=sample_server_rss, daemon=True)
            sampler.start()
            builder = threading.Thread(target=build)
            results: list[tuple[float, float, bool, str]] = []
            threads = [threading.Thread(target=client_loop, args=(url, secrets, args.queries, i, results))
                       for i in range(args.clients)]
            wall_start = time.perf_counter()
            builder.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - wall_start
            builder.join()
            sampling.set()
        finally:
            server.terminate()
            server.wait(timeout=30)

    latencies = sorted((end - start) * 1000 for start, end, _, _ in results)
    errors = [detail for _, _, ok, detail in results if not ok]
    during = sum(1 for start, end, _, _ in results if start < build_window["end"] and end > build_window["start"])
    overlapped = during > 0
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print()
    print("| clients | queries | errors | p50 ms | p95 ms | max ms | wall s | queries/s | server peak RSS MiB "
          "| build s | queries during build |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.clients} | {len(results)} | {len(errors)} | {statistics.median(latencies):.0f} | {p95:.0f} | "
          f"{latencies[-1]:.0f} | {wall:.1f} | {len(results) / wall:.1f} | {peak_rss[0] / 2**20:.0f} | "
          f"{build_window['end'] - build_window['start']:.1f} | "
          f"{during} ({'overlapped' if overlapped else 'no overlap'}) |")
    for detail in errors[:5]:
        print("error:", detail)


if __name__ == "__main__":
    main()
