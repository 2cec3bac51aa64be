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
from scipy import sparse

DEFAULT_KS = (10, 100, 1000)
DEFAULT_RESAMPLES = 200
ECE_BINS = 10
# the weight sums of one resample, in the order of `_Ranked.sums`'s rows
_SUMS = ("segment", "top", "top_predicted", "bin_predicted", "squared_error")
# resamples whose weights are held at once by `paired_draws` (as one matrix of at most this many bytes)
_BATCH_BYTES = 32 * 1024 ** 2


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

    Everything that does not depend on the resample's weights is computed here once, down to a sparse
    matrix (`sums`) whose product with the weights gives every sum over the rows a resample needs; the rest
    of `metrics_from` works on those few sums. It runs for every model on every resample, so `paired_draws`
    multiplies each model's matrix with a batch of resamples at once.

    The rank metrics need the weight of the groups only where a positive is (ROC-AUC, PR-AUC) and near the
    top (precision@k): each row is mapped once to its *segment*, the positive group it is in or the run of
    groups between two positive groups, so a resample sums its weights into 2 x positives + 1 segments
    instead of one bin per distinct score; the best groups holding `top_rows` rows (the `top region`) keep
    their own sums for the k-th places. Every sum is the same sum of the same rows in the same order as
    one bin per group gives (counts are whole numbers), so the values are the same; a resample whose top
    region weighs no more than the largest k falls back to one bin per group.
    """

    def __init__(self, y: np.ndarray, p: np.ndarray, top_rows: int = 0):
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
        # segments: 2j = the groups between positive groups j - 1 and j, 2j + 1 = positive group j
        m = len(self.positive_groups)
        before = np.searchsorted(self.positive_groups, self.group, side="left")
        inside = (before < m) & (self.positive_groups[np.minimum(before, max(m - 1, 0))] == self.group) if m else 0
        self.segment = 2 * before + inside
        self.n_segments = 2 * m + 1
        self.positive_index = np.searchsorted(self.positive_groups, self.group[self.positives])
        # the top region: the best groups holding at least `top_rows` rows (all groups without a positive top_rows)
        sizes = np.diff(np.flatnonzero(np.r_[starts, True]))
        self.n_top = (min(self.n_groups, int(np.searchsorted(np.cumsum(sizes), top_rows, side="left")) + 1)
                      if top_rows > 0 else self.n_groups)
        self.top_rows = np.flatnonzero(self.group < self.n_top)  # in row order, as a bincount over all rows
        self.top_group = self.group[self.top_rows]
        top_positive = self.group[self.positives] < self.n_top
        self.top_positive_at = np.flatnonzero(top_positive)  # positions within self.positives
        self.top_positive_group = self.group[self.positives][top_positive]
        lengths = (self.n_segments, self.n_top, self.n_top, self.n_bins, 1)
        firsts = np.cumsum((0, *lengths[:-1]))
        # where each kind of sum lies among the rows of `sums`
        self.blocks = {name: slice(first, first + length)
                       for name, first, length in zip(_SUMS, firsts, lengths, strict=True)}
        self.sums = self._sums_matrix()

    def _sums_matrix(self) -> sparse.csc_array:
        """Every weight sum a resample needs as one row of a sparse matrix over the rows.

        Its product with a matrix of weights (a column per resample) gives the sums of many resamples in
        one call, in the order `_SUMS` names: per segment; per top group, the weight and the weight times
        the probability; per calibration bin, the weight times the probability; the weighted squared error.
        Every sum adds its terms in increasing row order, as a bincount does.

        Stored by column (CSC): the product then reads each row's weights once and adds them into its few
        sums (which stay in the cache), where by sum row (CSR) it read the whole weight matrix again for
        each kind of sum. The same additions in the same order, so the same values; the demo's 360,932
        validation candidates, six score vectors, 200 resamples: 2.1 s against 5.2 s (bench/RESULTS.md).
        """
        n, top = len(self.p), self.top_rows
        everything = np.arange(n)
        starts = [self.blocks[name].start for name in _SUMS]
        row = np.concatenate([starts[0] + self.segment, starts[1] + self.top_group, starts[2] + self.top_group,
                              starts[3] + self.bin, np.full(n, starts[4])])
        column = np.concatenate([everything, top, top, everything, everything])
        value = np.concatenate([np.ones(n), np.ones(len(top)), self.p[top], self.p, self.squared_error])
        # one term per (sum, row): the product adds a sum's terms in the order of the columns, increasing rows
        return sparse.coo_array((value, (row, column)), shape=(self.blocks[_SUMS[-1]].stop, n)).tocsc()

    def metrics(self, w: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
        """The metrics under the weights `w` (ones: on the evaluated rows; multiplicities: on a resample)."""
        return self.metrics_from(self.sums @ w, w, ks)

    def metrics_from(self, sums: np.ndarray, w: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
        """The metrics from the weight sums `self.sums @ w` (for many resamples at once: `paired_draws`)."""
        block = self.blocks
        pos, pos_w = self.positives, w[self.positives]
        m = len(self.positive_groups)
        # per positive group j: its positive weight, its whole weight, and the cumulative sums up to it
        pos_at = np.bincount(self.positive_index, pos_w, m)
        seg = sums[block["segment"]]
        cum_seg = np.cumsum(seg)
        total_pos, total = float(pos_w.sum()), float(seg.sum())
        total_neg = total - total_pos
        all_at, cum_all_at, cum_pos_at = seg[1::2], cum_seg[1::2], np.cumsum(pos_at)
        out: dict[str, float] = {}
        # ROC-AUC: each positive beats the negatives of lower groups and ties half of its own group's.
        neg_below = total_neg - (cum_all_at - cum_pos_at)
        neg_tied = all_at - pos_at
        out["roc_auc"] = _dot(pos_at, neg_below + neg_tied / 2) / (total_pos * total_neg)
        # PR-AUC as average precision: precision at the end of each group, weighted by its positives.
        precision = np.divide(cum_pos_at, cum_all_at, out=np.zeros(m), where=cum_all_at > 0)
        out["pr_auc"] = _dot(pos_at, precision) / total_pos
        # per group of the top region (all groups when it weighs too little for the largest k)
        all_g = sums[block["top"]]
        cum_all = np.cumsum(all_g)
        top_pos_w, top_pos_group = pos_w[self.top_positive_at], self.top_positive_group
        predicted_g = sums[block["top_predicted"]]
        if self.n_top < self.n_groups and not cum_all[-1] > max(ks, default=0):
            all_g = np.bincount(self.group, w, self.n_groups)
            cum_all = np.cumsum(all_g)
            top_pos_w, top_pos_group = pos_w, self.group[pos]
            predicted_g = np.bincount(self.group, w * self.p, self.n_groups)
        n_listed = len(all_g)
        pos_g = np.bincount(top_pos_group, top_pos_w, n_listed)
        cum_pos = np.cumsum(pos_g)
        cum_predicted = np.cumsum(predicted_g)
        for k in ks:
            # The groups ending at or before the k-th place count whole; the group holding the k-th place
            # contributes the fraction of it that fits.
            whole = int(np.searchsorted(cum_all, k, side="right"))
            hits = cum_pos[whole - 1] if whole else 0.0
            predicted = cum_predicted[whole - 1] if whole else 0.0
            if whole < n_listed:
                share = (k - (cum_all[whole - 1] if whole else 0.0)) / all_g[whole]
                hits += pos_g[whole] * share
                predicted += predicted_g[whole] * share
            out[f"precision_at_{k}"] = float(hits) / min(k, total)
            out[f"recall_at_{k}"] = float(hits) / total_pos
            # what the probabilities promise for the same places: calibration where the list is acted on
            out[f"predicted_precision_at_{k}"] = float(predicted) / min(k, total)
        rate = total_pos / total
        brier = float(sums[block["squared_error"]][0]) / total
        out["brier"] = brier
        out["brier_skill"] = 1.0 - brier / (rate * (1 - rate))
        bin_p = sums[block["bin_predicted"]]
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
    return estimates_of(paired_draws(y, scores, ks=ks, resamples=resamples, seed=seed))


def estimates_of(paired: Mapping[str, tuple[dict[str, float], dict[str, np.ndarray]]]
                 ) -> dict[str, dict[str, Estimate]]:
    """`paired_draws` as model -> metric -> Estimate."""
    return {name: {metric: estimate_from(point[metric], draws[metric]) for metric in point}
            for name, (point, draws) in paired.items()}


def point_metrics(y: np.ndarray, p: np.ndarray, *, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """The metrics of one score vector on the evaluated rows (no resampling)."""
    y = np.asarray(y, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("evaluation needs at least one positive and one negative candidate")
    return _Ranked(y, np.asarray(p, dtype=np.float64)).metrics(np.ones(len(y)), ks)


def paired_draws(y: np.ndarray, scores: Mapping[str, np.ndarray], *, ks: Sequence[int] = DEFAULT_KS,
                 resamples: int = DEFAULT_RESAMPLES, seed: int = 0
                 ) -> dict[str, tuple[dict[str, float], dict[str, np.ndarray]]]:
    """Point values and the per-resample values of every metric, per model (same resamples for all)."""
    y = np.asarray(y, dtype=np.float64)
    if y.min() == y.max():
        raise ValueError("evaluation needs at least one positive and one negative candidate")
    top_rows = 4 * max(ks, default=0) + 1000  # a top region that outweighs the largest k (else: all groups)
    ranked = {name: _Ranked(y, np.asarray(p, dtype=np.float64), top_rows) for name, p in scores.items()}
    points = {name: r.metrics(np.ones(len(y)), ks) for name, r in ranked.items()}
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in ranked}
    # A model's sums of a batch of resamples come from one sparse product: its rows are read once per
    # batch, not once per resample.
    batch = max(1, min(resamples, _BATCH_BYTES // (8 * len(y))))
    weights = np.empty((len(y), batch))
    for i, w in enumerate(resample_weights(y, resamples=resamples, seed=seed)):
        weights[:, i % batch] = w
        if i % batch == batch - 1 or i == resamples - 1:
            held = weights[:, :i % batch + 1]
            for name, r in ranked.items():
                sums = r.sums @ held
                rows[name].extend(r.metrics_from(sums[:, j], held[:, j], ks) for j in range(held.shape[1]))
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
