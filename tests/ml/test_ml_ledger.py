"""The ML tables derived from other rows are accounted in `ops.ledger` and reconciled by `shoplake verify`:
`ops.model_decisions` (one registered version in, its decision out), `ops.model_monitoring` (the model's
inputs and predictions in, one row each out; the rows it summarised = the rows the scoring wrote) and
`gold.prediction_outcomes` (the predictions of every scoring in, those whose label window has passed
folded into the rank bins, the others diverted as `label_window_open`)."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from shoplake.lake import Lake
from shoplake.layers import ml as tables
from shoplake.ml import monitoring, score_models, train_model
from shoplake.quality.verify import verify_lake

from .lakes import built_lake, open_lake, rows

UTC = dt.UTC


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    """14 days of clickstream (from 2019-10-01), segments trained and scored."""
    lake, _ = built_lake(tmp_path_factory.mktemp("mlledger"), click_events=40_000, retail_rows=4_000, seed=9,
                         click_days=14)
    train_model(lake, "segments", run_id="train-seg")
    score_models(lake, run_id="score-seg", kinds=["segments"])
    return lake


def _ledger(lake: Lake, table: str) -> list[dict]:
    found = rows(lake, f"SELECT * FROM ops.ledger WHERE table_name = '{table}' ORDER BY recorded_at")
    for row in found:
        row["diverted"], row["inputs"] = json.loads(row["diverted"]), json.loads(row["inputs"])
    return found


def _ml_findings(lake: Lake) -> dict[str, tuple]:
    return {f.what: (f.expected, f.found, f.ok) for f in verify_lake(lake).findings if f.check == "ml"}


def _copy(lake: Lake, tmp_path) -> Lake:
    shutil.copytree(lake.settings.lake, tmp_path / "copy")
    return open_lake(tmp_path / "copy")


def test_only_the_ml_logs_among_the_ops_tables_carry_ledger_entries(tmp_path):
    ledgered = set(open_lake(tmp_path / "lake").ledgered_tables())
    assert {"ops.model_decisions", "ops.model_monitoring", "gold.prediction_outcomes",
            "gold.conversion_predictions", "silver.events"} <= ledgered
    assert not {"ops.ledger", "ops.data_quality", "ops.job_runs"} & ledgered


@pytest.mark.slow  # trains and scores a model on a generated lake
def test_model_decisions_are_ledgered_and_verified(lake, tmp_path):
    [entry] = _ledger(lake, "ops.model_decisions")
    assert (entry["rows_in"], entry["rows_out"], entry["rows_written"], entry["diverted"]) == (1, 1, 1, {})
    assert entry["is_balanced"] and entry["inputs"]["model"] == "shoplake-user-segments/1"
    assert entry["write_key"] == "ml-decision:shoplake-user-segments:1" and entry["run_id"] == "train-seg"
    found = _ml_findings(lake)
    assert found["decision rows of the ledgered versions per ledger"] == (1, 1, True)
    assert verify_lake(lake).ok, verify_lake(lake).failures
    # a decision lost behind shoplake's back
    copy = _copy(lake, tmp_path)
    DeltaTable(str(copy.settings.lake / "ops" / "model_decisions")).delete("model_version = 1")
    assert _ml_findings(copy)["decision rows of the ledgered versions per ledger"] == (1, 0, False)


@pytest.mark.slow  # trains and scores a model on a generated lake
def test_model_monitoring_is_ledgered_and_reconciled_with_the_scoring(lake, tmp_path):
    [entry] = _ledger(lake, "ops.model_monitoring")
    [scored] = [r for r in _ledger(lake, "gold.user_segments") if r["run_id"] == "score-seg"]
    # three model inputs in (per-session views, carts, purchases), one monitoring row each out
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"], entry["is_balanced"]) == (3, 3, {}, True)
    assert entry["inputs"] == {"model": "shoplake-user-segments/1", "kind": "segments",
                               "rows_scored": scored["rows_in"]}
    users = rows(lake, "SELECT count(*) AS n FROM gold.user_features")[0]["n"]
    assert scored["rows_in"] == users > 0
    found = _ml_findings(lake)
    assert found["rows of the ledgered scorings per ledger"] == (3, 3, True)
    assert found["rows scored = rows in of the same run's prediction table per ledger"] == (users, users, True)
    # monitoring rows that summarise another number of rows than the scoring wrote
    copy = _copy(lake, tmp_path)
    DeltaTable(str(copy.settings.lake / "ops" / "model_monitoring")).update(
        updates={"rows": "rows - 1"})
    failures = {f.what for f in verify_lake(copy).failures}
    assert "rows scored = rows in of the same run's prediction table per ledger" in failures


def _predictions(lake: Lake, cutoff: dt.datetime, n: int) -> pa.Table:
    """`n` candidate pairs (with an event in the week before `cutoff`), as a scoring would write them."""
    pairs = rows(lake, f"""SELECT user_id, product_id, count(*) AS events FROM silver.events
                          WHERE event_at >= TIMESTAMPTZ '{(cutoff - dt.timedelta(days=7)).isoformat()}'
                            AND event_at < TIMESTAMPTZ '{cutoff.isoformat()}'
                          GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT {n}""")
    scored_at = dt.datetime.now(UTC)
    return pa.Table.from_pylist([
        {"user_id": p["user_id"], "product_id": p["product_id"], "probability": min(0.9, p["events"] / 50),
         "cutoff_at": cutoff, "horizon_days": 7, "user_rank": 1, "model_name": "shoplake-propensity",
         "model_version": 1, "scored_at": scored_at} for p in pairs], schema=tables.CONVERSION_PREDICTIONS.arrow_schema)


@pytest.mark.slow  # trains and scores a model on a generated lake
def test_prediction_outcomes_are_ledgered_with_the_open_windows_diverted(lake, tmp_path):
    lake = _copy(lake, tmp_path)  # this test writes predictions by hand: keep them out of the others
    spec = tables.CONVERSION_PREDICTIONS
    # a scoring whose label window [Oct 5, Oct 12) has passed (the data ends on Oct 14), then one whose has not
    passed = _predictions(lake, dt.datetime(2019, 10, 5, tzinfo=UTC), 2500)
    still_open = _predictions(lake, dt.datetime(2019, 10, 15, tzinfo=UTC), 1200)
    lake.store.write(spec.name, passed, mode="overwrite", meta={"write_key": "hand-1"})
    lake.store.write(spec.name, still_open, mode="overwrite", meta={"write_key": "hand-2"})
    written = monitoring.record_outcomes(lake, run_id="outcomes-1")
    [entry] = _ledger(lake, "gold.prediction_outcomes")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (3700, 2500, {"label_window_open": 1200})
    assert entry["is_balanced"] and entry["rows_written"] == written == 4  # bins 1-10, 11-100, 101-1000, the rest
    assert entry["inputs"]["scorings"] == 2 and entry["write_key"].startswith("ml-outcomes:gold.prediction_outcomes:v")
    bins = rows(lake, "SELECT sum(bin_candidates) AS n, min(candidates) AS c FROM gold.prediction_outcomes")[0]
    assert bins == {"n": 2500, "c": 2500}
    found = _ml_findings(lake)
    assert found["predictions folded into the rank bins per ledger"] == (2500, 2500, True)
    assert found["candidates of the evaluated scorings = rows of gold.conversion_predictions at their versions"] \
        == (2500, 2500, True)
    assert verify_lake(lake).ok, verify_lake(lake).failures
    # a bin lost behind shoplake's back
    DeltaTable(str(lake.settings.lake / "gold" / "prediction_outcomes")).delete("rank_from = 1")
    failures = {f.what for f in verify_lake(lake).failures}
    assert {"predictions folded into the rank bins per ledger", "rows in the table per ledger",
            "candidates of the evaluated scorings = rows of gold.conversion_predictions at their versions",
            "scorings whose bins disagree with their candidates or conversions"} <= failures
