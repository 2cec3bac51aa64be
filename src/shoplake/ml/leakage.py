"""Leakage audit of the propensity features: run by every training run and by `tests/ml/test_leakage.py`.

1. Cutoff invariance: the features of cutoff T computed from all of `silver.events` equal the features
   computed from the events strictly before T. So appending, changing or removing events at or after
   T (the label window and beyond) changes no feature value.
2. Single-feature strength: a feature that alone reaches a validation ROC-AUC above the threshold
   (0.95) fails, unless it is listed as reviewed with a reason (see `params.REVIEWED_STRONG_FEATURES`);
   a reviewed feature is only accepted because check 1 passed in the same run.
3. Windows: training label windows end no later than the validation cutoff, whose label window ends no
   later than the scoring cutoff (`features.CutoffPlan.check`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sqlglot import exp

from shoplake.ml import features
from shoplake.ml.errors import LeakageError

log = logging.getLogger(__name__)

_TOLERANCE = 1e-9  # relative: sums of floats may be added in another order by a parallel aggregate


def single_feature_aucs(frame: pd.DataFrame, columns: Sequence[str], label: str = "label") -> dict[str, float]:
    """Orientation-free ROC-AUC of each feature alone: max(AUC, 1 - AUC); 0.5 for a constant."""
    y = frame[label].to_numpy()
    if y.min() == y.max():
        return {c: 0.5 for c in columns}
    out = {}
    for column in columns:
        values = frame[column].astype(float).fillna(0.0).to_numpy()
        auc = 0.5 if np.all(values == values[0]) else float(roc_auc_score(y, values))
        out[column] = max(auc, 1.0 - auc)
    return out


def audit_feature_aucs(aucs: Mapping[str, float], *, threshold: float,
                       reviewed: Mapping[str, str]) -> dict[str, float]:
    """Raise `LeakageError` for any unreviewed feature above `threshold`; return the reviewed ones above it."""
    over = {name: auc for name, auc in aucs.items() if auc > threshold}
    failing = {name: auc for name, auc in over.items() if name not in reviewed}
    if failing:
        detail = ", ".join(f"{name} ({auc:.3f})" for name, auc in sorted(failing.items(), key=lambda x: -x[1]))
        raise LeakageError(f"leakage audit failed: single-feature validation ROC-AUC above {threshold}: {detail}; "
                           f"a feature this strong usually sees the label window")
    for name, auc in over.items():
        log.info("reviewed strong feature %s: validation AUC %.3f (%s)", name, auc, reviewed[name])
    return over


def _before(cutoff: datetime) -> str:
    """`event_at < TIMESTAMPTZ '<cutoff>'`, built with sqlglot (the value is ours, not user input)."""
    literal = exp.cast(exp.Literal.string(cutoff.isoformat()), exp.DataType.build("TIMESTAMPTZ"))
    return exp.LT(this=exp.column("event_at"), expression=literal).sql(dialect="duckdb")


def feature_differences(engine, left: str, right: str, columns: Sequence[str]) -> dict[str, int]:
    """Rows whose feature differs between two candidate tables, per column (`_rows` = pairs in one only)."""
    checks = ["count(*) FILTER (WHERE a.user_id IS NULL OR b.user_id IS NULL) AS _rows"]
    for c in columns:
        checks.append(
            f'count(*) FILTER (WHERE a.user_id IS NOT NULL AND b.user_id IS NOT NULL AND '
            f'coalesce(abs(a."{c}" - b."{c}") > {_TOLERANCE} * greatest(1, abs(a."{c}")), '
            f'a."{c}" IS DISTINCT FROM b."{c}")) AS "{c}"')
    sql = (f"SELECT {', '.join(checks)} FROM {left} AS a FULL OUTER JOIN {right} AS b "
           f"ON a.user_id = b.user_id AND a.product_id = b.product_id")
    row = engine.rows(sql)[0]
    names = ["_rows", *columns]
    return {name: int(n) for name, n in zip(names, row, strict=True) if n}


def audit_cutoff_invariance(lake, engine, cutoff: datetime, lookback: timedelta, *,
                            events_version: int | None) -> None:
    """Features of `cutoff` from all events must equal those from the events before `cutoff` only.

    `engine` has `silver.events` bound at `events_version`; it is bound there again afterwards.
    """
    spec = lake.catalog.get(features.PROPENSITY_INPUT)
    features.materialize_pair_features(engine, cutoff, lookback, into="audit_all_events")
    try:
        engine.bind(spec, version=events_version, where=_before(cutoff))
        try:
            features.materialize_pair_features(engine, cutoff, lookback, into="audit_before_cutoff")
        finally:
            engine.bind(spec, version=events_version)
        diff = feature_differences(engine, "audit_all_events", "audit_before_cutoff", features.PAIR_FEATURES)
    finally:
        engine.drop("audit_all_events")
        engine.drop("audit_before_cutoff")
    if diff:
        detail = ", ".join(f"{k}: {v} rows" for k, v in sorted(diff.items()))
        raise LeakageError(f"leakage audit failed: features at cutoff {cutoff.isoformat()} change when events at "
                           f"or after the cutoff are removed ({detail})")
