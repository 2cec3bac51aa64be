"""K-means segmentation with k chosen by silhouette or bootstrap stability, clusters named by rules.

Used by the behavioural user segments (this module) and the RFM segments (`shoplake.ml.rfm`). The
model is a scikit-learn pipeline `log1p -> standardise -> K-means` over raw, business-readable inputs,
so the registered model takes the same columns a person would look at. Cluster labels are renumbered
so that `segment_id` grows with the segment's value (`value_order`), which keeps ids stable across
retrains of the same data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, pairwise_distances, silhouette_samples, silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from shoplake.errors import ConfigError, InsufficientDataError
from shoplake.ml.params import RFMParams, SegmentParams

log = logging.getLogger(__name__)


@dataclass
class KSelection:
    """The k search: inertia (elbow) and sample silhouette per k, and the k chosen."""

    ks: list[int]
    inertias: list[float]
    silhouettes: list[float]
    chosen_k: int
    stabilities: list[float] | None = None  # mean bootstrap ARI per k (k_criterion "stability")

    @property
    def silhouette(self) -> float:
        return self.silhouettes[self.ks.index(self.chosen_k)]


@dataclass
class SegmentFit:
    """A fitted segmentation: the pipeline, each row's segment and the segment names."""

    model: Pipeline
    selection: KSelection
    segment_ids: np.ndarray
    names: dict[int, str]
    sample_index: np.ndarray  # rows used for silhouettes (for champion comparisons on the same rows)


def transform_pipeline() -> Pipeline:
    """log1p then standardisation: counts and money are heavy-tailed."""
    return Pipeline([("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
                     ("scale", StandardScaler())])


def sample_index(n: int, size: int, seed: int) -> np.ndarray:
    """Seeded sample of row positions (all rows when n <= size), sorted."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def select_k(X: pd.DataFrame, params: SegmentParams | RFMParams) -> tuple[KSelection, dict[int, Pipeline], np.ndarray]:
    """Fit K-means for every k in range; choose the k with the best silhouette on a seeded sample.

    Ties within `params.k_tolerance` go to the smaller k. Returns the selection, the fitted pipelines by
    k and the sampled rows.
    """
    n = len(X)
    if n < max(params.k_max, 3) * 2:
        raise InsufficientDataError(f"only {n} rows to segment; need at least {max(params.k_max, 3) * 2} "
                            f"(ingest more data and run `shoplake build`)")
    if not 2 <= params.k_min <= params.k_max:
        raise ConfigError(f"k range [{params.k_min}, {params.k_max}] is invalid: need 2 <= k_min <= k_max")
    prep = transform_pipeline().fit(X)
    Z = prep.transform(X)
    rows = sample_index(n, params.silhouette_sample, params.random_state)
    ks, inertias, silhouettes, fitted = [], [], [], {}
    with threadpool_limits(1, user_api="openmp"):
        # The sample's distances do not depend on k: computed once, read by every k's silhouette.
        distances = pairwise_distances(Z[rows])
        for k in range(params.k_min, params.k_max + 1):
            km = KMeans(n_clusters=k, n_init=params.n_init, random_state=params.random_state).fit(Z)
            labels = km.labels_
            sil = (float(silhouette_score(distances, labels[rows], metric="precomputed"))
                   if len(set(labels[rows])) > 1 else -1.0)
            ks.append(k)
            inertias.append(float(km.inertia_))
            silhouettes.append(sil)
            fitted[k] = Pipeline([("log1p", prep.named_steps["log1p"]), ("scale", prep.named_steps["scale"]),
                                  ("kmeans", km)])
            log.debug("k=%d inertia=%.1f silhouette=%.4f", k, km.inertia_, sil)
    if params.k_criterion == "stability":
        stabilities = [_stability(Z[rows], fitted[k].named_steps["kmeans"].labels_[rows], k, params) for k in ks]
        best = max(stabilities)
        # a reproducible segmentation first; among equally reproducible ones, the better separated
        chosen = max((k for k, a in zip(ks, stabilities, strict=True) if a >= best - 0.01),
                     key=lambda k: silhouettes[ks.index(k)])
        return KSelection(ks, inertias, silhouettes, chosen, stabilities), fitted, rows
    if params.k_criterion != "silhouette":
        raise ConfigError(f"unknown k_criterion {params.k_criterion!r}: expected silhouette or stability")
    best = max(silhouettes)
    chosen = min(k for k, s in zip(ks, silhouettes, strict=True) if s >= best - params.k_tolerance)
    return KSelection(ks, inertias, silhouettes, chosen), fitted, rows


def _stability(Z: np.ndarray, labels: np.ndarray, k: int, params: SegmentParams | RFMParams) -> float:
    """Mean adjusted Rand index between `labels` and K-means refitted on bootstrap resamples of the rows."""
    rng = np.random.default_rng(params.random_state)
    scores = []
    with threadpool_limits(1, user_api="openmp"):
        for b in range(params.stability_resamples):
            resample = rng.integers(0, len(Z), len(Z))
            km = KMeans(n_clusters=k, n_init=min(params.n_init, 4), random_state=params.random_state + b + 1)
            scores.append(adjusted_rand_score(labels, km.fit(Z[resample]).predict(Z)))
    return float(np.mean(scores))


def renumber(model: Pipeline, values: np.ndarray) -> np.ndarray:
    """Reorder the K-means centres so that segment ids grow with the mean of `values` (one per row).

    Returns the new segment id of every row the model was fitted on.
    """
    km: KMeans = model.named_steps["kmeans"]
    labels = km.labels_
    means = pd.Series(np.asarray(values, dtype=float)).groupby(labels).mean()
    means = means.reindex(range(km.n_clusters)).fillna(-np.inf)
    order = np.lexsort((np.arange(km.n_clusters), means.to_numpy()))  # ascending value, ties by old label
    new_of_old = np.empty_like(order)
    new_of_old[order] = np.arange(len(order))
    km.cluster_centers_ = km.cluster_centers_[order]
    km.labels_ = new_of_old[labels]
    return km.labels_.copy()


def assign_names(profile: pd.DataFrame, rules: Sequence[tuple[str, str, str]],
                 extra: Sequence[tuple[str, str, str]], k: int) -> dict[int, str]:
    """Name segments by rules applied in order, each taking one not-yet-named segment.

    Args:
        profile: one row per segment_id (index) with the columns the rules read.
        rules: (name, column, "max"|"min") always applied (as long as segments remain).
        extra: further (name, column, "max"|"min") rules, applied only when k > len(rules).
        k: number of segments.
    Remaining segments are called "Segment <id>". Ties go to the lower segment_id.
    """
    names: dict[int, str] = {}
    for name, column, how in list(rules) + (list(extra) if k > len(rules) else []):
        left = profile.loc[[i for i in profile.index if i not in names]]
        if left.empty:
            break
        values = left[column].to_numpy()
        pick = int(np.argmax(values) if how == "max" else np.argmin(values))
        names[int(left.index[pick])] = name
    for segment_id in profile.index:
        names.setdefault(int(segment_id), f"Segment {int(segment_id)}")
    return names


def fit_segments(X: pd.DataFrame, params: SegmentParams | RFMParams, values: np.ndarray
                 ) -> tuple[KSelection, Pipeline, np.ndarray, np.ndarray]:
    """Select k, keep that pipeline and renumber its segments by the mean of `values` (one per row)."""
    selection, fitted, rows = select_k(X, params)
    model = fitted[selection.chosen_k]
    segment_ids = renumber(model, values)
    return selection, model, segment_ids, rows


def silhouette_values_on(X: pd.DataFrame, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sampled row's silhouette coefficient under `labels` (their mean is the silhouette), in a
    log1p-standardised space fitted on X.

    The space does not depend on any model, so a challenger and the current champion are compared on
    the same rows and the same geometry, row by row (the champion rule's paired bootstrap). A single
    segment has no silhouette: every row then counts -1, the worst value.
    """
    Z = transform_pipeline().fit_transform(X)[rows]
    labels = np.asarray(labels)[rows]
    if len(set(labels)) < 2:
        return np.full(len(labels), -1.0)
    return silhouette_samples(Z, labels)


def profile_frame(frame: pd.DataFrame, segment_ids: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
    """Per segment: size, share and the mean of `columns`."""
    grouped = frame.loc[:, list(columns)].assign(segment_id=segment_ids).groupby("segment_id")
    profile = grouped.mean()
    profile.insert(0, "size", grouped.size())
    profile.insert(1, "share", profile["size"] / len(frame))
    return profile.sort_index()


# -- behavioural user segments ------------------------------------------------------------------------

USER_NAME_RULES = (
    ("Browsers", "funnel_actions_per_session", "min"),  # look around, hardly cart or buy
    ("High-Value", "revenue", "max"),
    ("Engaged", "carts_per_session", "max"),
)
USER_EXTRA_NAME_RULES = (
    ("Lapsed", "recency_days", "max"),
    ("Window Shoppers", "views_per_session", "max"),
    ("Occasional Buyers", "purchases_per_session", "max"),
    ("Newcomers", "count_sessions", "min"),
)
USER_ACTIONS = {
    "Browsers": "retarget with recommendations and price-drop alerts on viewed products",
    "Engaged": "send cart-abandonment reminders and a free-shipping threshold",
    "High-Value": "VIP treatment: early access, premium recommendations, loyalty rewards",
    "Lapsed": "win-back campaign with a time-limited incentive",
    "Window Shoppers": "highlight reviews, bundles and social proof on viewed categories",
    "Occasional Buyers": "replenishment and cross-sell reminders",
    "Newcomers": "onboarding series and first-purchase offer",
}


def user_value(frame: pd.DataFrame) -> pd.Series:
    """What orders user segment ids: purchases per visit, then carts per visit."""
    return frame["purchases_per_session"] * 1000.0 + frame["carts_per_session"]


def name_user_segments(profile: pd.DataFrame) -> dict[int, str]:
    """Browsers: fewest carts+purchases per session; High-Value: most revenue per user; Engaged: most
    carts per session; then (k > 3) Lapsed, Window Shoppers, Occasional Buyers, Newcomers."""
    profile = profile.assign(funnel_actions_per_session=profile["carts_per_session"]
                             + profile["purchases_per_session"])
    return assign_names(profile, USER_NAME_RULES, USER_EXTRA_NAME_RULES, len(profile))


def recommended_action(name: str, actions: dict[str, str]) -> str:
    base, _, number = name.rpartition(" ")
    if number.isdigit() and base in actions:  # "New Customers 2": a second segment of the same kind
        name = base
    return actions.get(name, "review the segment profile and define a campaign")
