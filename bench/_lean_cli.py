"""The command line shared by the lean reference jobs (`lean_duckdb.py`, `lean_polars.py`)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SILVER = "silver.events"


def main(run: Callable[[Path, Path], dict[str, int]], doc: str) -> None:
    """Run `run(file, out_dir)` on the file named on the command line; print rows, tables and seconds as JSON.

    Without `--out` the Parquet outputs go to a temporary folder, removed afterwards (inside the timing:
    deleting what was written is part of a run that keeps nothing).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("file", type=Path, help="clickstream CSV or CSV.gz")
    parser.add_argument("--out", type=Path, help="keep the Parquet outputs here (default: a temporary folder)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lean-") as scratch:
        counts = run(args.file, args.out or Path(scratch))
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": counts[SILVER], "tables": counts, "seconds": seconds}))
