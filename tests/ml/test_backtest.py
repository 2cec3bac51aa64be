"""`shoplake ml backtest propensity`: rolling origin over 3 cutoffs, baselines and intervals, logged to MLflow."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from shoplake.ml import assessment, features
from shoplake.ml.params import PropensityParams
from shoplake.ml.tracking import Tracker

from .lakes import open_lake, run_cli_main


def test_fold_plans_step_back_and_never_read_past_their_label_window(shop_lake):
    lake, _ = shop_lake
    with lake.engine() as engine:
        features.bind(lake, engine, "silver.events")
        first, last = features.event_span(engine)
    params = PropensityParams()
    latest = features.plan_cutoffs(first, last, params.window)
    plans = assessment.fold_plans(first, last, params, folds=3, step_days=3)
    assert [p.validation for p in plans] == [latest.validation - timedelta(days=d) for d in (6, 3, 0)]
    for plan in plans:
        plan.check()
        assert plan.scoring == plan.validation + plan.horizon  # the fold's data ends with its label window
        assert max(plan.train) + plan.horizon <= plan.validation and len(plan.train) >= 2


def test_cli_backtest_prints_every_fold_against_the_baselines_and_logs_to_mlflow(shop_lake, tmp_path, monkeypatch,
                                                                                 capsys):
    lake, _ = shop_lake
    store = tmp_path / "backtest.db"
    monkeypatch.setenv("SHOPLAKE_MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    code, out, err = run_cli_main(monkeypatch, capsys, "--lake", str(lake.settings.lake), "ml", "backtest",
                                  "propensity", "--model", "logistic_regression", "--resamples", "50")
    assert code == 0, err
    print("\n" + out)
    assert out.count("evaluation cutoff") == 3
    for name in ("logistic_regression (chosen)", "baseline.popularity", "baseline.user_activity",
                 "baseline.activity_x_popularity"):
        assert out.count(name) == 3, name
    assert "the chosen model beats the best baseline on PR-AUC in" in out
    tracker = Tracker(open_lake(lake.settings.lake, mlflow_tracking_uri=f"sqlite:///{store}").settings)
    runs = tracker.runs("shoplake-propensity")
    assert list(runs["tags.shoplake.run_type"]) == ["backtest"]
    run = runs.iloc[0]
    local = tracker.mlflow.artifacts.download_artifacts(run_id=run["run_id"], artifact_path="backtest.json",
                                                        dst_path=str(tmp_path))
    folds = json.loads(Path(local).read_text())["folds"]
    assert [f["cutoff"] for f in folds] == sorted(f["cutoff"] for f in folds) and len(folds) == 3
    for i, fold in enumerate(folds, 1):
        assert fold["positives"] > 0 and fold["conversions"] >= fold["positives"]
        lr = fold["metrics"]["logistic_regression"]["pr_auc"]
        assert lr["low"] <= lr["value"] <= lr["high"]
        assert run[f"metrics.fold{i}.logistic_regression.pr_auc"] == lr["value"]
        assert fold["coverage"]["value"] == fold["positives"] / fold["conversions"]


def test_cli_backtest_refuses_segments_in_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run_cli_main(monkeypatch, capsys, "--lake", str(tmp_path), "ml", "backtest", "segments")
    assert code == 1
    assert err.strip() == "error: only propensity can be backtested (got segments): segments have no later outcome"
