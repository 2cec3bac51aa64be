"""Leakage audit of the propensity features, on real generated data, plus deliberate mutations.

The features of a cutoff T must not depend on anything at or after T. The tests bind altered copies of
silver.events in the engine (events appended at and after T, label-window events removed) and compare
every feature of every candidate; a window that peeks past T must be caught by the parse check and, with
that check bypassed, by the invariance audit. The parse-check mutations are in test_feature_queries.py.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import roc_auc_score

from shoplake.ml import as_of, features, leakage
from shoplake.ml.errors import LeakageError
from shoplake.ml.params import REVIEWED_STRONG_FEATURES, PropensityParams

WINDOW = PropensityParams().window


@pytest.fixture(scope="module")
def events(shop_lake) -> pa.Table:
    lake, _ = shop_lake
    with lake.engine() as engine:
        features.bind(lake, engine, "silver.events")
        return engine.table("SELECT * FROM silver.events")


@pytest.fixture(scope="module")
def plan(shop_lake) -> features.CutoffPlan:
    lake, _ = shop_lake
    with lake.engine() as engine:
        features.bind(lake, engine, "silver.events")
        return features.plan_cutoffs(*features.event_span(engine), WINDOW)


def _features_of(lake, table: pa.Table, cutoff, lookback, into: str, engine) -> int:
    """Candidate features of `cutoff` computed with `table` bound as silver.events."""
    engine.bind_arrow("silver.events", table)
    return features.materialize_pair_features(engine, cutoff, lookback, into=into)


def _labels_of(engine, cutoff, horizon) -> int:
    return engine.rows(f"SELECT count(*) FROM ({features.label_sql()})", [cutoff, cutoff + horizon])[0][0]


def _shifted(table: pa.Table, start, end, by: timedelta) -> pa.Table:
    """Copies of the events in [start, end) moved by `by` (same users, products, types)."""
    keep = pc.and_(pc.greater_equal(table["event_at"], pa.scalar(start, table.schema.field("event_at").type)),
                   pc.less(table["event_at"], pa.scalar(end, table.schema.field("event_at").type)))
    part = table.filter(keep)
    moved = pc.add(part["event_at"], pa.scalar(by, pa.duration("us")))
    column = part.schema.get_field_index("event_at")
    return part.set_column(column, "event_at", moved.cast(part.schema.field("event_at").type))


def _at_exactly(table: pa.Table, cutoff, n: int) -> pa.Table:
    """Purchases at exactly the cutoff of pairs the users interacted with before it."""
    before = table.filter(pc.less(table["event_at"], pa.scalar(cutoff, table.schema.field("event_at").type)))
    part = before.slice(before.num_rows - n, n)
    part = part.set_column(part.schema.get_field_index("event_at"), "event_at",
                           pa.array([cutoff] * n, part.schema.field("event_at").type))
    return part.set_column(part.schema.get_field_index("event_type"), "event_type",
                           pa.array(["purchase"] * n, part.schema.field("event_type").type))


def test_appending_events_at_or_after_the_cutoff_changes_no_feature(shop_lake, events, plan):
    lake, _ = shop_lake
    cutoff = plan.validation
    # The pre-cutoff week replayed one and two weeks later, plus purchases at exactly the cutoff.
    extra = pa.concat_tables([
        _shifted(events, cutoff - plan.lookback, cutoff, plan.lookback),
        _shifted(events, cutoff - plan.lookback, cutoff, 2 * plan.lookback),
        _at_exactly(events, cutoff, 500),
    ])
    with lake.engine() as engine:
        n = _features_of(lake, events, cutoff, plan.lookback, "original", engine)
        labels_before = _labels_of(engine, cutoff, plan.horizon)
        _features_of(lake, pa.concat_tables([events, extra]), cutoff, plan.lookback, "appended", engine)
        labels_after = _labels_of(engine, cutoff, plan.horizon)
        diff = leakage.feature_differences(engine, "original", "appended", features.PAIR_FEATURES)
    assert n > 10_000
    assert labels_after > labels_before  # the appended events do reach the label window ...
    assert diff == {}                    # ... and no feature of any candidate


def test_no_feature_is_computed_from_label_window_events(shop_lake, events, plan):
    lake, _ = shop_lake
    cutoff = plan.train[-1]
    start, end = plan.label_window(cutoff)
    at = events["event_at"]
    t = events.schema.field("event_at").type
    outside = pc.or_(pc.less(at, pa.scalar(start, t)), pc.greater_equal(at, pa.scalar(end, t)))
    with lake.engine() as engine:
        _features_of(lake, events, cutoff, plan.lookback, "original", engine)
        labels_with = _labels_of(engine, cutoff, plan.horizon)
        _features_of(lake, events.filter(outside), cutoff, plan.lookback, "without_label_window", engine)
        labels_without = _labels_of(engine, cutoff, plan.horizon)
        diff = leakage.feature_differences(engine, "original", "without_label_window", features.PAIR_FEATURES)
    assert labels_with > 0 and labels_without == 0  # the label window is what the labels read ...
    assert diff == {}                               # ... and what no feature reads


def test_strong_single_features_are_reported_not_refused(trained):
    """The single-feature AUCs of the session's training run (validation cutoff, every candidate)."""
    result = trained.train["propensity"]
    aucs = result.details["feature_auc"]
    top = sorted(aucs.items(), key=lambda x: -x[1])[:6]
    print(f"\nsingle-feature validation ROC-AUC ({int(result.metrics['val_positives'])} positives), strongest: "
          + ", ".join(f"{k} {v:.3f}" for k, v in top))
    assert set(aucs) == set(features.PAIR_FEATURES)
    over = [name for name, auc in aucs.items() if auc > 0.95]
    assert over  # on this data some features are that strong, and the model was trained all the same
    assert result.version >= 1
    assert len(result.warnings) == len(over)
    for name in over:
        assert any(w.startswith(f"{name} alone reaches validation ROC-AUC") for w in result.warnings)


def test_a_feature_equal_to_the_label_is_warned_about():
    frame = pd.DataFrame({"label": [0, 0, 0, 1, 0, 1, 0, 0], "score": [1, 2, 3, 4, 1, 9, 2, 0]})
    peek = leakage.single_feature_aucs(frame.assign(peek=frame["label"]), ["peek", "score"])
    assert peek["peek"] == 1.0 and peek["score"] == pytest.approx(1.0)
    inverted = leakage.single_feature_aucs(frame.assign(peek=-frame["label"]), ["peek"])
    assert inverted == {"peek": 1.0}  # orientation-free: a reversed copy of the label is as strong
    warnings = leakage.strong_feature_warnings({"user_purchases": 0.97, "peek": 1.0, "fine": 0.95},
                                               threshold=0.95, reviewed=REVIEWED_STRONG_FEATURES)
    assert warnings == ["peek alone reaches validation ROC-AUC 1.000 > 0.95 (not reviewed: check what it reads)",
                        "user_purchases alone reaches validation ROC-AUC 0.970 > 0.95 (reviewed)"]



@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_single_feature_auc_equals_scikit_learn_with_ties_and_few_positives(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(5_000) < 0.004 * seed).astype(int)
    y[:2] = [0, 1]
    # counts with many ties (and ties between positives and negatives), a signal, NaN read as 0
    x = np.floor(rng.exponential(2.0, len(y)) + 3 * y * rng.random(len(y)))
    x[rng.random(len(y)) < 0.05] = np.nan
    aucs = leakage.single_feature_aucs(pd.DataFrame({"label": y, "x": x, "minus": -x}), ["x", "minus"])
    want = roc_auc_score(y, np.nan_to_num(x))
    assert aucs["x"] == pytest.approx(max(want, 1 - want), abs=1e-12)
    assert aucs["minus"] == pytest.approx(aucs["x"], abs=1e-12)
    assert leakage.rank_auc(np.array([2.0]), np.array([2.0, 1.0])) == 0.75  # a tie counts half

def test_training_and_scoring_windows_do_not_overlap(plan, events):
    last_event = pc.max(events["event_at"]).as_py()
    assert last_event < plan.scoring <= last_event + timedelta(days=1)
    for cutoff in plan.train:
        assert plan.feature_window(cutoff)[1] == cutoff
        assert plan.label_window(cutoff)[1] <= plan.validation
    assert plan.label_window(plan.validation)[1] <= plan.scoring
    assert plan.train == tuple(sorted(plan.train)) and len(plan.train) >= 2
    bad = features.CutoffPlan(train=(plan.validation - timedelta(days=1),), validation=plan.validation,
                              scoring=plan.scoring, lookback=plan.lookback, horizon=plan.horizon)
    with pytest.raises(LeakageError, match="overlaps the validation period"):
        bad.check()


def test_the_invariance_audit_catches_a_peeking_window_that_slips_past_the_parse_check(shop_lake, plan,
                                                                                        monkeypatch):
    """Defence in depth: with the parse check bypassed, a window running 7 days past T fails the audit on data."""
    lake, _ = shop_lake
    honest = features.feature_window_sql()
    peeking = honest.replace("event_at < $cutoff", "event_at < CAST($cutoff AS TIMESTAMPTZ) + INTERVAL 7 DAY")
    assert peeking != honest
    monkeypatch.setattr(features, "feature_window_sql", lambda: peeking)
    with pytest.raises(LeakageError, match="without the condition `event_at < \\$cutoff`"):
        features.check_feature_queries()
    monkeypatch.setattr(as_of, "check_window_sql", lambda sql: as_of.AS_OF_INPUTS["silver.events"])
    with lake.engine() as engine:
        versions = features.bind(lake, engine, "silver.events")
        with pytest.raises(LeakageError, match="change when the rows of silver.events at or after the cutoff"):
            leakage.audit_cutoff_invariance(lake, engine, plan.validation, plan.lookback, versions=versions)
        validation, _ = features.labelled_examples(engine, plan.validation, plan, negative_rate=0.05,
                                                   max_negatives=0, seed=1)
    aucs = leakage.single_feature_aucs(validation, features.PAIR_FEATURES)
    print(f"\nmutation: with the window peeking 7 days past the cutoff, pair_purchases AUC "
          f"{aucs['pair_purchases']:.3f}, pair_funnel_depth {aucs['pair_funnel_depth']:.3f}")
    assert leakage.strong_feature_warnings(aucs, threshold=0.95, reviewed={})  # and it is reported


def test_the_current_features_pass_the_invariance_audit(shop_lake, plan):
    lake, _ = shop_lake
    assert [source.table for source in leakage.bound_inputs()] == ["silver.events"]
    with lake.engine() as engine:
        versions = features.bind(lake, engine, "silver.events")
        for cutoff in (plan.train[0], plan.validation):
            leakage.audit_cutoff_invariance(lake, engine, cutoff, plan.lookback, versions=versions)


@pytest.mark.parametrize("peek", [False, True])
def test_the_audit_on_the_validation_features_training_computed(shop_lake, plan, monkeypatch, peek):
    """Training hands the audit the validation candidates it computed on every input in full (no second
    computation): the audit passes on the honest features and still catches a peeking window."""
    lake, _ = shop_lake
    if peek:
        peeking = features.feature_window_sql().replace(
            "event_at < $cutoff", "event_at < CAST($cutoff AS TIMESTAMPTZ) + INTERVAL 7 DAY")
        monkeypatch.setattr(features, "feature_window_sql", lambda: peeking)
        monkeypatch.setattr(features, "check_feature_queries", lambda: None)
        monkeypatch.setattr(as_of, "check_window_sql", lambda sql: as_of.AS_OF_INPUTS["silver.events"])
    with lake.engine() as engine:
        versions = features.bind(lake, engine, "silver.events")
        validation, _ = features.labelled_examples(engine, plan.validation, plan, negative_rate=1.0,
                                                   max_negatives=0, seed=1, keep_candidates="kept")
        assert engine.rows("SELECT count(*) FROM kept")[0][0] == len(validation)
        if peek:
            with pytest.raises(LeakageError, match="change when the rows of silver.events at or after the cutoff"):
                leakage.audit_cutoff_invariance(lake, engine, plan.validation, plan.lookback, versions=versions,
                                                computed="kept")
        else:
            leakage.audit_cutoff_invariance(lake, engine, plan.validation, plan.lookback, versions=versions,
                                            computed="kept")
        assert not engine.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'kept'")[0][0]  # dropped
