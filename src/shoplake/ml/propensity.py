"""Conversion propensity: will this user buy this product within the horizon after the cutoff?

Examples (see `shoplake.ml.features`): for a cutoff T, the candidates are the (user, product) pairs
with at least one event in the lookback window [T - lookback, T); their features use only those
events; the label is a purchase of that product by that user in [T, T + horizon).

Time split, never random: the training cutoffs come first; of them, the earlier ones fit the models
and the latest share calibrates them (Platt / sigmoid, on later data than the fit, as in
production); the validation cutoff comes one horizon after the last training cutoff, so no training
label is later than it; scoring uses the cutoff at the end of the data.

Candidate models: a popularity baseline (how often the product was bought before T, through a
calibrated logistic link), logistic regression and histogram gradient boosting. The best validation
ROC-AUC is registered; PR-AUC, log loss, Brier score and top-decile lift are reported for all.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from shoplake.errors import ConfigError, InsufficientDataError
from shoplake.ml import features
from shoplake.ml.params import PROPENSITY_MODELS, PropensityParams

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One fitted, calibrated candidate model and its validation results."""

    name: str
    columns: tuple[str, ...]
    model: CalibratedClassifierCV
    probabilities: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


def model_columns(name: str) -> tuple[str, ...]:
    return features.BASELINE_FEATURES if name == "popularity" else features.PAIR_FEATURES


def _base_model(name: str, params: PropensityParams):
    """The unfitted estimator and the fit parameter that takes sample weights."""
    if name == "popularity":
        return Pipeline([("log1p", FunctionTransformer(np.log1p, feature_names_out="one-to-one")),
                         ("lr", LogisticRegression())]), "lr__sample_weight"
    if name == "logistic_regression":
        # asinh: a signed log for heavy-tailed counts and money that keeps 0 at 0
        return Pipeline([("asinh", FunctionTransformer(np.arcsinh, feature_names_out="one-to-one")),
                         ("scale", StandardScaler()),
                         ("lr", LogisticRegression(C=params.lr_c, max_iter=5000))]), "lr__sample_weight"
    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(
            learning_rate=params.gb_learning_rate, max_iter=params.gb_max_iter,
            max_leaf_nodes=params.gb_max_leaf_nodes, min_samples_leaf=params.gb_min_samples_leaf,
            max_bins=params.gb_max_bins, l2_regularization=params.gb_l2_regularization,
            early_stopping=False, random_state=params.random_state), "sample_weight"
    raise ConfigError(f"unknown propensity model {name!r}: expected one of {', '.join(PROPENSITY_MODELS)}")


def split_fit_calibration(train: pd.DataFrame, params: PropensityParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The earlier training cutoffs fit, the latest `calibration_share` (at least one) calibrate."""
    cutoffs = sorted(train["cutoff_at"].unique())
    if len(cutoffs) < 2:
        raise InsufficientDataError("propensity training needs at least 2 training cutoffs (one to fit, one to "
                            "calibrate): ingest more days of clickstream data or lower window.step_days")
    n_cal = min(len(cutoffs) - 1, max(1, round(len(cutoffs) * params.calibration_share)))
    first_cal = cutoffs[-n_cal]
    fit, cal = train[train["cutoff_at"] < first_cal], train[train["cutoff_at"] >= first_cal]
    for part, what in ((fit, "fitting"), (cal, "calibration")):
        if part["label"].sum() == 0:
            raise InsufficientDataError(f"no positive example in the {what} cutoffs (no pair bought after a prior "
                                f"interaction): ingest more clickstream data")
    return fit, cal


CALIBRATIONS = ("sigmoid", "isotonic")


def fit_candidate(name: str, fit: pd.DataFrame, cal: pd.DataFrame, params: PropensityParams) -> tuple:
    """Fit on `fit`, then calibrate the frozen model on `cal` (`params.calibration`). Returns (model, columns)."""
    columns = model_columns(name)
    base, weight_param = _base_model(name, params)
    with threadpool_limits(params.threads, user_api="openmp"):
        base.fit(features.as_matrix(fit, columns), fit["label"].to_numpy(),
                 **{weight_param: fit["weight"].to_numpy()})
        if params.calibration not in CALIBRATIONS:
            raise ConfigError(f"unknown calibration {params.calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
        calibrated = CalibratedClassifierCV(FrozenEstimator(base), method=params.calibration)
        with warnings.catch_warnings():
            # The base model is frozen on purpose: the weights are meant for the calibrator only.
            warnings.filterwarnings("ignore", message=".*does not appear to accept sample_weight.*")
            calibrated.fit(features.as_matrix(cal, columns), cal["label"].to_numpy(),
                           sample_weight=cal["weight"].to_numpy())
    return calibrated, columns


def predict(model, frame: pd.DataFrame, columns: tuple[str, ...], *, threads: int = 1) -> np.ndarray:
    """Calibrated purchase probabilities for the rows of `frame`."""
    with threadpool_limits(threads, user_api="openmp"):
        return model.predict_proba(features.as_matrix(frame, columns))[:, 1]


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Conversion rate among the 10% most likely candidates over the overall rate (ties by position)."""
    order = np.argsort(-p, kind="stable")
    top = order[: max(1, int(np.ceil(0.1 * len(p))))]
    overall = float(np.mean(y))
    return float(np.mean(y[top]) / overall) if overall > 0 else float("nan")


def evaluate(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Validation metrics on all candidates of the validation cutoff."""
    if y.min() == y.max():
        raise InsufficientDataError("the validation cutoff has no positive (or no negative) example: ingest more "
                            "clickstream data")
    clipped = np.clip(p, 1e-9, 1 - 1e-9)
    return {
        "val_roc_auc": float(roc_auc_score(y, p)),
        "val_pr_auc": float(average_precision_score(y, p)),
        "val_log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "val_brier": float(brier_score_loss(y, p)),
        "val_top_decile_lift": top_decile_lift(y, p),
        "val_mean_probability": float(np.mean(p)),
        "val_positive_rate": float(np.mean(y)),
    }


def train_candidates(train: pd.DataFrame, validation: pd.DataFrame, params: PropensityParams) -> list[Candidate]:
    """Fit, calibrate and validate every candidate model of `params.models`."""
    fit, cal = split_fit_calibration(train, params)
    y = validation["label"].to_numpy()
    out = []
    for name in params.models:
        model, columns = fit_candidate(name, fit, cal, params)
        p = predict(model, validation, columns, threads=params.threads)
        out.append(Candidate(name, columns, model, p, evaluate(y, p)))
        log.info("%s: validation ROC-AUC %.4f", name, out[-1].metrics["val_roc_auc"])
    return out


def best(candidates: list[Candidate]) -> Candidate:
    """Highest validation ROC-AUC; a tie goes to the candidate listed first (the simpler model)."""
    return max(candidates, key=lambda c: (c.metrics["val_roc_auc"], -candidates.index(c)))


# Baselines: fixed scoring rules, not fitted models, that any model must beat to be worth deploying. Each is
# turned into probabilities by Platt scaling on the calibration cutoffs (like the candidates), so that
# calibration metrics compare too. Never registered.
BASELINES: dict[str, str] = {
    "popularity": "product purchases in the lookback",
    "user_activity": "the user's purchases in the lookback, ties broken by their carts",
    "activity_x_popularity": "user_purchases x log(2 + product_purchases)",
}
BASELINE_COLUMNS = ("user_purchases", "user_carts", "product_purchases")


def baseline_score(name: str, frame: pd.DataFrame) -> np.ndarray:
    """The raw ranking score of a baseline rule (higher = more likely)."""
    x = features.as_matrix(frame, BASELINE_COLUMNS)
    user, carts, product = x["user_purchases"].to_numpy(), x["user_carts"].to_numpy(), x["product_purchases"].to_numpy()
    if name == "popularity":
        return product
    if name == "user_activity":
        return user + carts / (carts + 1.0)  # the carts term stays below 1: it only breaks ties
    if name == "activity_x_popularity":
        return user * np.log(2.0 + product)
    raise ConfigError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINES)}")


def baseline_probabilities(cal: pd.DataFrame, validation: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every baseline's probabilities on `validation`, Platt-scaled on `cal` (weighted like the candidates).

    A rule's score takes few distinct values (tens to hundreds over the calibration rows), so the logistic
    fit runs on the distinct (score, label) pairs with their summed weights: the weighted log-likelihood is
    a sum over rows, so it is the same objective with the same minimum, and the probabilities of a score
    are computed once per distinct value."""
    out = {}
    y, weight = cal["label"].to_numpy(), cal["weight"].to_numpy()
    for name in BASELINES:
        x, w, label = aggregate_pairs(np.log1p(baseline_score(name, cal)), y, weight)
        platt = LogisticRegression()
        platt.fit(x.reshape(-1, 1), label, sample_weight=w)
        values, inverse = np.unique(np.log1p(baseline_score(name, validation)), return_inverse=True)
        out[name] = platt.predict_proba(values.reshape(-1, 1))[:, 1][inverse.ravel()]
    return out


def aggregate_pairs(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (x, y) pairs of a 0/1 label y with the sum of their weights: (x, summed weight, y)."""
    values, inverse = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True)
    code = 2 * inverse.ravel() + np.asarray(y, dtype=np.int64)
    present = np.flatnonzero(np.bincount(code, minlength=2 * len(values)))
    summed = np.bincount(code, weights=np.asarray(weight, dtype=np.float64), minlength=2 * len(values))
    return values[present // 2], summed[present], (present % 2).astype(np.asarray(y).dtype)


def importance_rows(label: np.ndarray, *, max_negatives: int, seed: int) -> np.ndarray:
    """Positions of every positive, then of `max_negatives` seeded negatives: the negatives
    `DataFrame.sample` draws from a frame of the negative rows (it draws positions), without copying them."""
    positives, negatives = np.flatnonzero(label == 1), np.flatnonzero(label == 0)
    chosen = pd.Series(negatives).sample(n=min(len(negatives), max_negatives), random_state=seed).to_numpy()
    return np.concatenate([positives, chosen])


def importance(candidate: Candidate, validation: pd.DataFrame, *, seed: int, max_negatives: int = 5_000,
               threads: int = 1) -> pd.Series:
    """Permutation importance (drop in ROC-AUC) on all validation positives and a sample of negatives."""
    sample = validation.iloc[importance_rows(validation["label"].to_numpy(), max_negatives=max_negatives,
                                             seed=seed)]
    with threadpool_limits(threads, user_api="openmp"):
        result = permutation_importance(candidate.model, features.as_matrix(sample, candidate.columns),
                                        sample["label"].to_numpy(), scoring="roc_auc", n_repeats=2,
                                        random_state=seed)
    return pd.Series(result.importances_mean, index=list(candidate.columns))
