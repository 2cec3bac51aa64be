"""Leakage audit of the propensity features: run by every training run and by `tests/ml/test_leakage.py`.

0. By construction (`shoplake.ml.as_of`, before anything runs): the feature queries may read only inputs
   bound as of the cutoff T; any other reference (a Gold table, a table without a time column, rows at
   or after T) is refused with a `LeakageError`.
1. Cutoff invariance: the features of cutoff T computed with every input bound in full equal the
   features computed with every input bound as of T (rows strictly before T). So appending, changing or
   removing rows at or after T (the label window and beyond) changes no feature value.
2. Single-feature strength, a *warning*: a feature that alone reaches a validation ROC-AUC above the
   threshold (0.95) is reported (log, MLflow, the CLI), not refused. Checks 0 and 1 decide leakage; a
   strong feature can be honest (on the generator's data, what the user or product bought last week
   nearly separates next week's buyers), and a gate on it failed honest runs at random. Features
   reviewed as strong (`params.REVIEWED_STRONG_FEATURES`) are reported with their reason.
3. Windows: training label windows end no later than the validation cutoff, whose label window ends no
   later than the scoring cutoff (`features.CutoffPlan.check`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from sqlglot import exp

from shoplake.ml import as_of, features
from shoplake.ml.errors import LeakageError

log = logging.getLogger(__name__)

_TOLERANCE = 1e-9  # relative: sums of floats may be added in another order by a parallel aggregate


def single_feature_aucs(frame: pd.DataFrame, columns: Sequence[str], label: str = "label") -> dict[str, float]:
    """Orientation-free ROC-AUC of each feature alone: max(AUC, 1 - AUC); 0.5 for a constant."""
    y = frame[label].to_numpy()
    if y.min() == y.max():
        return {c: 0.5 for c in columns}
    out = {}
    positive = y == 1
    for column in columns:
        values = frame[column].astype(float).fillna(0.0).to_numpy()
        auc = 0.5 if np.all(values == values[0]) else rank_auc(values[positive], values[~positive])
        out[column] = max(auc, 1.0 - auc)
    return out


def rank_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """ROC-AUC as the share of (positive, negative) pairs ranked right, a tie counting half (what
    scikit-learn's `roc_auc_score` computes). Positives are few: each negative is placed among them by a
    binary search, instead of sorting every row."""
    ranked = np.sort(positives)
    below = np.searchsorted(ranked, negatives, side="left")  # positives under each negative
    not_above = np.searchsorted(ranked, negatives, side="right")
    # twice the pairs: 2 per positive above the negative, 1 per tie (whole numbers, exact in int64)
    twice = 2 * len(ranked) * len(negatives) - int(below.sum()) - int(not_above.sum())
    return twice / (2 * len(ranked) * len(negatives))


def strong_feature_warnings(aucs: Mapping[str, float], *, threshold: float,
                            reviewed: Mapping[str, str]) -> list[str]:
    """One warning per feature whose single-feature AUC is above `threshold`, strongest first.

    A warning, not a refusal: the parse check and the cutoff-invariance audit decide leakage. The
    reasons of reviewed features are in the run's `leakage_audit.json` and the model card.
    """
    over = sorted(((name, auc) for name, auc in aucs.items() if auc > threshold), key=lambda x: -x[1])
    out = []
    for name, auc in over:
        why = "reviewed" if name in reviewed else "not reviewed: check what it reads"
        out.append(f"{name} alone reaches validation ROC-AUC {auc:.3f} > {threshold} ({why})")
    for line in out:
        log.warning("%s", line)
    return out


def _before(column: str, cutoff: datetime) -> str:
    """`<column> < TIMESTAMPTZ '<cutoff>'`, built with sqlglot (the value is ours, not user input)."""
    literal = exp.cast(exp.Literal.string(cutoff.isoformat()), exp.DataType.build("TIMESTAMPTZ"))
    return exp.LT(this=exp.column(column), expression=literal).sql(dialect="duckdb")


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


def bound_inputs() -> tuple[as_of.AsOfInput, ...]:
    """Every catalog input the feature queries read (from their parse), with its time column."""
    return (as_of.check_window_sql(features.feature_window_sql()),)


def audit_cutoff_invariance(lake, engine, cutoff: datetime, lookback: timedelta, *,
                            versions: Mapping[str, int | None], computed: str | None = None) -> None:
    """Features of `cutoff` with every input bound in full must equal those with every input bound as of `cutoff`.

    `engine` has each input of `bound_inputs()` bound at its version in `versions` (a missing one: the
    latest); each is bound there again, in full, afterwards. `computed`: a temp table holding the features
    of `cutoff` already computed on this engine with that binding (training's validation candidates); it
    is those features, so they are not computed again, and it is dropped.
    """
    inputs = bound_inputs()
    # The recorded versions are data versions; read the newest version with those rows (its files are
    # the ones a vacuum keeps).
    versions = {name: v if v is None else lake.store.readable_version(name, v) for name, v in versions.items()}
    all_events = computed or "audit_all_events"
    if computed is None:
        features.materialize_pair_features(engine, cutoff, lookback, into=all_events)
    try:
        try:
            for source in inputs:
                engine.bind(lake.catalog.get(source.table), version=versions.get(source.table),
                            where=_before(source.time_column, cutoff))
            features.materialize_pair_features(engine, cutoff, lookback, into="audit_before_cutoff")
        finally:
            for source in inputs:
                engine.bind(lake.catalog.get(source.table), version=versions.get(source.table))
        diff = feature_differences(engine, all_events, "audit_before_cutoff", features.PAIR_FEATURES)
    finally:
        engine.drop(all_events)
        engine.drop("audit_before_cutoff")
    if diff:
        detail = ", ".join(f"{k}: {v} rows" for k, v in sorted(diff.items()))
        tables = ", ".join(source.table for source in inputs)
        raise LeakageError(f"leakage audit failed: features at cutoff {cutoff.isoformat()} change when the rows of "
                           f"{tables} at or after the cutoff are removed ({detail})")
