"""Fixtures of the ML tests: lakes built from generated and real data, trained and scored once per session.

- `shop_lake`: a month of generated clickstream (1M events, planted user types) and a year of
  generated retail (planted customer types), ingested and built through the public API. Products are
  not ingested: the clickstream rows carry their category fields.
- `trained`: the four models trained on `shop_lake` (MLflow store inside the lake) and scored once.
- `uci_trained`: the real UCI Online Retail file (../shared/data/real), built up to gold.customer_rfm,
  RFM model trained and scored (its own MLflow store).
Tests read the results, the tables and the MLflow stores; tests that train more use their own runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shoplake.build import build_tables
from shoplake.ingest import ingest_files
from shoplake.lake import Lake
from shoplake.ml import score_models, train_model

from .lakes import UCI_FILE, Trained, built_lake, open_lake


def pytest_configure(config):
    # MLflow's SQLite store still uses a SQLAlchemy loader strategy that SQLAlchemy deprecates.
    config.addinivalue_line("filterwarnings", "ignore:The ``noload`` loader strategy:DeprecationWarning")


CLICK_EVENTS = 1_000_000
CLICK_DAYS = 30
RETAIL_ROWS = 60_000
SEED = 7
# The models of the shared `trained` lake (CLV is trained on the UCI file: `uci_clv`).
TRAINED_KINDS = ("segments", "rfm", "propensity", "recommender")


@pytest.fixture(scope="session")
def shop_lake(tmp_path_factory) -> tuple[Lake, Path]:
    return built_lake(tmp_path_factory.mktemp("shop"), click_events=CLICK_EVENTS, retail_rows=RETAIL_ROWS,
                      seed=SEED, click_days=CLICK_DAYS)


@pytest.fixture(scope="session")
def trained(shop_lake) -> Trained:
    lake, data = shop_lake
    out = Trained(lake, data)
    for kind in TRAINED_KINDS:
        started = time.perf_counter()
        out.train[kind] = train_model(lake, kind, run_id=f"train-{kind}")
        out.seconds[kind] = time.perf_counter() - started
    started = time.perf_counter()
    out.score = score_models(lake, run_id="score-1", kinds=list(TRAINED_KINDS))
    out.seconds["score"] = time.perf_counter() - started
    return out


@pytest.fixture(scope="session")
def uci_trained(tmp_path_factory) -> Trained:
    if not UCI_FILE.is_file():
        pytest.skip(f"real data file {UCI_FILE} is absent (expected ../shared/data/real next to the repo)")
    lake = open_lake(tmp_path_factory.mktemp("uci") / "lake")
    ingest_files(lake, "retail", [str(UCI_FILE)], run_id="ingest-uci")
    failed = [r for r in build_tables(lake, "+gold.customer_rfm", run_id="build-uci") if r.status == "failed"]
    assert not failed, failed
    out = Trained(lake, UCI_FILE.parent)
    started = time.perf_counter()
    out.train["rfm"] = train_model(lake, "rfm", run_id="train-uci-rfm")
    out.seconds["rfm"] = time.perf_counter() - started
    out.score = score_models(lake, run_id="score-uci", kinds=["rfm"])
    return out


@pytest.fixture(scope="session")
def uci_clv(uci_trained) -> Trained:
    """The CLV model trained and scored once in the `uci_trained` lake (its Silver tables are built): the
    training run's holdout is the issue's split, a fit up to 2011-09-09 predicting the last 91 days."""
    lake = uci_trained.lake
    started = time.perf_counter()
    uci_trained.train["clv"] = train_model(lake, "clv", run_id="train-uci-clv")
    uci_trained.seconds["clv"] = time.perf_counter() - started
    started = time.perf_counter()
    uci_trained.score += score_models(lake, run_id="score-uci-clv", kinds=["clv"])
    uci_trained.seconds["clv_score"] = time.perf_counter() - started
    return uci_trained
