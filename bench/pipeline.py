#!/usr/bin/env python3
"""Benchmark: the full pipeline (ingest + build, all layers) on N generated clickstream events.

Prints rows, seconds per stage, rows/s and peak RSS, next to the time DuckDB alone needs to parse the
same CSV, measured in the same run, and the ratio between the two. Each measured step runs in its own
child process, in its own fresh lake, so that its peak RSS is its own; the RSS is sampled over the
child's whole process tree, which for Spark includes the JVM.

    python bench/pipeline.py --events 10000000
    python bench/pipeline.py --events 1000000 --engine both     # DuckDB and Spark, with the ratio
    python bench/pipeline.py --engine spark --files 8 --spark-master spark://127.0.0.1:7077
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"


def _tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (a Spark driver's JVM included)."""
    total = 0
    for member in [proc, *proc.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def _run_child(args: list[str]) -> tuple[dict, float, int]:
    """Run `python <this file> --child ...`; return its JSON output, wall seconds and peak RSS bytes.

    The peak is the larger of the child's own peak (from the kernel) and the peak of its process tree,
    sampled every 0.1 s while it runs.
    """
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        watched = psutil.Process(proc.pid)
        while not done.wait(0.1):
            try:
                peak = max(peak, _tree_rss(watched))
            except psutil.Error:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit code {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1]), wall, max(peak, usage.ru_maxrss * 1024)


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

        lake = Lake(load_settings(env={}, lake=argv[2], engine=argv[3], spark_master=argv[4]))
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


def _split(csv_file: Path, folder: Path, files: int, rows: int) -> None:
    """The gzip file as `files` plain CSV files, each with the header: splittable input Spark reads in parallel."""
    import gzip

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    per_file = -(-rows // files)
    with gzip.open(csv_file, "rb") as source:
        header = source.readline()
        for index in range(files):
            with open(partial / f"clickstream-{index + 1:03d}.csv", "wb") as out:
                out.write(header)
                last = index == files - 1
                out.writelines(source if last else (line for _, line in zip(range(per_file), source, strict=False)))
    partial.rename(folder)  # complete or absent: an interrupted split is not reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--engine", default="duckdb", choices=["duckdb", "spark", "both"])
    parser.add_argument("--keep", action="store_true", help="keep the lake folders")
    parser.add_argument("--spark-master", default="local[*]", metavar="URL",
                        help="master of the spark engine: local[N] or spark://host:port (default local[*])")
    parser.add_argument("--files", type=int, default=1, metavar="N",
                        help="ingest the events as N plain CSV files in one landing folder (default 1: the gzip file)")
    args = parser.parse_args()
    engines = ["duckdb", "spark"] if args.engine == "both" else [args.engine]

    data_dir = CACHE / f"clickstream-{args.events}"
    csv_file = data_dir / "clickstream.csv.gz"
    if not csv_file.exists():
        print(f"generating {args.events:,} events into {data_dir} (cached for later runs) ...", flush=True)
        _, wall, _ = _run_child(["generate", str(data_dir), str(args.events)])
        print(f"  generated in {wall:.1f} s", flush=True)
    size_mb = csv_file.stat().st_size / 1e6
    landing = csv_file
    if args.files > 1:
        landing = data_dir / f"landing-{args.files}"
        if not landing.exists():
            print(f"splitting into {args.files} CSV files in {landing} (cached) ...", flush=True)
            _split(csv_file, landing, args.files, args.events)

    parsed, parse_wall, parse_rss = _run_child(["parse", str(csv_file)])
    runs = {}
    for engine in engines:
        print(f"running the pipeline on {engine} ...", flush=True)
        lake_dir = Path(tempfile.mkdtemp(prefix=f"shoplake-bench-{engine}-"))
        try:
            runs[engine] = _run_child(["pipeline", str(landing), str(lake_dir), engine, args.spark_master])
        finally:
            if args.keep:
                print(f"  lake kept at {lake_dir}")
            else:
                shutil.rmtree(lake_dir, ignore_errors=True)
    rows = next(iter(runs.values()))[0]["rows"]

    gib = 1024 ** 3
    print(f"\ninput: {csv_file} ({size_mb:,.0f} MB gzip CSV, {rows:,} rows); cores: {os.cpu_count()}")
    if args.files > 1:
        print(f"ingested as: {landing} ({args.files} plain CSV files)")
    if "spark" in engines:
        print(f"spark master: {args.spark_master}")
    header = f"{'engine':8} {'step':38} {'rows':>12} {'seconds':>9} {'rows/s':>12} {'peak RSS':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'duckdb':8} {'parse only (reference)':38} {parsed['rows']:>12,} {parse_wall:>9.2f} "
          f"{parsed['rows'] / parse_wall:>12,.0f} {parse_rss / gib:>8.2f} G")
    for engine, (result, wall, rss) in runs.items():
        for stage, seconds in result["stages"].items():
            print(f"{engine:8} {'  ' + stage:38} {rows:>12,} {seconds:>9.2f} {rows / seconds:>12,.0f} {'':>10}")
        print(f"{engine:8} {'full pipeline (process wall)':38} {rows:>12,} {wall:>9.2f} {rows / wall:>12,.0f} "
              f"{rss / gib:>8.2f} G")
    print()
    for engine, (_, wall, rss) in runs.items():
        print(f"{engine}: full pipeline / duckdb parse: {wall / parse_wall:.1f}x; peak RSS {rss / gib:.2f} GiB")
    if len(runs) == 2:
        (_, duck_wall, duck_rss), (_, spark_wall, spark_rss) = runs["duckdb"], runs["spark"]
        print(f"spark / duckdb: {spark_wall / duck_wall:.1f}x the time, {spark_rss / duck_rss:.1f}x the peak RSS")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2:])
    else:
        main()
