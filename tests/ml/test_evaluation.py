"""Metrics with bootstrap intervals (`shoplake.ml.evaluation`): exact against scikit-learn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from shoplake.ml import evaluation


def _rare(seed: int, n: int = 20_000):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.01).astype(int)
    # rounded so that many scores tie, signal for the positives
    p = np.round(np.clip(rng.random(n) * 0.02 + y * rng.random(n) * 0.05, 0, 1), 3)
    return y, p


def test_point_values_equal_scikit_learn_with_ties():
    y, p = _rare(1)
    m = evaluation.evaluate_scores(y, {"m": p}, resamples=20, seed=1)["m"]
    assert len(np.unique(p)) < len(p) / 10  # many ties
    assert m["roc_auc"].value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["pr_auc"].value == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["brier"].value == pytest.approx(brier_score_loss(y, p), abs=1e-15)
    rate = y.mean()
    assert m["brier_skill"].value == pytest.approx(1 - brier_score_loss(y, p) / (rate * (1 - rate)))


def test_precision_and_recall_at_k_share_tied_places_fairly():
    y = np.array([1, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])  # one sure hit, then four tied for places 2..5
    m = evaluation.evaluate_scores(y, {"m": p}, ks=(1, 3, 10), resamples=10)["m"]
    assert m["precision_at_1"].value == 1.0
    # places 2-3 go to two of the four tied rows, of which one is a positive: expected hits 1 + 2/4
    assert m["precision_at_3"].value == pytest.approx(1.5 / 3)
    assert m["recall_at_3"].value == pytest.approx(1.5 / 2)
    assert m["precision_at_10"].value == pytest.approx(2 / 6)  # k beyond the candidates: all of them
    assert m["recall_at_10"].value == 1.0
    assert m["predicted_precision_at_1"].value == pytest.approx(0.9)
    assert m["predicted_precision_at_3"].value == pytest.approx((0.9 + 2 * 0.5) / 3)


def test_expected_calibration_error_by_hand():
    # 10 equal-mass bins: each pair of rows is a bin; predicted 0.5 where half happen -> 0, else |p - y|
    y = np.array([0, 1] * 5 + [0, 0] * 5)
    p = np.array([0.5] * 10 + [0.2] * 10)
    m = evaluation.evaluate_scores(y, {"m": p}, resamples=10)["m"]
    assert m["ece"].value == pytest.approx(0.5 * 0 + 0.5 * 0.2)


def test_intervals_hold_the_value_and_narrow_with_more_positives():
    y, p = _rare(2, 5_000)
    large = evaluation.evaluate_scores(np.tile(y, 8), {"m": np.tile(p, 8)}, resamples=200, seed=3)["m"]
    small = evaluation.evaluate_scores(y, {"m": p}, resamples=200, seed=3)["m"]
    for metric in ("roc_auc", "pr_auc", "precision_at_100", "brier_skill"):
        assert small[metric].low <= small[metric].value <= small[metric].high, metric
        assert large[metric].half_width < small[metric].half_width, metric


def test_the_bootstrap_keeps_the_positive_count_and_pairs_models():
    y, p = _rare(4, 2_000)
    for w in evaluation.resample_weights(y, resamples=5, seed=1):
        assert w[y == 1].sum() == y.sum() and w.sum() == len(y)
    draws = evaluation.paired_draws(y, {"a": p, "b": p.copy(), "c": p ** 2}, resamples=50, seed=2)
    same = evaluation.difference(*draws["a"], *draws["b"], "pr_auc")
    assert same.value == same.low == same.high == 0.0  # the same resamples for every model
    monotone = evaluation.difference(*draws["a"], *draws["c"], "roc_auc")
    assert monotone.low == monotone.high == 0.0  # a monotone transform ranks identically


def test_coverage_interval_and_evaluation_without_positives():
    c = evaluation.coverage(19, 3_194, resamples=500, seed=1)  # the audit's 0.6 %
    assert c.value == pytest.approx(19 / 3_194) and c.low < c.value < c.high < 0.01
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        evaluation.evaluate_scores(np.zeros(5), {"m": np.ones(5)})


def _per_group_metrics(y: np.ndarray, p: np.ndarray, w: np.ndarray, ks) -> dict[str, float]:
    """The metrics with one weight sum per distinct score (how `_Ranked` computed them before it summed
    by segments): the reference the faster sums must equal exactly."""
    order = np.argsort(-p, kind="stable")
    starts = np.r_[True, p[order][1:] != p[order][:-1]]
    group = np.empty(len(p), dtype=np.int64)
    group[order] = np.cumsum(starts) - 1
    n = int(starts.sum())
    pos = np.flatnonzero(y == 1)
    pos_g, all_g = np.bincount(group[pos], w[pos], n), np.bincount(group, w, n)
    total_pos, total = float(w[pos].sum()), float(all_g.sum())
    total_neg = total - total_pos
    cum_pos, cum_all = np.cumsum(pos_g), np.cumsum(all_g)
    g = np.unique(group[pos])
    out = {"roc_auc": float(np.einsum("i,i->", pos_g[g], total_neg - (cum_all[g] - cum_pos[g])
                                      + (all_g[g] - pos_g[g]) / 2)) / (total_pos * total_neg),
           "pr_auc": float(np.einsum("i,i->", pos_g[g], np.divide(cum_pos[g], cum_all[g], out=np.zeros(len(g)),
                                                                  where=cum_all[g] > 0))) / total_pos}
    predicted_g = np.bincount(group, w * p, n)
    cum_predicted = np.cumsum(predicted_g)
    for k in ks:
        whole = int(np.searchsorted(cum_all, k, side="right"))
        hits = cum_pos[whole - 1] if whole else 0.0
        predicted = cum_predicted[whole - 1] if whole else 0.0
        if whole < n:
            share = (k - (cum_all[whole - 1] if whole else 0.0)) / all_g[whole]
            hits += pos_g[whole] * share
            predicted += predicted_g[whole] * share
        out[f"precision_at_{k}"] = float(hits) / min(k, total)
        out[f"recall_at_{k}"] = float(hits) / total_pos
        out[f"predicted_precision_at_{k}"] = float(predicted) / min(k, total)
    return out


@pytest.mark.parametrize("top_rows", [0, 1, 50, 10_000])
def test_segment_sums_equal_one_sum_per_distinct_score(top_rows):
    # Sums by segment (positive groups and the runs between them) and a top region for the k-th places give
    # the very numbers of one weight sum per distinct score, on the rows and on resamples; a top region lighter
    # than the largest k (top_rows 1 or 50 here, and resamples that drop rows) falls back to all groups.
    y, p = _rare(7, 6_000)
    p = np.where(np.random.default_rng(3).random(len(p)) < 0.5, p, np.round(p, 2))  # ties and singletons
    ks = (5, 100, 1000)
    ranked = evaluation._Ranked(y.astype(float), p, top_rows)
    weights = [np.ones(len(y)), *evaluation.resample_weights(y, resamples=20, seed=5)]
    for w in weights:
        got, want = ranked.metrics(w, ks), _per_group_metrics(y, p, w, ks)
        assert {k: got[k] for k in want} == want


@pytest.mark.parametrize("batch", [1, 3, 7, 50])
def test_batched_resamples_equal_one_resample_at_a_time(monkeypatch, batch):
    # paired_draws multiplies a batch of resamples' weights with every model's sum matrix at once; the last
    # batch is partial for 3 and 7 (20 resamples). Each draw must be the metrics of its own resample.
    y, p = _rare(5, 3_000)
    scores = {"a": p, "b": np.round(p, 2)}
    monkeypatch.setattr(evaluation, "_BATCH_BYTES", batch * 8 * len(y))
    draws = evaluation.paired_draws(y, scores, ks=(5, 100), resamples=20, seed=4)
    weights = list(evaluation.resample_weights(y.astype(float), resamples=20, seed=4))
    for name, score in scores.items():
        ranked = evaluation._Ranked(y.astype(float), score, 4 * 100 + 1000)
        for i, w in enumerate(weights):
            want = ranked.metrics(w, (5, 100))
            assert {m: draws[name][1][m][i] for m in want} == want
