"""Population stability index (PSI) of model inputs: scoring data against the training data.

At training time each feature's reference distribution is summarised as decile bin edges of the
training values and the share of training rows per bin; the summary travels with the registered model
(its MLflow metadata). At scoring time the same bins are filled with the scoring rows and

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

with shares floored at 1e-4 (an empty bin would otherwise give an infinite PSI). Usual reading: below
0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a major shift. Scoring warns above
`PSI_WARNING` (0.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PSI_WARNING = 0.2
_BINS = 10
_FLOOR = 1e-4


@dataclass(frozen=True)
class FeatureReference:
    """Bin edges (inner edges; the outer bins are open) and the expected share per bin."""

    edges: tuple[float, ...]
    expected: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"edges": list(self.edges), "expected": list(self.expected)}

    @staticmethod
    def from_dict(data: dict) -> FeatureReference:
        return FeatureReference(tuple(float(x) for x in data["edges"]), tuple(float(x) for x in data["expected"]))


def _shares(values: np.ndarray, edges: Sequence[float] | np.ndarray) -> np.ndarray:
    # bin i holds edges[i-1] < x <= edges[i]: a value equal to an edge (a quantile) stays in the lower bin
    index = np.searchsorted(np.asarray(edges, dtype=float), values, side="left")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
    return counts / max(len(values), 1)


def reference(values: np.ndarray | pd.Series) -> FeatureReference:
    """The training distribution of one feature as decile bins."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return FeatureReference((), (1.0,))
    distinct = np.unique(values)
    quantiles = np.unique(np.quantile(values, np.linspace(0, 1, _BINS + 1)[1:-1], method="lower"))
    # Move each edge half-way to the next distinct training value: a feature with few distinct values
    # (a count, a per-category rate) then keeps each value inside one bin when it moves a little.
    above = np.searchsorted(distinct, quantiles, side="right")
    inner = above < len(distinct)
    edges = np.where(inner, (quantiles + distinct[np.minimum(above, len(distinct) - 1)]) / 2, quantiles)
    edges = np.unique(edges[inner])
    if len(edges) == 0:  # one distinct value: still tell "as in training" from "different"
        edges = distinct[-1:]
    return FeatureReference(tuple(float(e) for e in edges), tuple(float(s) for s in _shares(values, edges)))


def references(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Reference summaries of `columns`, ready to store with the model."""
    return {c: reference(frame[c]).to_dict() for c in columns}


def psi(ref: FeatureReference, values: np.ndarray | pd.Series) -> float:
    """PSI of `values` against the reference bins."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    expected = np.maximum(np.asarray(ref.expected, dtype=float), _FLOOR)
    actual = np.maximum(_shares(values, ref.edges), _FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def psi_by_feature(refs: dict[str, dict], frame: pd.DataFrame) -> dict[str, float]:
    """PSI of every referenced feature present in `frame`."""
    out = {}
    for name, data in refs.items():
        if name in frame.columns:
            value = psi(FeatureReference.from_dict(data), frame[name])
            out[name] = 0.0 if math.isclose(value, 0.0, abs_tol=1e-12) else value
    return out


def drifted(values: dict[str, float], threshold: float = PSI_WARNING) -> dict[str, float]:
    """Features whose PSI exceeds the threshold."""
    return {k: v for k, v in values.items() if v > threshold}
