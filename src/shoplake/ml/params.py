"""Hyperparameters of the models, with their defaults.

Every training run logs the parameters it used (seed included) through `shoplake.ml.tracking`, so a
run can be reproduced from MLflow alone. Callers change them by passing another instance to
`train_model(..., params=...)`; `with_seed()` swaps the random seed everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from shoplake.ml.features import WindowSettings

DEFAULT_SEED = 42


@dataclass(frozen=True)
class SegmentParams:
    """K-means on clickstream users, k chosen by silhouette over [k_min, k_max].

    Attributes:
        k_min, k_max: the range of k tried.
        silhouette_sample: users sampled (seeded) to compute each k's silhouette; the whole set when
            smaller.
        n_init: K-means restarts per k (the best inertia is kept).
        k_tolerance: a smaller k wins when its silhouette is within this of the best (fewer, broader
            segments are easier to act on; 0 disables).
        k_criterion: `silhouette` (the best sample silhouette) or `stability` (the best mean bootstrap
            adjusted Rand index, ties within 0.01 to the better silhouette).
        stability_resamples: bootstrap resamples per k for `stability`.
        bootstrap_resamples: resamples of the sampled rows behind the 95 % interval of the silhouette
            difference between a new version and the champion (the champion rule).
        champion_min_effect: the smallest silhouette gain over the champion worth a promotion on the same
            data (the gain must also exceed the half-width of its paired interval); differences in the
            3rd decimal decide nothing, as for k.
        random_state: seed of sampling, K-means and the bootstrap.
    """

    k_min: int = 2
    k_max: int = 8
    silhouette_sample: int = 5000
    n_init: int = 4
    k_tolerance: float = 0.0
    k_criterion: str = "silhouette"
    stability_resamples: int = 20
    bootstrap_resamples: int = 200
    champion_min_effect: float = 0.01
    random_state: int = DEFAULT_SEED


@dataclass(frozen=True)
class RFMParams:
    """K-means on log-RFM; the attributes mean what they mean for `SegmentParams`.

    k starts at 3: the business names need at least Champions, Regular and Hibernating, and a two-way
    split (active / lapsed) usually has the best silhouette on invoice data without being useful.
    k is chosen by stability (`k_criterion`): the k whose segmentation a bootstrap resample of the
    customers reproduces best (mean adjusted Rand index over `stability_resamples`); silhouettes that
    differ in the 3rd or 4th decimal do not decide it. The champion rule is the segments' one (see
    `SegmentParams`).
    """

    k_min: int = 3
    k_max: int = 6
    silhouette_sample: int = 5000
    n_init: int = 10
    k_tolerance: float = 0.0
    k_criterion: str = "stability"
    stability_resamples: int = 20
    bootstrap_resamples: int = 200
    champion_min_effect: float = 0.01
    random_state: int = DEFAULT_SEED


# Features reviewed as genuinely strong, not leaky: they summarise the user's purchases strictly before
# the cutoff (the parse check and the invariance audit prove it in every run). On data where only a small
# class of users ever buys (such as the generator's planted high-value users), "has this user bought
# before" separates the positives almost perfectly. A strong feature is only ever a warning; this list
# says which warnings were looked at, and why they are expected.
REVIEWED_STRONG_FEATURES: dict[str, str] = {
    "user_purchases": "purchases of the user in the lookback window before the cutoff",
    "user_revenue": "purchase revenue of the user in the lookback window before the cutoff",
    "user_purchase_session_rate": "share of the user's lookback sessions with a purchase",
}

PROPENSITY_MODELS = ("popularity", "logistic_regression", "gradient_boosting")


@dataclass(frozen=True)
class PropensityParams:
    """Conversion propensity: examples, candidate models, calibration and the leakage audit.

    Attributes:
        window: lookback, horizon and training cutoffs (see `features.WindowSettings`).
        models: candidate models, compared on the validation cutoff; the best ROC-AUC is registered.
        max_train_negatives: negatives kept over all training cutoffs (all positives are kept); the
            sampled negatives are re-weighted, so probabilities refer to all candidates.
        calibration_share: the latest share of training cutoffs used to calibrate (sigmoid) instead of
            fitting; at least one cutoff.
        calibration: `sigmoid` (Platt) or `isotonic`, fitted on the calibration cutoffs (later than the
            fit); compare them with `shoplake ml backtest propensity --calibration ...`.
        lr_c: inverse regularisation strength of the logistic regression.
        gb_*: histogram gradient boosting settings (fixed iterations: no random early-stopping split).
        max_single_feature_auc: a feature that alone reaches this validation ROC-AUC (orientation-free)
            is reported as a warning (leakage is refused by the parse check and the invariance audit).
        reviewed_strong_features: feature -> why it may be strong (see REVIEWED_STRONG_FEATURES); their
            warnings say "reviewed", and the reasons go to the run's leakage_audit.json.
        threads: OpenMP threads for model fitting; 1 by default because two threads on a busy
            2-core machine can be ten times slower than one.
        bootstrap_resamples: resamples of the stratified bootstrap behind every metric's 95 % interval.
        eval_ks: the k of precision@k and recall@k.
        champion_min_effect: the smallest validation ROC-AUC gain over the champion worth a promotion
            (the gain must also exceed the half-width of its paired-bootstrap 95 % interval).
        champion_pr_auc_tolerance, champion_brier_skill_tolerance: how much worse than the champion on
            PR-AUC and Brier skill a promoted version may be.
        random_state: seed of negative sampling, models and the bootstrap.
    """

    window: WindowSettings = field(default_factory=WindowSettings)
    models: tuple[str, ...] = PROPENSITY_MODELS
    max_train_negatives: int = 120_000
    calibration_share: float = 0.34
    calibration: str = "sigmoid"
    lr_c: float = 0.1
    gb_learning_rate: float = 0.1
    gb_max_iter: int = 100
    gb_max_leaf_nodes: int = 15
    gb_min_samples_leaf: int = 200
    gb_max_bins: int = 63
    gb_l2_regularization: float = 1.0
    max_single_feature_auc: float = 0.95
    reviewed_strong_features: dict[str, str] = field(default_factory=lambda: dict(REVIEWED_STRONG_FEATURES))
    threads: int = 1
    bootstrap_resamples: int = 200
    champion_min_effect: float = 0.0
    champion_pr_auc_tolerance: float = 0.01
    champion_brier_skill_tolerance: float = 0.01
    eval_ks: tuple[int, ...] = (10, 100, 1000)
    random_state: int = DEFAULT_SEED


RECOMMENDER_METHODS = ("popularity", "category_popularity", "cooccurrence", "affinity", "als")


@dataclass(frozen=True)
class RecommenderParams:
    """Next-best products (`shoplake.ml.recommender`): the compared methods, the lists and the evaluation.

    Attributes:
        methods: methods compared on the validation cutoff; the best recall@10 is registered.
        top_n: products per active user in gold.user_recommendations.
        similar_n: similar products per product in gold.similar_products.
        active_days: a user (product) with an event in the last `active_days` before the scoring cutoff
            is active and gets recommendations (similar products).
        horizon_days: the validation window after the validation cutoff (as propensity's horizon).
        eval_ks: the k of recall@k, precision@k, NDCG@k and MAP@k.
        affinity_*_weight: the affinity score is s = (category share + brand_weight x brand share) x
            the product's share of its category's popularity + popularity_weight x its share of the
            store's, plus cooccurrence_weight x the item-to-item score scaled to the user's best s
            (defaults chosen on the validation week of a generated month, docs/ML.md).
        als_*: implicit ALS factors, iterations, L2 regularisation and confidence scale (alpha). 8
            iterations: on the demo's validation week recall@10 was 0.110 / 0.110 after 8 and after 15
            (seeds 1 / 2; 0.109 / 0.110 after 5), in 3.3 against 5.5-5.9 CPU seconds (bench/RESULTS.md).
        threads: ALS threads (1: the machine is shared).
        bootstrap_resamples: user resamples behind every 95 % interval.
        champion_min_effect: the smallest recall@10 gain over the champion worth a promotion (the gain must
            also exceed the half-width of its paired interval).
        random_state: seed of ALS and the bootstrap.
    """

    methods: tuple[str, ...] = RECOMMENDER_METHODS
    top_n: int = 10
    similar_n: int = 10
    active_days: int = 30
    horizon_days: int = 7
    eval_ks: tuple[int, ...] = (5, 10, 20)
    affinity_brand_weight: float = 0.3
    affinity_cooccurrence_weight: float = 0.1
    affinity_popularity_weight: float = 1.0
    als_factors: int = 32
    als_iterations: int = 8
    als_regularization: float = 0.05
    als_alpha: float = 10.0
    threads: int = 1
    bootstrap_resamples: int = 200
    champion_min_effect: float = 0.0
    random_state: int = DEFAULT_SEED


@dataclass(frozen=True)
class CLVParams:
    """Customer lifetime value: BG/NBD and Gamma-Gamma (`shoplake.ml.clv`).

    Attributes:
        fit_method: `laplace` (posterior mode and the Gaussian of its curvature, seconds) or `mcmc`
            (NUTS, 2 chains of `draws` after as many tuning steps: the reference, minutes on the UCI file).
        draws: parameter draws behind every interval (per chain for `mcmc`).
        interval: the central probability of the `_low` / `_high` columns (0.8: the 10th and 90th
            percentiles).
        holdout_days: the last days of the data predicted by a fit on the days before them (the holdout
            check of every training run); at most a third of the data's span.
        random_state: seed of the draws.
    """

    fit_method: str = "laplace"
    draws: int = 500
    interval: float = 0.8
    holdout_days: int = 91
    random_state: int = DEFAULT_SEED


Params = SegmentParams | RFMParams | PropensityParams | RecommenderParams | CLVParams


# The parameter class of each model kind (`shoplake.catalog.models`).
PARAMS_OF_KIND: dict[str, type[SegmentParams] | type[RFMParams] | type[PropensityParams]
                     | type[RecommenderParams] | type[CLVParams]] = {
    "segments": SegmentParams, "rfm": RFMParams, "propensity": PropensityParams,
    "recommender": RecommenderParams, "clv": CLVParams}


def default_params(kind: str) -> Params:
    return PARAMS_OF_KIND[kind]()


def with_seed(params: Params, seed: int | None) -> Params:
    return params if seed is None else replace(params, random_state=int(seed))


def flat_params(params: Params) -> dict[str, Any]:
    """The parameters as a flat dict for MLflow (`window.lookback_days`, `models`, ...)."""
    flat: dict[str, Any] = {}
    for key, value in asdict(params).items():
        if isinstance(value, dict) and key == "window":
            flat.update({f"window.{k}": v for k, v in value.items()})
        elif isinstance(value, dict):
            flat[key] = ",".join(sorted(value)) or "-"
        elif isinstance(value, tuple | list):
            flat[key] = ",".join(map(str, value))
        else:
            flat[key] = value
    return flat
