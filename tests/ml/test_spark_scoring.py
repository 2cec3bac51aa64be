"""Scoring on Spark (`shoplake --engine spark ml score`) writes the same predictions as embedded scoring.

One small generated lake is built and its champions trained once; the lake (with its MLflow
store) is then copied, one copy is scored embedded and the other on Spark (MLflow's Spark UDF in a
local Spark session, the one session of this module), and every prediction table is compared row by
row: integers and names equal, floats to 1e-9 relative. (The recommender refits its method in the
scoring process on both engines: its tables must come out the same too.)
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from shoplake.lake import Lake  # noqa: E402
from shoplake.layers import ml as ml_tables  # noqa: E402
from shoplake.ml import ScoreResult, score_models, train_model  # noqa: E402

from .lakes import built_lake, open_lake, rows, run_cli_main  # noqa: E402

CLICK_EVENTS = 300_000
RETAIL_ROWS = 20_000
SEED = 11
KINDS = ["segments", "rfm", "propensity", "recommender"]
RELATIVE = 1e-9
PREDICTION_TABLES = [spec.name for spec in (ml_tables.USER_SEGMENTS, ml_tables.USER_SEGMENT_PROFILES,
                                            ml_tables.CUSTOMER_SEGMENTS, ml_tables.CUSTOMER_SEGMENT_PROFILES,
                                            ml_tables.CONVERSION_PREDICTIONS, ml_tables.USER_RECOMMENDATIONS,
                                            ml_tables.SIMILAR_PRODUCTS)]


class Scored:
    """The same trained lake scored twice: embedded, and on Spark (a copy; read back through DuckDB)."""

    def __init__(self, embedded: Lake, spark: Lake, spark_results: list[ScoreResult]):
        self.embedded, self.spark_results = embedded, spark_results
        self.spark = open_lake(spark.settings.lake)  # the tables written on Spark, read embedded


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Scored:
    root = tmp_path_factory.mktemp("spark-scoring")
    lake, _ = built_lake(root, click_events=CLICK_EVENTS, retail_rows=RETAIL_ROWS, seed=SEED, click_days=30,
                         lake_name="embedded")
    # Trained as `shoplake --engine spark ml train` would: training stays on the embedded engine.
    for kind in KINDS:
        train_model(open_lake(root / "embedded", engine="spark"), kind, run_id=f"train-{kind}")
    # The copy holds the same tables and the same MLflow store (its registry points at the same artifacts).
    shutil.copytree(root / "embedded", root / "spark")
    spark_lake = open_lake(root / "spark", engine="spark", spark_driver_memory="1g")
    # The four kinds trained above (CLV has its own tests: tests/ml/test_clv.py).
    score_models(lake, run_id="score-embedded", kinds=KINDS)
    spark_results = score_models(spark_lake, run_id="score-spark", kinds=KINDS)
    return Scored(lake, spark_lake, spark_results)


def _table(lake: Lake, name: str) -> list[dict]:
    spec = lake.catalog.get(name)
    order = ", ".join(spec.grain)
    return rows(lake, f"SELECT * EXCLUDE (scored_at) FROM {name} ORDER BY {order}")


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0


@pytest.mark.parametrize("name", PREDICTION_TABLES)
def test_spark_scoring_writes_the_embedded_predictions_row_for_row(scored, name):
    embedded, spark = _table(scored.embedded, name), _table(scored.spark, name)
    assert len(embedded) == len(spark) > 0
    largest_abs = largest_rel = 0.0
    for left, right in zip(embedded, spark, strict=True):
        assert left.keys() == right.keys()
        for column, value in left.items():
            other = right[column]
            if isinstance(value, float) and not (value is None or other is None):
                if math.isnan(value) or math.isnan(other):
                    assert math.isnan(value) and math.isnan(other), (name, column, left, right)
                    continue
                largest_abs = max(largest_abs, abs(value - other))
                largest_rel = max(largest_rel, _relative(value, other))
                assert other == pytest.approx(value, rel=RELATIVE, abs=0.0), (name, column, left, right)
            else:
                assert value == other, (name, column, left, right)
    print(f"\n{name}: {len(embedded)} rows, max abs diff {largest_abs:.3g}, max rel diff {largest_rel:.3g}")


def test_probabilities_are_not_constant_so_the_comparison_can_fail(scored):
    # Equal tables would prove little if every probability were the same number.
    found = rows(scored.spark, "SELECT count(DISTINCT probability) AS n, count(DISTINCT user_id) AS users "
                               "FROM gold.conversion_predictions")[0]
    assert found["n"] > 100 and found["users"] > 100


def test_spark_scoring_goes_through_the_same_checks_ledger_and_write_keys(scored):
    assert {r.table for r in scored.spark_results} == set(PREDICTION_TABLES)
    assert not any(r.skipped for r in scored.spark_results)
    for result in scored.spark_results:
        commit = scored.spark.store.history(result.table, 1)[0]
        assert commit.meta["write_key"] == f"ml:{result.table}:score-spark"
        assert int(commit.meta["model_version"]) == result.model_version
    ledger = rows(scored.spark, "SELECT table_name, rows_written FROM ops.ledger WHERE run_id = 'score-spark' "
                                "AND write_key LIKE 'ml:%'")  # the prediction tables (not the monitoring log)
    assert {r["table_name"]: r["rows_written"] for r in ledger} == {r.table: r.rows_written
                                                                     for r in scored.spark_results}
    checked = rows(scored.spark, "SELECT DISTINCT table_name FROM ops.data_quality WHERE run_id = 'score-spark'")
    assert {r["table_name"] for r in checked} == set(PREDICTION_TABLES)


def test_cli_engine_spark_ml_score_again_writes_nothing(scored, monkeypatch, capsys):
    versions = {name: scored.spark.store.version(name) for name in PREDICTION_TABLES}
    code, out, err = run_cli_main(monkeypatch, capsys, "--lake", str(Path(scored.spark.settings.lake)),
                                  "--engine", "spark", "ml", "score", *(f"--kind={k}" for k in KINDS))
    assert code == 0, err
    # Same champion, same input versions: the predictions computed on Spark are already in the tables.
    assert out.count("(already written)") == len(PREDICTION_TABLES), out
    assert {name: scored.spark.store.version(name) for name in PREDICTION_TABLES} == versions
