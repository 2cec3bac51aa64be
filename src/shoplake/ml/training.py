"""Training runs: read the inputs through the catalog, fit, log to MLflow, register, crown a champion.

The champion rule: a newly registered version takes the `champion` alias only if it beats the current
champion on its key validation metric (`catalog.models.ModelSpec.key_metric`) by more than the half-width
of the difference's paired-bootstrap 95 % interval (and a declared minimum effect); both are measured on
this run's data whenever the champion can be evaluated on it, otherwise the value recorded when the
champion was trained is used. Propensity must also not be worse on PR-AUC or calibration
(`assessment.decide_champion`). Segments and RFM compare silhouettes on this run's sampled rows, and a
version fit on new input data (other data versions than the champion's) replaces the champion unless it
is clearly worse (`assessment.decide_segments_champion`). A tie never promotes on the same data. The
decision and its numbers go to the new version's tags, the training run and `ops.model_decisions`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as _pkg
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplake import locks
from shoplake.catalog.models import KEY_METRICS, KINDS, MODEL_NAMES, model_spec
from shoplake.engines.base import Capability
from shoplake.errors import ConfigError, InsufficientDataError
from shoplake.lake import Lake
from shoplake.layers.ml import MODEL_DECISIONS
from shoplake.ml import assessment, clv, drift, features, leakage, plots, propensity, recommender, rfm, segmentation
from shoplake.ml.errors import ModelNotFoundError
from shoplake.ml.params import (
    PARAMS_OF_KIND,
    CLVParams,
    Params,
    PropensityParams,
    RecommenderParams,
    RFMParams,
    SegmentParams,
    default_params,
    flat_params,
)
from shoplake.ml.tracking import ModelRef, Tracker
from shoplake.quality.ledger import LedgerEntry

log = logging.getLogger(__name__)

_BUILD_HINT = "run `shoplake build` (after `shoplake ingest ...`)"


@dataclass
class TrainResult:
    """What one training run produced.

    Attributes:
        model_name: registered model name (`shoplake-user-segments`, ...).
        version: the registered version created by this run.
        metrics: the run's headline metrics (the key validation metric included).
        is_champion: whether this version took the `champion` alias.
        mlflow_run_id: the MLflow run holding parameters, metrics, plots and the model.
        warnings: what the run reports without refusing (e.g. a feature that alone nearly separates
            the labels); the CLI prints them in yellow.
    """

    model_name: str
    version: int
    metrics: dict[str, float]
    is_champion: bool
    mlflow_run_id: str
    kind: str = ""
    key_metric: str = ""
    champion_value: float | None = None
    decision: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _fingerprint(lake: Lake, kind: str, params: Params) -> str:
    """Input table versions and parameters: what a training run depends on."""
    versions = {name: lake.store.version(name) for name in model_spec(kind).inputs}
    return json.dumps({"inputs": versions, "params": flat_params(params)}, sort_keys=True, default=str)


def train(lake: Lake, kind: str, *, run_id: str, params: Params | None = None,
          skip_unchanged: bool = False) -> TrainResult:
    """Train one model kind; see `shoplake.ml.train_model`."""
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}: expected one of {', '.join(KINDS)}")
    params = params or default_params(kind)
    expected = PARAMS_OF_KIND[kind]
    if not isinstance(params, expected):
        raise ConfigError(f"{kind} takes {expected.__name__}, got {type(params).__name__}")
    started = time.perf_counter()
    # The model inputs are DuckDB SQL audited for leakage: they run embedded also with `--engine spark`
    # (each session below asks for Capability.EMBEDDED_SQL).
    tracker = Tracker(lake.settings)
    fingerprint = _fingerprint(lake, kind, params)
    if skip_unchanged:
        champion = tracker.champion(MODEL_NAMES[kind])
        if champion is not None and champion.tags.get("shoplake.inputs_fingerprint") == fingerprint:
            return TrainResult(model_name=champion.name, version=champion.version, metrics={}, is_champion=True,
                               mlflow_run_id=str(champion.run_id), kind=kind, key_metric=KEY_METRICS[kind],
                               decision=f"inputs and parameters unchanged: champion v{champion.version} kept",
                               seconds=time.perf_counter() - started, details={"skipped": True})
    result = _TRAINERS[kind](lake, params, run_id, tracker)
    tracker.tag_version(result.model_name, result.version, {"shoplake.inputs_fingerprint": fingerprint})
    result.kind = kind
    result.seconds = time.perf_counter() - started
    return result


# -- champion rule ------------------------------------------------------------------------------------

def _crown(lake: Lake, tracker: Tracker, kind: str, new: ModelRef, champion: ModelRef | None, run, *, run_id: str,
           decided: assessment.ChampionDecision, input_versions: dict[str, Any]) -> tuple[bool, str]:
    """Apply a champion decision to a new version and record it (MLflow, `ops.model_decisions`); return it."""
    metric = KEY_METRICS[kind]
    promote, decision = decided.promote, decided.decision
    tags = {"shoplake.key_metric": metric, "shoplake.key_metric_value": f"{decided.value:.6f}",
            "shoplake.decision": decision, "shoplake.kind": kind,
            "shoplake.input_versions": json.dumps(input_versions, sort_keys=True, default=str)}
    if decided.champion_value is not None:
        tags["shoplake.champion_value_compared"] = f"{decided.champion_value:.6f}"
    tracker.tag_version(new.name, new.version, tags)
    if promote:
        tracker.promote(new.name, new.version)
    run.tags({"shoplake.decision": decision, "shoplake.is_champion": promote,
              **({"shoplake.data_changed": decided.data_changed} if decided.data_changed is not None else {})})
    run.dict({**decided.as_dict(), "input_versions": input_versions}, "champion_decision.json")
    if decided.difference is not None:
        run.metrics({"champion.difference": decided.difference.value, "champion.difference_low":
                     decided.difference.low, "champion.difference_high": decided.difference.high,
                     "champion.required_gain": decided.required_gain})
    _record_decision(lake, kind, new, decided, champion=champion, run_id=run_id, metric=metric,
                     input_versions=input_versions)
    log.info("%s v%d: %s", new.name, new.version, decision)
    return promote, decision


def _record_decision(lake: Lake, kind: str, new: ModelRef, decided: assessment.ChampionDecision, *,
                     champion: ModelRef | None, run_id: str, metric: str, input_versions: dict[str, Any]) -> None:
    """Append the decision to `ops.model_decisions` (one commit with its ledger entry; a retried run writes
    it once)."""
    diff = decided.difference
    difference = diff.value if diff is not None else (
        decided.value - decided.champion_value if decided.champion_value is not None else None)
    row = {"model_name": new.name, "model_version": new.version, "kind": kind, "run_id": run_id,
           "decided_at": datetime.now(UTC), "key_metric": metric, "value": decided.value,
           "champion_version": champion.version if champion is not None else None,
           "champion_value": decided.champion_value, "difference": difference,
           "difference_low": diff.low if diff is not None else None,
           "difference_high": diff.high if diff is not None else None, "required_gain": decided.required_gain,
           "pr_auc_difference": decided.pr_auc_difference, "brier_skill_difference": decided.brier_skill_difference,
           "compared_on": decided.compared_on, "promoted": decided.promote, "decision": decided.decision,
           "data_changed": decided.data_changed,
           "input_versions": json.dumps(input_versions, sort_keys=True, default=str)}
    spec = lake.catalog.get(MODEL_DECISIONS.name)
    table = pa.Table.from_pylist([row], schema=spec.arrow_schema)
    key = f"ml-decision:{new.name}:{new.version}"
    # One registered version in, its decision row out (verify: one row per entry).
    entry = LedgerEntry(run_id=run_id, table_name=spec.name, write_key=key, rows_in=1, rows_out=1, rows_written=1,
                        inputs={"model": f"{new.name}/{new.version}", **input_versions})
    with locks.writing(lake.store.lake, [spec.name]):
        if lake.store.exists(spec.name) and lake.store.find_write(spec.name, key) is not None:
            return
        lake.store.write(spec.name, table, mode="append", description=spec.description,
                         meta={"write_key": key, "run_id": run_id, "ledger": entry.as_meta()})
    lake.sync_ledger([spec.name])


def _data_change(current: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool | None, str]:
    """Whether the champion was fit on other data versions of the inputs, and the versions in words."""
    now = ", ".join(f"{name} v{version}" for name, version in sorted(current.items()))
    if champion is None:
        return None, f"{now}; the champion's are not recorded"
    changed = {name: champion.get(name) for name, version in current.items()
               if str(champion.get(name)) != str(version)}
    if not changed:
        return False, now
    return True, f"{now}; the champion was fit on " + ", ".join(f"{n} v{v}" for n, v in sorted(changed.items()))


# -- segments (users and RFM) -------------------------------------------------------------------------

def _segment_run(lake: Lake, tracker: Tracker, *, kind: str, run_id: str, params: SegmentParams | RFMParams,
                 frame: pd.DataFrame, feature_columns: tuple[str, ...], profile_columns: tuple[str, ...],
                 value, namer, actions: dict[str, str], input_versions: dict[str, Any],
                 entity: str) -> TrainResult:
    model_name = MODEL_NAMES[kind]
    X = frame.loc[:, list(feature_columns)].astype(float)
    selection, model, segment_ids, rows = segmentation.fit_segments(X, params, value(frame).to_numpy())
    profile = segmentation.profile_frame(frame, segment_ids, list(dict.fromkeys(feature_columns + profile_columns)))
    names = namer(profile)
    row_silhouettes = segmentation.silhouette_values_on(X, rows, segment_ids)
    silhouette = float(row_silhouettes.mean())
    metrics = {"silhouette": silhouette, "k": float(selection.chosen_k), "inertia":
               selection.inertias[selection.ks.index(selection.chosen_k)], "rows": float(len(frame)),
               "silhouette_sample_rows": float(len(rows))}
    champion = tracker.champion(model_name)
    champion_rows, champion_inputs = _champion_on_rows(tracker, model_name, champion, X, rows, feature_columns)
    data_changed, data_note = _data_change(input_versions, champion_inputs)
    recorded = champion.tags.get("shoplake.key_metric_value") if champion is not None else None
    decided = assessment.decide_segments_champion(
        row_silhouettes, champion_rows, champion_version=champion.version if champion is not None else None,
        recorded_value=float(recorded) if recorded not in (None, "") else None, data_changed=data_changed,
        params=params, data_note=data_note)
    champion_value = decided.champion_value
    with tracker.start_run(model_name, run_name=f"train-{kind}-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": kind,
                                 "shoplake.run_type": "train"}) as run:
        run.params({**flat_params(params), "features": ",".join(feature_columns), "chosen_k": selection.chosen_k,
                    "k_criterion": ("max mean bootstrap ARI (ties within 0.01: better silhouette)"
                                    if params.k_criterion == "stability"
                                    else "max silhouette on a seeded sample (smaller k within k_tolerance)"),
                    **{f"input.{k}": v for k, v in input_versions.items()}})
        run.metrics(metrics)
        for i, (k, inertia, sil) in enumerate(zip(selection.ks, selection.inertias, selection.silhouettes,
                                                  strict=True)):
            stability = {"stability_ari": selection.stabilities[i]} if selection.stabilities else {}
            run.metrics({"elbow_inertia": inertia, "elbow_silhouette": sil, **stability}, step=k)
        run.metrics({f"segment_size.{names[i]}": float(profile.loc[i, "size"]) for i in profile.index})
        run.figure(plots.k_selection(selection.ks, selection.inertias, selection.silhouettes, selection.chosen_k,
                                     f"{model_name}: choosing k"), "plots/elbow_silhouette.png")
        run.figure(plots.segment_profiles(profile, names, list(feature_columns + profile_columns),
                                          f"{model_name}: segment profiles"), "plots/segment_profiles.png")
        run.dict({"segments": [{"segment_id": int(i), "segment_name": names[i],
                                "recommended_action": segmentation.recommended_action(names[i], actions),
                                **{c: float(profile.loc[i, c]) for c in profile.columns}}
                               for i in profile.index]}, "segment_profiles.json")
        metadata = {"shoplake_kind": kind, "entity": entity, "features": list(feature_columns),
                    "segment_names": {str(i): names[i] for i in profile.index},
                    "drift_reference": drift.references(X, feature_columns),
                    "key_metric": "silhouette", "key_metric_value": silhouette, "input_versions": input_versions,
                    "run_id": run_id}
        ref = run.model(model, registered_name=model_name, input_example=X.head(5), predict_fn="predict",
                        metadata=metadata)
        is_champion, decision = _crown(lake, tracker, kind, ref, champion, run, run_id=run_id, decided=decided,
                                       input_versions=input_versions)
        return TrainResult(model_name, ref.version, metrics, is_champion, run.run_id, key_metric="silhouette",
                           champion_value=champion_value, decision=decision,
                           details={"segments": {names[i]: int(profile.loc[i, "size"]) for i in profile.index},
                                    "k_silhouettes": dict(zip(selection.ks, selection.silhouettes, strict=True)),
                                    "k_stabilities": dict(zip(selection.ks, selection.stabilities or [],
                                                              strict=False))})


def _champion_on_rows(tracker: Tracker, model_name: str, champion: ModelRef | None, X: pd.DataFrame,
                      rows: np.ndarray, feature_columns: tuple[str, ...]
                      ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """The current champion's silhouette per sampled row of this run (None when it cannot be evaluated),
    and the input data versions it was fit on (None when not recorded)."""
    if champion is None:
        return None, None
    recorded = champion.tags.get("shoplake.input_versions")
    inputs = json.loads(recorded) if recorded else None
    try:
        loaded = tracker.load_champion(model_name)
    except ModelNotFoundError as exc:  # unreadable artifact: compare with its recorded value instead
        log.warning("%s: cannot evaluate the champion on this data (%s)", model_name, exc)
        return None, inputs
    inputs = inputs if inputs is not None else loaded.metadata.get("input_versions")
    if list(loaded.metadata.get("features", [])) != list(feature_columns):
        return None, inputs
    return segmentation.silhouette_values_on(X, rows, loaded.model.predict(X)), inputs


def _train_user_segments(lake: Lake, params: SegmentParams, run_id: str, tracker: Tracker) -> TrainResult:
    features.require_tables(lake, (features.USER_SEGMENT_INPUT,), hint=_BUILD_HINT)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions = features.bind(lake, engine, features.USER_SEGMENT_INPUT)
        frame = features.user_segment_frame(engine)
    return _segment_run(lake, tracker, kind="segments", run_id=run_id, params=params, frame=frame,
                        feature_columns=features.USER_SEGMENT_FEATURES,
                        profile_columns=features.USER_PROFILE_COLUMNS, value=segmentation.user_value,
                        namer=segmentation.name_user_segments, actions=segmentation.USER_ACTIONS,
                        input_versions=versions, entity="user_id")


def _train_rfm(lake: Lake, params: RFMParams, run_id: str, tracker: Tracker) -> TrainResult:
    features.require_tables(lake, (features.RFM_INPUT,), hint=_BUILD_HINT)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions = features.bind(lake, engine, features.RFM_INPUT)
        frame = features.rfm_frame(engine)
    return _segment_run(lake, tracker, kind="rfm", run_id=run_id, params=params, frame=frame,
                        feature_columns=features.RFM_FEATURES, profile_columns=features.RFM_PROFILE_COLUMNS,
                        value=rfm.rfm_value, namer=rfm.name_rfm_segments, actions=rfm.RFM_ACTIONS,
                        input_versions=versions, entity="customer_id")


# -- propensity ---------------------------------------------------------------------------------------

def _window_metadata(plan: features.CutoffPlan, window: features.WindowSettings) -> dict[str, Any]:
    return {"lookback_days": window.lookback_days, "horizon_days": window.horizon_days,
            "step_days": window.step_days, "max_train_cutoffs": window.max_train_cutoffs,
            "train_cutoffs": [c.isoformat() for c in plan.train], "validation_cutoff": plan.validation.isoformat(),
            "scoring_cutoff": plan.scoring.isoformat()}


def collect_examples(engine, params: PropensityParams, *, plan: features.CutoffPlan | None = None,
                     keep_validation: str | None = None
                     ) -> tuple[features.CutoffPlan, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Cutoff plan (default: planned from the event span), training examples (sampled negatives,
    weighted) and all validation candidates (`keep_validation`: also left in that temp table)."""
    plan = plan or features.plan_cutoffs(*features.event_span(engine), params.window)
    per_cutoff = max(1, params.max_train_negatives // len(plan.train))
    parts: list[pd.DataFrame] = []
    stats: dict[str, dict[str, Any]] = {"train": {}, "validation": {}}
    for cutoff in plan.train:
        frame, counts = features.labelled_examples(engine, cutoff, plan, negative_rate=None,
                                                   max_negatives=per_cutoff, seed=params.random_state)
        parts.append(frame)
        stats["train"][cutoff.isoformat()] = counts
    train_frame = pd.concat(parts, ignore_index=True)
    validation, counts = features.labelled_examples(engine, plan.validation, plan, negative_rate=1.0,
                                                    max_negatives=0, seed=params.random_state,
                                                    keep_candidates=keep_validation)
    stats["validation"] = counts
    return plan, train_frame, validation, stats


def _train_propensity(lake: Lake, params: PropensityParams, run_id: str, tracker: Tracker) -> TrainResult:
    model_name = MODEL_NAMES["propensity"]
    # Audit 0, before anything is read: the feature queries may read only inputs bound as of the cutoff.
    features.check_feature_queries()
    inputs = tuple(source.table for source in leakage.bound_inputs())
    features.require_tables(lake, inputs, hint=_BUILD_HINT)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions = features.bind(lake, engine, *inputs)
        plan, train_frame, validation, stats = collect_examples(engine, params, keep_validation="validation_pairs")
        # Audit 1 (cutoff invariance over every bound input) on the validation cutoff, before anything is
        # fitted or logged: the validation features just computed on every input in full, against the same
        # computed on the inputs bound as of the cutoff.
        leakage.audit_cutoff_invariance(lake, engine, plan.validation, plan.lookback, versions=versions,
                                        computed="validation_pairs")
    plan.check()  # audit 3: windows do not overlap
    # Audit 2, a warning: a feature that alone nearly separates the validation labels is reported.
    aucs = leakage.single_feature_aucs(validation, features.PAIR_FEATURES)
    audit_warnings = leakage.strong_feature_warnings(aucs, threshold=params.max_single_feature_auc,
                                                     reviewed=params.reviewed_strong_features)

    candidates = propensity.train_candidates(train_frame, validation, params)
    chosen = propensity.best(candidates)
    # Honest evaluation: every candidate and baseline rule, every metric with its bootstrap interval.
    _, cal = propensity.split_fit_calibration(train_frame, params)
    report = assessment.assess(cal, validation, candidates, stats["validation"], params, cutoff=plan.validation,
                               chosen=chosen.name)
    baseline = next((c for c in candidates if c.name == "popularity"), None)
    y = validation["label"].to_numpy()
    metrics = dict(chosen.metrics)
    metrics.update({
        "train_cutoffs": float(len(plan.train)),
        "train_positives": float(train_frame["label"].sum()), "train_rows": float(len(train_frame)),
        "val_candidates": float(stats["validation"]["candidates"]),
        "val_positives": float(stats["validation"]["positives"]),
    })
    if baseline is not None:
        metrics["baseline_val_roc_auc"] = baseline.metrics["val_roc_auc"]
    chosen_eval = report.estimates[chosen.name]
    best_baseline = report.best_baseline("pr_auc")
    metrics.update({"val_coverage": report.coverage.value, "val_conversions": float(report.conversions),
                    "val_brier_skill": chosen_eval["brier_skill"].value, "val_ece": chosen_eval["ece"].value,
                    "val_pr_auc_low": chosen_eval["pr_auc"].low, "val_pr_auc_high": chosen_eval["pr_auc"].high,
                    "val_roc_auc_low": chosen_eval["roc_auc"].low, "val_roc_auc_high": chosen_eval["roc_auc"].high,
                    "best_baseline_val_pr_auc": report.estimates[best_baseline]["pr_auc"].value})
    champion = tracker.champion(model_name)
    champion_p = _champion_probabilities(tracker, model_name, champion, validation, params)
    recorded = champion.tags.get("shoplake.key_metric_value") if champion is not None else None
    decided = assessment.decide_champion(y, chosen.probabilities, champion_p,
                                         champion_version=champion.version if champion is not None else None,
                                         recorded_value=float(recorded) if recorded not in (None, "") else None,
                                         params=params, new_draws=report.draws[chosen.name])
    champion_value = decided.champion_value
    with tracker.start_run(model_name, run_name=f"train-propensity-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": "propensity",
                                 "shoplake.run_type": "train", "shoplake.chosen_model": chosen.name}) as run:
        run.params({**flat_params(params), "chosen_model": chosen.name,
                    "candidates": "pairs with an event in [cutoff - lookback, cutoff)",
                    "label": "purchase of the product by the user in [cutoff, cutoff + horizon)",
                    "train_cutoffs": ",".join(c.date().isoformat() for c in plan.train),
                    "validation_cutoff": plan.validation.isoformat(), "scoring_cutoff": plan.scoring.isoformat(),
                    **{f"input.{k}": v for k, v in versions.items()}})
        run.metrics(metrics)
        for candidate in candidates:
            run.metrics({f"{candidate.name}.{k}": v for k, v in candidate.metrics.items()})
        run.metrics({f"feature_auc.{k}": v for k, v in aucs.items()})
        run.metrics(report.flat_metrics())
        run.dict(report.as_dict(), "evaluation.json")
        run.dict({"examples": stats, "single_feature_auc": aucs,
                  "single_feature_auc_threshold": params.max_single_feature_auc, "warnings": audit_warnings,
                  "reviewed_strong_features": dict(params.reviewed_strong_features),
                  "feature_queries": "parse-checked: read only inputs bound as of the cutoff",
                  "cutoff_invariance": f"passed on the validation cutoff over {', '.join(inputs)}"},
                 "leakage_audit.json")
        run.tags({"shoplake.warnings": len(audit_warnings)})
        scores = {c.name: c.probabilities for c in candidates}
        run.figure(plots.roc_pr(y, scores), "plots/roc_pr.png")
        run.figure(plots.calibration(y, scores), "plots/calibration.png")
        importance = propensity.importance(chosen, validation, seed=params.random_state, threads=params.threads)
        run.figure(plots.feature_importance(importance, f"{model_name}: {chosen.name}"),
                   "plots/feature_importance.png")
        run.dict({"permutation_importance_roc_auc": importance.sort_values(ascending=False).to_dict()},
                 "feature_importance.json")
        example = features.as_matrix(validation.head(5), chosen.columns)
        metadata = {"shoplake_kind": "propensity", "model": chosen.name, "features": list(chosen.columns),
                    "window": _window_metadata(plan, params.window),
                    "drift_reference": drift.references(features.as_matrix(train_frame, chosen.columns),
                                                        chosen.columns),
                    # validation candidates are unsampled, like the scored ones: the reference of predictions
                    "prediction_reference": drift.reference(chosen.probabilities).to_dict(),
                    "key_metric": "val_roc_auc", "key_metric_value": chosen.metrics["val_roc_auc"],
                    "threads": params.threads, "run_id": run_id}
        ref = run.model(chosen.model, registered_name=model_name, input_example=example,
                        predict_fn="predict_proba", metadata=metadata)
        is_champion, decision = _crown(lake, tracker, "propensity", ref, champion, run, run_id=run_id,
                                       decided=decided, input_versions=versions)
        return TrainResult(model_name, ref.version, metrics, is_champion, run.run_id, key_metric="val_roc_auc",
                           champion_value=champion_value, decision=decision,
                           details={"models": {c.name: c.metrics for c in candidates}, "chosen": chosen.name,
                                    "feature_auc": aucs, "plan": _window_metadata(plan, params.window),
                                    "assessment": report},
                           warnings=audit_warnings)


def _champion_probabilities(tracker: Tracker, model_name: str, champion: ModelRef | None, validation: pd.DataFrame,
                            params: PropensityParams) -> np.ndarray | None:
    """The champion's probabilities on this run's validation candidates, if it uses the same windows and features."""
    if champion is None:
        return None
    try:
        loaded = tracker.load_champion(model_name)
    except ModelNotFoundError as exc:
        log.warning("%s: cannot evaluate the champion on this data (%s)", model_name, exc)
        return None
    window = loaded.metadata.get("window", {})
    columns = tuple(loaded.metadata.get("features", []))
    same = (window.get("lookback_days") == params.window.lookback_days
            and window.get("horizon_days") == params.window.horizon_days
            and columns and set(columns) <= set(validation.columns))
    if not same:
        return None
    return propensity.predict(loaded.model, validation, columns, threads=params.threads)


# -- recommender --------------------------------------------------------------------------------------

def _recommender_champion_config(tracker: Tracker, name: str) -> tuple[ModelRef | None, dict[str, Any] | None]:
    """The champion version and its configuration (None when it cannot be loaded)."""
    champion = tracker.champion(name)
    if champion is None:
        return None, None
    try:
        loaded = tracker.load_champion(name)
    except ModelNotFoundError as exc:
        log.warning("%s: cannot evaluate the champion on this data (%s)", name, exc)
        return champion, None
    return champion, dict(getattr(loaded.model, "config", {}) or {})


def champion_refitted(evaluation: recommender.Evaluation, champion_config: dict[str, Any] | None,
                      train_data: recommender.Interactions, purchases: pd.DataFrame, params: RecommenderParams, *,
                      cutoff: datetime, horizon_end: datetime) -> recommender.MethodResult | None:
    """The champion's method refitted on this run's events, measured on the same users and resamples (None
    when its configuration is unusable).

    A method is what it learns from the events before the cutoff, so when the champion's configuration is one
    this run has just evaluated (its method with these very parameters: a scheduled retraining on new data
    with unchanged parameters), that result is the refit's and is reused; otherwise the method is fitted."""
    if not champion_config or champion_config.get("method") not in recommender.METHODS:
        return None
    method, champion_params = recommender.params_from_config(champion_config)
    if champion_params == params and method in evaluation.results:
        return evaluation.results[method]
    return recommender.evaluate(train_data, purchases, params, cutoff=cutoff, horizon_end=horizon_end,
                                methods=[("champion", method, champion_params)]).results["champion"]


def _train_recommender(lake: Lake, params: RecommenderParams, run_id: str, tracker: Tracker) -> TrainResult:
    """Compare the methods, register the best recall@10, apply the champion rule (`shoplake.ml.recommender`)."""
    model_name = MODEL_NAMES["recommender"]
    features.require_tables(lake, (recommender.INPUT,), hint=_BUILD_HINT)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions = features.bind(lake, engine, recommender.INPUT)
        cutoff, scoring = recommender.cutoffs(engine, params)
        train_data = recommender.read_interactions(engine, cutoff)
        purchases = recommender.read_purchases(engine, cutoff, scoring)
        example = engine.table(f"SELECT {', '.join(recommender.EVENT_COLUMNS)} FROM silver.events "
                               "WHERE event_at < $1 ORDER BY event_at, user_id, product_id LIMIT 200",
                               [cutoff]).to_pandas()
    # MLflow signatures hold timezone-naive datetimes only: the example's event_at in UTC
    example["event_at"] = example["event_at"].dt.tz_convert("UTC").dt.tz_localize(None)
    evaluation = recommender.evaluate(train_data, purchases, params, cutoff=cutoff, horizon_end=scoring)
    chosen = max(evaluation.results.values(), key=lambda r: r.estimates[recommender.KEY].value).method
    champion, champion_config = _recommender_champion_config(tracker, model_name)
    paired = dataclasses.replace(evaluation, results={})
    refitted = champion_refitted(evaluation, champion_config, train_data, purchases, params, cutoff=cutoff,
                                 horizon_end=scoring)
    if refitted is not None:
        paired.results["champion"] = refitted
    paired.results["new"] = evaluation.results[chosen]
    recorded = champion.tags.get("shoplake.key_metric_value") if champion is not None else None
    new = paired.results["new"].estimates[recommender.KEY]
    compared = "champion" in paired.results
    decided = assessment.decide_recommender_champion(
        new.value, new, paired.difference("new", "champion", recommender.KEY) if compared else None,
        paired.results["champion"].estimates[recommender.KEY].value if compared else None,
        champion_version=champion.version if champion is not None else None,
        recorded_value=float(recorded) if recorded not in (None, "") else None,
        min_effect=params.champion_min_effect)
    best = evaluation.results[chosen].estimates
    popularity = "popularity" if "popularity" in evaluation.results else None
    metrics: dict[str, float] = {f"val_{m}": e.value for m, e in best.items()}
    metrics.update({f"val_{m}_low": e.low for m, e in best.items() if np.isfinite(e.low)})
    metrics.update({f"val_{m}_high": e.high for m, e in best.items() if np.isfinite(e.high)})
    metrics.update({"val_users": float(len(evaluation.user_ids)), "train_users": float(train_data.n_users),
                    "train_products": float(train_data.n_items), "val_buyers": float(evaluation.buyers)})
    for name, result in evaluation.results.items():
        metrics.update({f"{name}.{m}": e.value for m, e in result.estimates.items()})
        metrics[f"{name}.seconds"] = result.seconds
    details: dict[str, Any] = {"evaluation": evaluation, "chosen": chosen}
    if popularity is not None and chosen != popularity:
        gain = evaluation.difference(chosen, popularity, recommender.KEY)
        metrics.update({"gain_over_popularity": gain.value, "gain_over_popularity_low": gain.low,
                        "gain_over_popularity_high": gain.high})
        details["gain_over_popularity"] = gain
    key_value = best[recommender.KEY].value
    with tracker.start_run(model_name, run_name=f"train-recommender-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": "recommender",
                                 "shoplake.run_type": "train", "shoplake.chosen_model": chosen}) as run:
        run.params({**flat_params(params), "chosen_model": chosen, "validation_cutoff": cutoff.isoformat(),
                    "scoring_cutoff": scoring.isoformat(),
                    "relevant": "products bought in [cutoff, cutoff + horizon) not bought before the cutoff",
                    **{f"input.{k}": v for k, v in versions.items()}})
        run.metrics(metrics)
        run.dict(evaluation.as_dict(), "evaluation.json")
        config = recommender.params_config(chosen, params)
        output = recommender.recommend_events(example, config)
        metadata = {"shoplake_kind": "recommender", "model": chosen, "key_metric": "val_recall_at_10",
                    "key_metric_value": key_value, "validation_cutoff": cutoff.isoformat(),
                    "input_versions": versions, "run_id": run_id, "config": config}
        ref = run.code_model(recommender.MODEL_CODE, registered_name=model_name, config=config, input_example=example,
                             output_example=output, metadata=metadata,
                             requirements=[f"{p}=={_pkg.version(p)}" for p in ("implicit", "numba")])
        is_champion, decision = _crown(lake, tracker, "recommender", ref, champion, run, run_id=run_id, decided=decided,
                                       input_versions=versions)
    return TrainResult(model_name, ref.version, metrics, is_champion, run.run_id, key_metric="val_recall_at_10",
                       champion_value=decided.champion_value, decision=decision, details=details)


# -- customer lifetime value -----------------------------------------------------------------------------

CLV_FEATURES = ("frequency", "recency", "T", "monetary_value")


def clv_transactions(lake: Lake, engine) -> tuple[dict[str, Any], Any, Any, pd.DataFrame, pd.DataFrame]:
    """Bind the CLV inputs; (versions, first day, cutoff, purchase days, returns) of all the data."""
    features.require_tables(lake, ("silver.sales",), hint=_BUILD_HINT)
    inputs = [name for name in clv.INPUTS if lake.store.exists(name)]
    versions = features.bind(lake, engine, *inputs)
    first, last = clv.sales_span(engine)
    if last is None:
        raise InsufficientDataError("silver.sales holds no sale lines: no customer lifetime value to fit")
    cutoff = last + pd.Timedelta(days=1).to_pytimedelta()
    days, returns = clv.read_transactions(engine, cutoff, with_returns="silver.returns" in inputs)
    return versions, first, cutoff, days, returns


def _decide_clv(value: float, champion: ModelRef | None, data_changed: bool | None, data_note: str,
                min_effect: float = 0.01) -> assessment.ChampionDecision:
    """The CLV champion rule: a fit on new input data replaces the champion (it scores today's customers
    from today's data; the holdout check is reported, not a veto); on the same data, a tie keeps it."""
    if champion is None:
        return assessment.ChampionDecision(True, "first version: champion", value, compared_on="no champion")
    recorded = champion.tags.get("shoplake.key_metric_value")
    champion_value = float(recorded) if recorded not in (None, "") else None
    if data_changed:
        return assessment.ChampionDecision(True, f"new input data ({data_note}): promoted", value, champion_value,
                                           compared_on="the champion's recorded value", data_changed=True)
    better = champion_value is None or (np.isfinite(value) and value > champion_value + min_effect)
    decision = (f"holdout_accuracy {value:.4f} vs champion v{champion.version} "
                f"{champion_value if champion_value is not None else float('nan'):.4f} on the same data: "
                + ("promoted" if better else f"champion kept (a gain of more than {min_effect} is needed)"))
    return assessment.ChampionDecision(bool(better), decision, value, champion_value, required_gain=min_effect,
                                       compared_on="the champion's recorded value", data_changed=data_changed)


def _train_clv(lake: Lake, params: CLVParams, run_id: str, tracker: Tracker) -> TrainResult:
    model_name = MODEL_NAMES["clv"]
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions, first, cutoff, days, returns = clv_transactions(lake, engine)
    last = cutoff - pd.Timedelta(days=1).to_pytimedelta()
    fit_args: dict[str, Any] = {"method": params.fit_method, "draws": params.draws, "seed": params.random_state}
    started = time.perf_counter()
    split = clv.holdout_split(last, first, params.holdout_days)
    checked, holdout_note = None, "the data span less than three weeks"
    if split is not None:
        try:
            checked = clv.holdout(days, returns, calibration_cutoff=split[0], end=split[1],
                                  interval=params.interval, **fit_args)
            holdout_note = f"fit before {split[0].isoformat()}, predicted until {split[1].isoformat()}"
        except clv.ClvFitError as exc:  # too few customers before the split: still fit on all data
            holdout_note = f"no holdout check: {exc}"
            log.warning("%s: %s", model_name, holdout_note)
    try:
        summary = clv.summarise(days, returns, cutoff)
        model = clv.fit(summary, cutoff, **fit_args)
    except clv.ClvFitError as exc:
        raise InsufficientDataError(f"customer lifetime value not fit: {exc}") from exc
    fit_seconds = time.perf_counter() - started
    metrics = {"customers": float(model.customers), "spend_customers": float(model.spend_customers),
               "population_spend_customers": float((summary["spend_basis"] == "population").sum()),
               "fit_seconds": fit_seconds, **model.parameters()}
    if checked is not None:
        metrics.update(checked.metrics())
    value = float(metrics.get("holdout_accuracy", float("nan")))
    champion = tracker.champion(model_name)
    recorded_inputs = champion.tags.get("shoplake.input_versions") if champion is not None else None
    data_changed, data_note = _data_change(versions, json.loads(recorded_inputs) if recorded_inputs else None)
    decided = _decide_clv(value, champion, data_changed, data_note)
    with tracker.start_run(model_name, run_name=f"train-clv-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": "clv", "shoplake.run_type": "train"}
                           ) as run:
        run.params({**flat_params(params), "cutoff": cutoff.isoformat(),
                    "purchase": "a day with a sale line of the customer",
                    "monetary_value": "(sales + returns) / purchase days, before the cutoff",
                    "holdout": holdout_note,
                    **{f"input.{k}": v for k, v in versions.items()}})
        run.metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        if checked is not None:
            run.dict(checked.as_dict(), "holdout.json")
        metadata = {"shoplake_kind": "clv", "entity": "customer_id", "features": list(CLV_FEATURES),
                    "drift_reference": drift.references(summary.loc[:, list(CLV_FEATURES)], CLV_FEATURES),
                    "cutoff": cutoff.isoformat(), "interval": params.interval, "horizons": clv.HORIZONS,
                    "key_metric": "holdout_accuracy", "key_metric_value": value, "input_versions": versions,
                    "run_id": run_id}
        with clv.saved(model) as tmp:
            ref = run.model_directory(Path(tmp) / "model", loader_module="shoplake.ml.clv",
                                      registered_name=model_name, metadata=metadata,
                                      requirements=("pymc-marketing", "pymc", "arviz", "numpy", "pandas"))
        is_champion, decision = _crown(lake, tracker, "clv", ref, champion, run, run_id=run_id, decided=decided,
                                       input_versions=versions)
        return TrainResult(model_name, ref.version, metrics, is_champion, run.run_id, key_metric="holdout_accuracy",
                           champion_value=decided.champion_value, decision=decision,
                           details={"holdout": checked, "fit_seconds": fit_seconds})


# How each model kind of `shoplake.catalog.models` trains (a test checks that every kind has one).
_TRAINERS: dict[str, Callable[[Lake, Any, str, Tracker], TrainResult]] = {
    "segments": _train_user_segments, "rfm": _train_rfm, "propensity": _train_propensity,
    "recommender": _train_recommender, "clv": _train_clv}
