"""Conversion propensity: beats the popularity baseline on the later window, calibrated, scored at the end."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np

from shoplake.ml import features, propensity

from .lakes import rows


def test_propensity_beats_the_popularity_baseline_on_the_later_window(trained):
    result = trained.train["propensity"]
    models = result.details["models"]
    plan = result.details["plan"]
    lines = [f"{name:20s} ROC-AUC {m['val_roc_auc']:.4f}  PR-AUC {m['val_pr_auc']:.4f}  log loss "
             f"{m['val_log_loss']:.6f}  Brier {m['val_brier']:.7f}  top-decile lift {m['val_top_decile_lift']:.2f}"
             for name, m in models.items()]
    print(f"\npropensity (validation cutoff {plan['validation_cutoff']}, training cutoffs "
          f"{[c[:10] for c in plan['train_cutoffs']]}; {int(result.metrics['val_positives'])} positives in "
          f"{int(result.metrics['val_candidates']):,} candidates; chosen {result.details['chosen']}; trained in "
          f"{trained.seconds['propensity']:.1f}s)\n" + "\n".join(lines))
    baseline = models["popularity"]["val_roc_auc"]
    assert models["logistic_regression"]["val_roc_auc"] > baseline
    assert models["gradient_boosting"]["val_roc_auc"] > baseline
    assert result.metrics["val_roc_auc"] == max(m["val_roc_auc"] for m in models.values())
    assert result.metrics["baseline_val_roc_auc"] == baseline
    # validation comes after every training cutoff (time split, never random)
    assert all(c < plan["validation_cutoff"] for c in plan["train_cutoffs"])


def test_propensity_probabilities_are_calibrated(trained):
    metrics = trained.train["propensity"].metrics
    rate, mean = metrics["val_positive_rate"], metrics["val_mean_probability"]
    # Brier below that of the best constant forecast (the positive rate), mean forecast near the rate
    assert 0 <= metrics["val_brier"] <= rate * (1 - rate)
    assert rate / 3 <= mean <= rate * 3
    assert math.isfinite(metrics["val_log_loss"])


def test_top_decile_lift_counts_the_best_tenth():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1] * 10)
    p = np.where(y == 1, 0.9, 0.1)
    assert propensity.top_decile_lift(y, p) == 5.0  # 10 of the top 10 are positive; the rate is 0.2
    assert propensity.top_decile_lift(y, 1 - p) == 0.0


def test_conversion_predictions_score_every_candidate_of_the_latest_cutoff(trained):
    lake = trained.lake
    last = rows(lake, "SELECT max(event_at) AS last FROM silver.events")[0]["last"]
    expected_cutoff = last.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    summary = rows(lake, """SELECT count(*) AS n, min(cutoff_at) AS lo, max(cutoff_at) AS hi, min(probability) AS pmin,
                                   max(probability) AS pmax, count(DISTINCT model_version) AS versions,
                                   max(horizon_days) AS horizon, min(user_rank) AS first_rank
                            FROM gold.conversion_predictions""")[0]
    assert summary["lo"] == summary["hi"] == expected_cutoff
    lookback = trained.train["propensity"].details["plan"]["lookback_days"]
    candidates = rows(lake, f"""SELECT count(*) AS n FROM (SELECT DISTINCT user_id, product_id FROM silver.events
                                WHERE event_at >= TIMESTAMPTZ '{expected_cutoff.isoformat()}' - INTERVAL {lookback} DAY
                                  AND event_at < TIMESTAMPTZ '{expected_cutoff.isoformat()}')""")[0]["n"]
    assert summary["n"] == candidates
    assert 0.0 <= summary["pmin"] <= summary["pmax"] <= 1.0
    assert summary["versions"] == 1 and summary["first_rank"] == 1
    assert summary["horizon"] == trained.train["propensity"].details["plan"]["horizon_days"]
    ranks = rows(lake, """SELECT count(*) AS bad FROM (
                            SELECT user_id, max(user_rank) AS top, count(*) AS n FROM gold.conversion_predictions
                            GROUP BY user_id) WHERE top <> n""")
    assert ranks[0]["bad"] == 0


def test_scoring_cutoff_is_after_every_labelled_window(trained):
    plan = trained.train["propensity"].details["plan"]
    cutoff = rows(trained.lake, "SELECT max(cutoff_at) AS c FROM gold.conversion_predictions")[0]["c"]
    horizon = timedelta(days=plan["horizon_days"])
    assert cutoff >= datetime.fromisoformat(plan["scoring_cutoff"])
    assert datetime.fromisoformat(plan["validation_cutoff"]) + horizon <= cutoff
    for train_cutoff in plan["train_cutoffs"]:
        assert datetime.fromisoformat(train_cutoff) + horizon <= datetime.fromisoformat(plan["validation_cutoff"])


def test_feature_list_is_what_the_registered_model_reads(trained):
    from mlflow.models import Model

    from shoplake.ml.tracking import Tracker

    tracker = Tracker(trained.lake.settings)
    champion = tracker.champion("shoplake-propensity")
    info = Model.load(f"models:/shoplake-propensity/{champion.version}")
    expected = features.BASELINE_FEATURES if info.metadata["model"] == "popularity" else features.PAIR_FEATURES
    assert tuple(info.metadata["features"]) == expected
    assert [c["name"] for c in info.signature.inputs.to_dict()] == list(expected)


def test_baselines_fit_on_distinct_scores_give_the_row_by_row_probabilities():
    # The Platt fit of a baseline rule runs on the distinct (score, label) pairs with summed weights: the same
    # weighted likelihood as row by row, so the same probabilities (to rounding).
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)

    def frame(n: int) -> pd.DataFrame:
        up, uc, pp = rng.poisson(0.3, n), rng.poisson(0.8, n), rng.poisson(3, n)
        y = (rng.random(n) < 0.003 * (1 + up + 0.1 * pp)).astype(int)
        return pd.DataFrame({"user_purchases": up, "user_carts": uc, "product_purchases": pp, "label": y,
                             "weight": np.where(y == 1, 1.0, rng.choice([1.0, 5.0], n))})

    cal, validation = frame(30_000), frame(50_000)
    got = propensity.baseline_probabilities(cal, validation)
    for name in propensity.BASELINES:
        x = np.log1p(propensity.baseline_score(name, cal)).reshape(-1, 1)
        row_by_row = LogisticRegression().fit(x, cal["label"], sample_weight=cal["weight"])
        want = row_by_row.predict_proba(np.log1p(propensity.baseline_score(name, validation)).reshape(-1, 1))[:, 1]
        assert np.abs(got[name] - want).max() < 1e-9, name
    x, w, y = propensity.aggregate_pairs(np.array([1.0, 1.0, 2.0, 1.0]), np.array([0, 1, 0, 0]),
                                         np.array([2.0, 1.0, 3.0, 5.0]))
    assert (x.tolist(), w.tolist(), y.tolist()) == ([1.0, 1.0, 2.0], [7.0, 1.0, 3.0], [0, 1, 0])


def test_model_input_is_float64_with_every_null_as_zero():
    """Counts arrive as nullable integers (NA), rates as floats (NaN): both become 0.0, nothing else moves."""
    import pandas as pd

    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [0.5, float("nan"), float("inf")],
                          "c": pd.array([7, 8, 9], dtype="int32"), "skipped": ["x", "y", "z"]},
                         index=[10, 11, 12])
    matrix = features.as_matrix(frame, ("c", "a", "b"))
    assert list(matrix.columns) == ["c", "a", "b"] and list(matrix.index) == [10, 11, 12]
    assert (matrix.dtypes == np.float64).all()
    assert matrix.to_numpy().tolist() == [[7.0, 1.0, 0.5], [8.0, 0.0, 0.0], [9.0, 3.0, float("inf")]]


def test_importance_sample_is_every_positive_and_the_seeded_negatives():
    """The rows permutation importance is measured on: the same as sampling a copy of the negative rows."""
    import pandas as pd

    rng = np.random.default_rng(3)
    validation = pd.DataFrame({"label": (rng.random(2_000) < 0.05).astype(int), "x": rng.random(2_000)},
                              index=rng.permutation(2_000) + 100)
    positives = validation[validation["label"] == 1]
    negatives = validation[validation["label"] == 0].sample(n=300, random_state=7)
    expected = pd.concat([positives, negatives])
    label = validation["label"].to_numpy()
    rows = propensity.importance_rows(label, max_negatives=300, seed=7)
    assert validation.iloc[rows].equals(expected)
