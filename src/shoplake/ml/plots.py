"""Figures logged with each training run (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are only saved as PNG artifacts

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def k_selection(ks: Sequence[int], inertias: Sequence[float], silhouettes: Sequence[float], chosen: int,
                title: str):
    """Elbow (inertia) and silhouette against k, the chosen k marked."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(ks, inertias, marker="o")
    left.set(xlabel="k", ylabel="inertia (within-cluster sum of squares)", title="elbow")
    right.plot(ks, silhouettes, marker="o", color="tab:green")
    right.set(xlabel="k", ylabel="silhouette (sample)", title="silhouette")
    for ax in (left, right):
        ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen k = {chosen}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def segment_profiles(profile: pd.DataFrame, names: dict[int, str], columns: Sequence[str], title: str):
    """Segment sizes, and each segment's mean of `columns` relative to the overall mean."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 2]})
    labels = [f"{i}: {names[i]}" for i in profile.index]
    left.barh(labels, profile["size"], color="tab:blue")
    left.set(xlabel="members", title="size")
    left.invert_yaxis()
    weights = profile["size"] / profile["size"].sum()
    overall = (profile[list(columns)].mul(weights, axis=0)).sum()
    relative = profile[list(columns)].div(overall.replace(0, np.nan)).fillna(0.0)
    x = np.arange(len(columns))
    width = 0.8 / max(len(profile), 1)
    for i, (_, row) in enumerate(relative.iterrows()):
        right.bar(x + i * width, row.to_numpy(), width, label=labels[i])
    right.set_xticks(x + width * (len(profile) - 1) / 2, list(columns), rotation=20, ha="right")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set(ylabel="segment mean / overall mean", title="profile")
    right.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_pr(y: np.ndarray, scores: dict[str, np.ndarray]):
    """ROC and precision-recall curves of several models on the validation cutoff."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        left.plot(fpr, tpr, label=name)
        precision, recall, _ = precision_recall_curve(y, p)
        right.plot(recall, precision, label=name)
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (validation)")
    right.set(xlabel="recall", ylabel="precision", title="precision-recall (validation)", yscale="log")
    left.legend()
    right.legend()
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, scores: dict[str, np.ndarray], bins: int = 10):
    """Reliability diagram (quantile bins, log axes: probabilities are small)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    low = 1.0
    for name, p in scores.items():
        frac, mean = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        keep = (frac > 0) & (mean > 0)
        if keep.any():
            ax.plot(mean[keep], frac[keep], marker="o", label=name)
            low = min(low, float(mean[keep].min()), float(frac[keep].min()))
    ax.plot([low, 1], [low, 1], color="grey", linestyle=":", label="perfect")
    ax.set(xscale="log", yscale="log", xlabel="mean predicted probability", ylabel="observed conversion rate",
           title="calibration (validation)")
    ax.legend()
    fig.tight_layout()
    return fig


def feature_importance(importance: pd.Series, title: str):
    """Horizontal bars, largest first."""
    importance = importance.sort_values()
    fig, ax = plt.subplots(figsize=(7, max(3.0, 0.28 * len(importance))))
    ax.barh(importance.index, importance.to_numpy(), color="tab:purple")
    ax.set(xlabel="drop in validation ROC-AUC when the feature is shuffled", title=title)
    fig.tight_layout()
    return fig
