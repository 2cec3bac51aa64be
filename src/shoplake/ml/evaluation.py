"""Honest evaluation of a ranking of candidates: metrics with bootstrap 95 % intervals.

Positives are rare (tens per validation cutoff), so a single number hides how little it is worth. Every
metric comes with a percentile interval from a stratified bootstrap: positives and negatives are
resampled separately (their counts fixed), as multiplicities, so one resample costs O(candidates) and every
metric of every model is computed on the *same* resamples (paired: the champion rule compares models on
them).

Metrics (all tie-aware: tied scores share their rank, as scikit-learn treats them):
ROC-AUC; PR-AUC (average precision); precision@k and recall@k for several k (tied candidates at the k-th
place count fractionally, the expectation under a random tie-break) and the precision the probabilities
predict for the same k places (mean probability there: top-k calibration); Brier score and its skill against
the best constant forecast (the observed rate of the resample); expected calibration error over
equal-mass bins of the predicted probability. Candidate coverage (the share of all conversions that were
candidates at all) does not depend on the model; `coverage` gives it with its interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (10, 100, 1000)
DEFAULT_RESAMPLES = 200
ECE_BINS = 10


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the evaluated rows and its bootstrap 95 % percentile interval."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def as_text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


class _Ranked:
    """One score vector prepared for weighted metrics: groups of tied scores, best first.

    Everything that does not depend on the resample's weights is computed here once; `metrics` then costs
    a few bincounts and dot products per resample (it runs for every model on every resample).
    """

    def __init__(self, y: np.ndarray, p: np.ndarray):
        order = np.argsort(-p, kind="stable")
        sorted_p = p[order]
        starts = np.r_[True, sorted_p[1:] != sorted_p[:-1]]
        self.group = np.empty(len(p), dtype=np.int64)
        self.group[order] = np.cumsum(starts) - 1  # 0 = the highest score
        self.n_groups = int(starts.sum())
        self.y = y
        self.p = p
        self.positives = np.flatnonzero(y == 1)  # few: their sums are taken over them alone
        self.positive_groups = np.unique(self.group[self.positives])
        self.squared_error = (p - y) ** 2
        # equal-mass calibration bins of the predicted probability, fixed on the evaluated rows
        edges = np.unique(np.quantile(p, np.linspace(0, 1, ECE_BINS + 1)[1:-1]))
        self.bin = np.searchsorted(edges, p, side="right")
        self.n_bins = len(edges) + 1

    def metrics(self, w: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
        p = self.p
        pos, pos_w = self.positives, w[self.positives]
        wp = w * p
        pos_g = np.bincount(self.group[pos], pos_w, self.n_groups)
        all_g = np.bincount(self.group, w, self.n_groups)
        total_pos, total = float(pos_w.sum()), float(all_g.sum())
        total_neg = total - total_pos
        cum_pos, cum_all = np.cumsum(pos_g), np.cumsum(all_g)
        # The sums over groups below only have terms in the groups that hold a positive.
        g = self.positive_groups
        out: dict[str, float] = {}
        # ROC-AUC: each positive beats the negatives of lower groups and ties half of its own group's.
        neg_below = total_neg - (cum_all[g] - cum_pos[g])
        neg_tied = all_g[g] - pos_g[g]
        out["roc_auc"] = _dot(pos_g[g], neg_below + neg_tied / 2) / (total_pos * total_neg)
        # PR-AUC as average precision: precision at the end of each group, weighted by its positives.
        precision = np.divide(cum_pos[g], cum_all[g], out=np.zeros(len(g)), where=cum_all[g] > 0)
        out["pr_auc"] = _dot(pos_g[g], precision) / total_pos
        predicted_g = np.bincount(self.group, wp, self.n_groups)
        cum_predicted = np.cumsum(predicted_g)
        for k in ks:
            # The groups ending at or before the k-th place count whole; the group holding the k-th place
            # contributes the fraction of it that fits.
            whole = int(np.searchsorted(cum_all, k, side="right"))
            hits = cum_pos[whole - 1] if whole else 0.0
            predicted = cum_predicted[whole - 1] if whole else 0.0
            if whole < self.n_groups:
                share = (k - (cum_all[whole - 1] if whole else 0.0)) / all_g[whole]
                hits += pos_g[whole] * share
                predicted += predicted_g[whole] * share
            out[f"precision_at_{k}"] = float(hits) / min(k, total)
            out[f"recall_at_{k}"] = float(hits) / total_pos
            # what the probabilities promise for the same places: calibration where the list is acted on
            out[f"predicted_precision_at_{k}"] = float(predicted) / min(k, total)
        rate = total_pos / total
        brier = _dot(w, self.squared_error) / total
        out["brier"] = brier
        out["brier_skill"] = 1.0 - brier / (rate * (1 - rate))
        bin_p = np.bincount(self.bin, wp, self.n_bins)
        bin_y = np.bincount(self.bin[pos], pos_w, self.n_bins)
        out["ece"] = float(np.sum(np.abs(bin_p - bin_y)) / total)
        return out


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Σ a·b without BLAS: numpy's dot hands one vector product to a BLAS thread pool, which costs more
    than the product when the cores are busy (measured: a resample's metrics took 3x longer under load)."""
    return float(np.einsum("i,i->", a, b))


def resample_weights(y: np.ndarray, *, resamples: int, seed: int):
    """Stratified bootstrap multiplicities, one vector per resample (positives and negatives separately).

    A generator: one vector at a time, so memory stays O(candidates) however many resamples.
    """
    rng = np.random.default_rng(seed)
    parts = [part for part in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)) if len(part)]
    for _ in range(resamples):
        w = np.zeros(len(y))
        for part in parts:
            w[part] = np.bincount(rng.integers(0, len(part), len(part)), minlength=len(part))
        yield w


def evaluate_scores(y: np.ndarray, scores: Mapping[str, np.ndarray], *, ks: Sequence[int] = DEFAULT_KS,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """Metrics with intervals of each score vector (probabilities), all on the same resamples.

    Returns model -> metric -> Estimate. Raises ValueError without both a positive and a negative.
    """
    paired = paired_draws(y, scores, ks=ks, resamples=resamples, seed=seed)
    return {name: {metric: estimate_from(point[metric], draws[metric]) for metric in point}
            for name, (point, draws) in paired.items()}


def paired_draws(y: np.ndarray, scores: Mapping[str, np.ndarray], *, ks: Sequence[int] = DEFAULT_KS,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                 ) -> dict[str, tuple[dict[str, float], dict[str, np.ndarray]]]:
    """Point values and the per-resample values of every metric, per model (same resamples for all)."""
    y = np.asarray(y, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("evaluation needs at least one positive and one negative candidate")
    ranked = {name: _Ranked(y, np.asarray(p, dtype=np.float64)) for name, p in scores.items()}
    points = {name: r.metrics(np.ones(len(y)), ks) for name, r in ranked.items()}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in ranked}
    for w in resample_weights(y, resamples=resamples, seed=seed):
        for name, r in ranked.items():
            rows[name].append(r.metrics(w, ks))
    return {name: (points[name], {m: np.array([row[m] for row in rows[name]]) for m in points[name]})
            for name in ranked}


def estimate_from(value: float, draws: np.ndarray) -> Estimate:
    """`value` with the 2.5 and 97.5 percentiles of its bootstrap `draws`."""
    low, high = np.percentile(draws, [2.5, 97.5])
    return Estimate(float(value), float(low), float(high))


def difference(point: Mapping[str, float], draws: Mapping[str, np.ndarray], other_point: Mapping[str, float],
               other_draws: Mapping[str, np.ndarray], metric: str) -> Estimate:
    """`metric` of one model minus another's, with the interval of the paired bootstrap difference."""
    return estimate_from(point[metric] - other_point[metric], draws[metric] - other_draws[metric])


def coverage(candidate_conversions: int, all_conversions: int, *, resamples: int = DEFAULT_RESAMPLES,
             seed: int = 0) -> Estimate:
    """Share of all conversions (pairs bought in the label window) that were candidates, with an interval."""
    if all_conversions == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    share = candidate_conversions / all_conversions
    draws = np.random.default_rng(seed).binomial(all_conversions, share, size=resamples) / all_conversions
    return estimate_from(share, draws)
