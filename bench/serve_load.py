#!/usr/bin/env python3
"""Benchmark: the SQL API under load while `shoplake build` writes new table versions.

Starts `shoplake serve --pg-port` on loopback against a lake (by default a fresh one built from generated
data), starts `shoplake ingest` + `shoplake build` of a new clickstream batch in a subprocess (so the build
really writes), and runs N concurrent clients x M queries, each client with tokens of its own (as N people
would have): against `POST /api/v1/sql` (`--protocol http`) or over the PostgreSQL protocol with psycopg, one
connection per client and role, opened before the clock starts (`--protocol pg`, as a BI tool keeps its
connections). Prints clients, queries, errors, latency percentiles, wall time, the peak RSS of the server
with its query workers, and how many queries overlapped the build.

Then `--slow` runaway queries (default 50) are sent at once; while they wait or run, the dashboard
(`/`, `/health`) and `/api/v1/health` are fetched every half second, and their response times printed.

    python bench/serve_load.py --clients 50 --queries 20 --events 500000 --protocol pg
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


# Endless for practical purposes (10^12 rows against a subquery): stopped by the server's deadline.
RUNAWAY = ("select count(*) from (select a.range as x from range(1000000000000) a "
           "where a.range in (select b.range * -1 - 1 from range(1000000000000) b)) nested")


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


def pg_client_loop(port: int, names: dict[str, str], secrets: dict[str, str], queries: int, offset: int,
                   results: list, ready: threading.Barrier) -> None:
    """Like `client_loop`, over the PostgreSQL protocol: psycopg, one connection per role."""
    import psycopg

    connections = {role: psycopg.connect(f"host=127.0.0.1 port={port} dbname=shoplake user={names[role]} "
                                         f"password={secrets[role]}", autocommit=True) for role in secrets}
    ready.wait()
    try:
        for i in range(queries):
            role, sql = QUERIES[(offset + i) % len(QUERIES)]
            started = time.perf_counter()
            try:
                connections[role].execute(sql).fetchall()
                ok, detail = True, ""
            except psycopg.Error as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            results.append((started, time.perf_counter(), ok, detail))
    finally:
        for connection in connections.values():
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="an existing lake (default: build a fresh one)")
    parser.add_argument("--events", type=int, default=500_000, help="clickstream events of a fresh lake")
    parser.add_argument("--new-events", type=int, default=200_000, help="events of the batch the build adds")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--queries", type=int, default=20, help="queries per client")
    parser.add_argument("--slow", type=int, default=50, help="runaway queries in flight while the dashboard is timed")
    parser.add_argument("--slow-seconds", type=float, default=20, help="how long to time the dashboard meanwhile")
    parser.add_argument("--protocol", choices=("http", "pg"), default="http",
                        help="the clients' protocol: the HTTP API or PostgreSQL (psycopg)")
    args = parser.parse_args()

    from shoplake.serve.security import add_token
    from shoplake.synth import generate

    with tempfile.TemporaryDirectory(prefix="shoplake-serve-bench-") as tmp:
        work = Path(tmp)
        tokens = work / "tokens.toml"
        # The default limits (30 s deadline, 4 queries per token at once, 64 in flight), except the rate limit:
        # a bench client sends its next query at once, faster than a person would.
        env = {**os.environ, "SHOPLAKE_SERVE_TOKENS_FILE": str(tokens), "SHOPLAKE_SERVE_TOKEN_RATE": "1000"}
        started_setup = time.perf_counter()
        lake = args.lake or prepare_lake(work, args.events, env)
        secrets = [{role: add_token(tokens, f"bench-{i}-{role}", role) for role in ("analyst", "engineer")}
                   for i in range(max(args.clients, args.slow))]
        new_batch = generate("clickstream", work / "new", rows=args.new_events, seed=2,
                             start=dt.date(2019, 11, 1), days=7).files[0]
        print(f"lake {lake} ready in {time.perf_counter() - started_setup:.1f} s", flush=True)

        port, pg_port = free_port(), free_port()
        url = f"http://127.0.0.1:{port}"
        # The server's messages go to a file: an unread pipe would fill up and block the server.
        server_log = (work / "server.log").open("w+")
        server = subprocess.Popen(shoplake(lake, "serve", "--port", str(port), "--pg-port", str(pg_port)), env=env,
                                  stdout=subprocess.DEVNULL, stderr=server_log)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    server_log.seek(0)
                    raise SystemExit(f"server did not start: {server_log.read()[-1000:]}")
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
                # The server and its query worker processes together.
                process = psutil.Process(server.pid)
                while not sampling.is_set():
                    try:
                        family = [process, *process.children(recursive=True)]
                        peak_rss[0] = max(peak_rss[0], sum(p.memory_info().rss for p in family if p.is_running()))
                    except psutil.Error:
                        pass
                    sampling.wait(0.1)

            sampler = threading.Thread(target=sample_server_rss, daemon=True)
            sampler.start()
            builder = threading.Thread(target=build)
            results: list[tuple[float, float, bool, str]] = []
            if args.protocol == "pg":
                ready = threading.Barrier(args.clients + 1)
                names = [{role: f"bench-{i}-{role}" for role in ("analyst", "engineer")} for i in range(args.clients)]
                threads = [threading.Thread(target=pg_client_loop, args=(pg_port, names[i], secrets[i], args.queries,
                                                                         i, results, ready))
                           for i in range(args.clients)]
                for thread in threads:
                    thread.start()
                ready.wait()  # every client connected (and authenticated) before the clock starts
            else:
                threads = [threading.Thread(target=client_loop, args=(url, secrets[i], args.queries, i, results))
                           for i in range(args.clients)]
            wall_start = time.perf_counter()
            builder.start()
            if args.protocol == "http":
                for thread in threads:
                    thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - wall_start
            builder.join()
            sampling.set()
            slow_timings = time_dashboard_under_slow_queries(url, secrets, args.slow, args.slow_seconds)
        finally:
            stopping = time.perf_counter()
            server.terminate()
            try:
                server.wait(timeout=30)
                stop_seconds = f"{time.perf_counter() - stopping:.1f} s"
            except subprocess.TimeoutExpired:
                server.kill()
                stop_seconds = "more than 30 s (killed)"

    latencies = sorted((end - start) * 1000 for start, end, _, _ in results)
    errors = [detail for _, _, ok, detail in results if not ok]
    during = sum(1 for start, end, _, _ in results if start < build_window["end"] and end > build_window["start"])
    overlapped = during > 0
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    print()
    print("| protocol | clients | queries | errors | p50 ms | p95 ms | max ms | wall s | queries/s "
          "| server peak RSS MiB | build s | queries during build |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.protocol} | {args.clients} | {len(results)} | {len(errors)} | {statistics.median(latencies):.0f} | "
          f"{p95:.0f} | "
          f"{latencies[-1]:.0f} | {wall:.1f} | {len(results) / wall:.1f} | {peak_rss[0] / 2**20:.0f} | "
          f"{build_window['end'] - build_window['start']:.1f} | "
          f"{during} ({'overlapped' if overlapped else 'no overlap'}) |")
    for detail in errors[:5]:
        print("error:", detail)
    print()
    print(f"while {args.slow} runaway queries were in flight ({slow_timings.pop('in_flight')} at the last sample):")
    print("| path | requests | p50 ms | max ms |")
    print("|---|---|---|---|")
    for path, times in slow_timings.items():
        print(f"| {path} | {len(times)} | {statistics.median(times):.0f} | {max(times):.0f} |")
    print(f"SIGTERM with those queries in flight: the server stopped in {stop_seconds}")


def time_dashboard_under_slow_queries(url: str, secrets: list[dict[str, str]], slow: int, seconds: float) -> dict:
    """Response times of the dashboard and /api/v1/health while `slow` runaway queries wait or run."""

    def runaway(secret: str) -> None:
        try:
            httpx.post(f"{url}/api/v1/sql", json={"query": RUNAWAY}, headers={"Authorization": f"Bearer {secret}"},
                       timeout=120)
        except httpx.HTTPError:
            pass

    def sample(label: str, seconds: float) -> int:
        in_flight = 0
        with httpx.Client(base_url=url, timeout=60) as browser:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                for path in ("/", "/health", "/api/v1/health"):
                    started = time.perf_counter()
                    response = browser.get(path)
                    timings.setdefault(f"{path} ({label})", []).append((time.perf_counter() - started) * 1000)
                    if path == "/api/v1/health":
                        in_flight = response.json()["queries_in_flight"]
                time.sleep(0.5)
        return in_flight

    timings: dict = {}
    sample("idle", seconds / 2)  # the same pages with nothing else asked of the server, for comparison
    senders = [threading.Thread(target=runaway, args=(secrets[i]["engineer"],), daemon=True) for i in range(slow)]
    for sender in senders:
        sender.start()
    time.sleep(2)  # let every runaway query arrive
    timings["in_flight"] = sample(f"{slow} slow", seconds)
    return timings


if __name__ == "__main__":
    main()
