#!/usr/bin/env python3
"""Benchmark: the full pipeline (ingest + build, all layers) on N generated clickstream events.

Prints rows, seconds per stage, rows/s and peak RSS, next to the time DuckDB alone needs to parse the
same CSV, measured in the same run, and the ratio between the two. Each measured step runs in its own
child process so that its peak RSS is its own.

    python bench/pipeline.py --events 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"


def _run_child(args: list[str]) -> tuple[dict, float, int]:
    """Run `python <this file> --child ...`; return its JSON output, wall seconds and peak RSS bytes."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit code {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1]), wall, usage.ru_maxrss * 1024


def _child(argv: list[str]) -> None:
    """The measured work, one step per child process."""
    step = argv[0]
    if step == "generate":
        from shoplake.synth import generate

        result = generate("clickstream", Path(argv[1]), rows=int(argv[2]), seed=7)
        print(json.dumps({"rows": result.rows}))
    elif step == "parse":
        import gzip

        import duckdb

        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
        # Touch every column so the whole file is parsed (types sniffed), not only counted.
        with gzip.open(argv[1], "rt") as handle:
            columns = handle.readline().strip().split(",")
        counts = ", ".join(f'count("{c}")' for c in columns)
        rows = con.execute(f"SELECT count(*), {counts} FROM read_csv(?)", [argv[1]]).fetchone()[0]
        print(json.dumps({"rows": rows}))
    elif step == "pipeline":
        from shoplake.build import build_tables
        from shoplake.config import load_settings
        from shoplake.ingest import ingest_files
        from shoplake.lake import Lake

        lake = Lake(load_settings(env={}, lake=argv[2], engine=argv[3]))
        stages = {}
        started = time.perf_counter()
        results = ingest_files(lake, "clickstream", [argv[1]], run_id="bench-ingest")
        stages["ingest (csv -> bronze)"] = time.perf_counter() - started
        rows = sum(r.rows_read for r in results)
        started = time.perf_counter()
        build_tables(lake, "silver.events", run_id="bench-silver")
        stages["silver (bronze -> silver.events)"] = time.perf_counter() - started
        started = time.perf_counter()
        built = build_tables(lake, "gold", run_id="bench-gold")
        stages["gold (all gold tables)"] = time.perf_counter() - started
        failed = [b.table for b in built if b.status == "failed"]
        if failed:
            raise SystemExit(f"failed: {failed}")
        print(json.dumps({"rows": rows, "stages": stages}))
    else:
        raise SystemExit(f"unknown step {step}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engine", default="duckdb", choices=["duckdb"])
    parser.add_argument("--keep", action="store_true", help="keep the lake folder")
    args = parser.parse_args()

    data_dir = CACHE / f"clickstream-{args.events}"
    csv_file = data_dir / "clickstream.csv.gz"
    if not csv_file.exists():
        print(f"generating {args.events:,} events into {data_dir} (cached for later runs) ...", flush=True)
        _, wall, _ = _run_child(["generate", str(data_dir), str(args.events)])
        print(f"  generated in {wall:.1f} s", flush=True)
    size_mb = csv_file.stat().st_size / 1e6

    parsed, parse_wall, parse_rss = _run_child(["parse", str(csv_file)])
    lake_dir = Path(tempfile.mkdtemp(prefix="shoplake-bench-"))
    try:
        result, pipe_wall, pipe_rss = _run_child(["pipeline", str(csv_file), str(lake_dir), args.engine])
    finally:
        if not args.keep:
            shutil.rmtree(lake_dir, ignore_errors=True)
    rows = result["rows"]

    gib = 1024 ** 3
    print(f"\ninput: {csv_file} ({size_mb:,.0f} MB gzip CSV, {rows:,} rows); engine: {args.engine}; "
          f"cores: {os.cpu_count()}")
    header = f"{'step':38} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'peak RSS':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'duckdb parse only (reference)':38} {parsed['rows']:>12,} {parse_wall:>9.2f} "
          f"{parsed['rows'] / parse_wall:>12,.0f} {parse_rss / gib:>8.2f} G")
    for stage, seconds in result["stages"].items():
        print(f"{'  ' + stage:38} {rows:>12,} {seconds:>9.2f} {rows / seconds:>12,.0f} {'':>10}")
    print(f"{'full pipeline (process wall)':38} {rows:>12,} {pipe_wall:>9.2f} {rows / pipe_wall:>12,.0f} "
          f"{pipe_rss / gib:>8.2f} G")
    print(f"\nratio full pipeline / duckdb parse: {pipe_wall / parse_wall:.1f}x "
          f"(target <= 5x); peak RSS {pipe_rss / gib:.2f} GiB (target <= 3 GiB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        main()
