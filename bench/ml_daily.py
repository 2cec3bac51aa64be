#!/usr/bin/env python3
"""Benchmark: `shoplake run daily` on generated lakes of several sizes and seeds, ML included.

For each (events, seed): generate products, clickstream (31 days) and a year of retail (events / 5
lines), land them, run the real console command in a fresh working directory, and report the wall
time, the outcome of `train_propensity` (attempts, status, warnings), the validation positives and the
candidates' coverage of conversions. Issue 15 asks that no run fails on leakage.

    python bench/ml_daily.py --events 100000 500000 --seeds 1 2 3 4 5

`--tasks` also prints each task's seconds (from `ops.job_runs`: its last attempt's start to end), its CPU
seconds (the processor time the attempt reported) and when it started, relative to the run's start, and the
tasks' CPU seconds summed; issue 18 measured the demo's daily job with

    make demo    # or just its three `shoplake generate` lines: data/demo/{products,clickstream,retail}.csv.gz
    python bench/ml_daily.py --files data/demo --tasks

(`--files DIR`: land those generated files instead of generating; the run is the demo's `daily` on a new lake;
`--jobs-file FILE`: run the `daily` of that job file instead of the shipped one, to compare variants).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoplake.config import Settings
from shoplake.jobs.history import read_attempts
from shoplake.lake import Lake
from shoplake.synth import generate


def run_once(events: int, seed: int, root: Path, files: Path | None = None, jobs_file: Path | None = None) -> dict:
    landing = root / "landing"
    if jobs_file is not None:  # a variant of the daily job: the working folder's job file replaces the shipped one
        shutil.copy(jobs_file, root / "shoplake-jobs.yaml")
    if files is not None:
        made = {source: [files / f"{source}.csv.gz"] for source in ("products", "clickstream", "retail")}
    else:
        made = {"products": generate("products", root / "data", seed=seed).files,
                "clickstream": generate("clickstream", root / "data", rows=events, seed=seed).files,
                "retail": generate("retail", root / "data", rows=max(events // 5, 1000), seed=seed,
                                   start=dt.date(2010, 12, 1), days=365).files}
    for source, paths in made.items():
        (landing / source).mkdir(parents=True)
        shutil.copy(paths[0], landing / source)
    shoplake = Path(sys.executable).with_name("shoplake")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPLAKE_")}
    started = time.perf_counter()
    done = subprocess.run([str(shoplake), "--lake", str(root / "lakehouse"), "run", "daily"], cwd=root, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lake = Lake(Settings(lake=root / "lakehouse"))
    attempts = [a for a in read_attempts(lake.store) if a.task == "train_propensity"]
    last = attempts[-1] if attempts else None
    detail = (last.detail or "") if last else ""
    runs = [a for a in read_attempts(lake.store) if a.started_at is not None and a.ended_at is not None]
    start = min((a.started_at for a in runs), default=None)
    tasks = {a.task: (a.status, (a.ended_at - a.started_at).total_seconds(), (a.started_at - start).total_seconds(),
                      a.cpu_seconds) for a in runs if start is not None}  # the last attempt of each task
    out = {"events": events, "seed": seed, "exit": done.returncode, "seconds": seconds, "tasks": tasks,
           "attempts": len(attempts), "status": last.status if last else "-",
           "error": (last.error or "")[:80] if last else "",
           "warnings": detail.split("warning: ", 1)[1].count(" alone reaches ") if "warning: " in detail else 0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--files", type=Path, help="land these generated files (e.g. data/demo) instead")
    parser.add_argument("--tasks", action="store_true", help="print each task's seconds too")
    parser.add_argument("--jobs-file", type=Path, help="a job file whose `daily` replaces the shipped one")
    args = parser.parse_args()
    print("| events | seed | exit | wall s | train_propensity attempts | status | warnings | error |")
    print("|---|---|---|---|---|---|---|---|")
    for events in [0] if args.files else args.events:
        for seed in [0] if args.files else args.seeds:
            with tempfile.TemporaryDirectory(prefix="ml-daily-") as tmp:
                r = run_once(events, seed, Path(tmp), args.files, args.jobs_file)
            print(f"| {r['events']:,} | {r['seed']} | {r['exit']} | {r['seconds']:.0f} | {r['attempts']} | "
                  f"{r['status']} | {r['warnings']} | {r['error'] or '-'} |", flush=True)
            if args.tasks:
                print("\n| task | status | seconds | cpu s | started at s |\n|---|---|---|---|---|")
                for task, (status, secs, at, cpu) in r["tasks"].items():
                    print(f"| {task} | {status} | {secs:.1f} | {'-' if cpu is None else f'{cpu:.1f}'} | {at:.1f} |")
                cpus = [cpu for *_, cpu in r["tasks"].values() if cpu is not None]
                print(f"\ntasks' CPU seconds: {sum(cpus):.1f} over {len(cpus)} tasks; wall {r['seconds']:.1f} s",
                      flush=True)


if __name__ == "__main__":
    main()
