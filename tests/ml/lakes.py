"""Helpers of the ML tests (imported by the tests; fixtures are in conftest.py)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from shoplake.config import Settings
from shoplake.lake import Lake
from shoplake.ml import ScoreResult, TrainResult
from shoplake.query import run_query

REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
UCI_FILE = REAL_DATA / "online_retail" / "online_retail_uci_2010-12_2011-12.csv.gz"


def open_lake(path: Path, **settings) -> Lake:
    """A Lake with explicit settings (no config file, no environment)."""
    return Lake(Settings(lake=Path(path), **settings))


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
        with open(self.data / name, newline="") as handle:
            found = list(csv.reader(handle))
        return {int(r[0]): r[1] for r in found[1:]}
