"""Helpers of the ML tests (imported by the tests; fixtures are in conftest.py)."""

from __future__ import annotations

import csv
import datetime as dt
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shoplake import cli
from shoplake.build import build_tables
from shoplake.config import Settings
from shoplake.ingest import ingest_files
from shoplake.lake import Lake
from shoplake.ml import ScoreResult, TrainResult
from shoplake.query import run_query
from shoplake.synth import generate

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
UCI_FILE = REAL_DATA / "online_retail" / "online_retail_uci_2010-12_2011-12.csv.gz"


def open_lake(path: Path, **settings) -> Lake:
    """A Lake with explicit settings (no config file, no environment)."""
    return Lake(Settings(lake=Path(path), **settings))


def built_lake(root: Path, *, click_events: int, retail_rows: int, seed: int, click_days: int,
               lake_name: str = "lake") -> tuple[Lake, Path]:
    """Generate clickstream + a year of retail under `root/data`, ingest both and build every table."""
    data = root / "data"
    generate("clickstream", data, rows=click_events, seed=seed, days=click_days)
    generate("retail", data, rows=retail_rows, seed=seed, start=dt.date(2010, 12, 1), days=365)
    lake = open_lake(root / lake_name)
    ingest_files(lake, "clickstream", [str(data / "clickstream.csv.gz")], run_id="ingest-click")
    ingest_files(lake, "retail", [str(data / "retail.csv.gz")], run_id="ingest-retail")
    failed = [r for r in build_tables(lake, run_id="build") if r.status == "failed"]
    assert not failed, failed
    return lake, data


def run_cli_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `shoplake.cli.main` with `args`, as the console script does; returns (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["shoplake", *args])
    monkeypatch.setenv("COLUMNS", "250")
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(lake: Lake, sql: str) -> list[dict]:
    """A read-only query through the public query API."""
    return run_query(lake, sql).to_pylist()


@dataclass
class Trained:
    """A lake whose models were trained and scored once."""

    lake: Lake
    data: Path
    train: dict[str, TrainResult] = field(default_factory=dict)
    score: list[ScoreResult] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def truth(self, name: str) -> dict[int, str]:
        """A planted-truth side file of the generator: entity id -> type."""
        with open(self.data / "_truth" / name, newline="") as handle:
            found = list(csv.reader(handle))
        return {int(r[0]): r[1] for r in found[1:]}
