"""Scoring runs: the champion of each model (`models:/<name>@champion`) writes its predictions as tables.

Each table is overwritten in one Delta commit through `lake.store.write` with a write key
`ml:<table>:<run_id>` (a retried run does not write twice), checked with the checks declared on the
table (`shoplake.layers.ml`, recorded in `ops.data_quality`) and accounted in `ops.ledger` (rows in =
entities scored). Every row carries the champion's `model_version`. Each scoring also records an MLflow
run with the population stability index of every model input against the training data, and warns
when one exceeds `drift.PSI_WARNING`.

With `engine = "spark"` (`shoplake --engine spark ml score`) the champion's predictions are computed on
Spark through MLflow's Spark UDF (`shoplake.ml.spark_scoring`); the model inputs, the checks, the write
and the ledger stay on the embedded engine, so both engines write the same tables the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplake import locks
from shoplake.build import check_table
from shoplake.catalog.models import KINDS, MODEL_NAMES
from shoplake.catalog.spec import TableSpec
from shoplake.engines.base import Capability
from shoplake.errors import ConfigError
from shoplake.lake import Lake
from shoplake.layers import ml as tables
from shoplake.ml import clv, drift, features, monitoring, propensity, recommender, rfm, segmentation
from shoplake.ml.errors import LeakageError
from shoplake.ml.tracking import LoadedModel, Tracker
from shoplake.quality.ledger import LedgerEntry

log = logging.getLogger(__name__)

# (model, model input, probability?) -> one prediction per input row, in input order
Predict = Callable[[LoadedModel, pd.DataFrame, bool], np.ndarray]

_BUILD_HINT = "run `shoplake build` (after `shoplake ingest ...`)"


@dataclass
class ScoreResult:
    """One table written by a scoring run.

    Attributes:
        table: catalog name of the table written.
        rows_written: rows in the table after the write.
        model_name, model_version: the champion that produced the rows.
    """

    table: str
    rows_written: int
    model_name: str
    model_version: int
    table_version: int | None = None
    drift: dict[str, float] = field(default_factory=dict)
    drift_warnings: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    skipped: bool = False  # the write of this run already happened (a retry)


def score(lake: Lake, *, run_id: str, kinds: Sequence[str] | None = None) -> list[ScoreResult]:
    """Score the requested kinds (default all) with their champions; see `shoplake.ml.score_models`."""
    kinds = list(KINDS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown model kind(s) {', '.join(map(repr, unknown))}: expected {', '.join(KINDS)}")
    tracker = Tracker(lake.settings)
    predict = _predictor(lake, tracker)
    lake.ensure_operational_tables()
    results: list[ScoreResult] = []
    for kind in kinds:
        results.extend(_SCORERS[kind](lake, tracker, run_id, predict))
    return results


def _predictor(lake: Lake, tracker: Tracker) -> Predict:
    """How predictions are computed: on the engine's workers when it offers distributed inference
    (Spark), else in this process."""
    if Capability.DISTRIBUTED_INFERENCE in lake.engine_class().capabilities:
        from shoplake.ml import spark_scoring

        def on_spark(loaded: LoadedModel, inputs: pd.DataFrame, probability: bool) -> np.ndarray:
            return spark_scoring.predict(lake.settings, tracker, loaded.ref, inputs, probability=probability)

        return on_spark

    def embedded(loaded: LoadedModel, inputs: pd.DataFrame, probability: bool) -> np.ndarray:
        if probability:
            return propensity.predict(loaded.model, inputs, tuple(inputs.columns),
                                      threads=int(loaded.metadata.get("threads", 1)))
        return np.asarray(loaded.model.predict(inputs))

    return embedded


# -- writing ------------------------------------------------------------------------------------------

def _arrow(spec: TableSpec, frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.loc[:, spec.column_names], schema=spec.arrow_schema, preserve_index=False)


def _write(lake: Lake, spec: TableSpec, frame: pd.DataFrame, *, run_id: str, loaded: LoadedModel,
           rows_in: int, rows_out: int, inputs: dict[str, Any],
           diverted: dict[str, int] | None = None) -> tuple[int, int, bool]:
    """Check, write (overwrite) and account one table (`diverted`: entities scored without a row, by
    reason). Returns (table version, rows, skipped)."""
    key = f"ml:{spec.name}:{run_id}"
    table = _arrow(spec, frame)
    with locks.writing(lake.store.lake, [spec.name]), lake.engine(Capability.EMBEDDED_SQL) as engine:
        done = lake.store.find_write(spec.name, key)
        if done is None and lake.store.exists(spec.name):
            # The same champion on the same input versions gives the same predictions: write nothing.
            last = lake.store.last_write(spec.name)
            if (last is not None and last.meta.get("model_name") == loaded.ref.name
                    and str(last.meta.get("model_version")) == str(loaded.ref.version)
                    and last.meta.get("inputs") == json.loads(json.dumps(inputs, sort_keys=True))):
                done = last
        if done is None:
            engine.bind_arrow("candidate", table)
            check_table(lake, engine, spec, "candidate", run_id)
            # The commit carries its ledger entry (copied to ops.ledger by the sync below).
            entry = LedgerEntry(run_id=run_id, table_name=spec.name, write_key=f"ml:{spec.name}:v{{version}}",
                                rows_in=rows_in, rows_out=rows_out, diverted=dict(diverted or {}),
                                rows_written=table.num_rows,
                                inputs={**inputs, "model": f"{loaded.ref.name}/{loaded.ref.version}"})
            version = lake.store.write(spec.name, table, mode="overwrite", description=spec.description,
                                       meta={"write_key": key, "run_id": run_id, "model_name": loaded.ref.name,
                                             "model_version": loaded.ref.version, "inputs": inputs,
                                             "ledger": entry.as_meta()})
            skipped = False
        else:
            version, skipped = done.version, True
    lake.sync_ledger([spec.name])
    return version, table.num_rows, skipped


def _drift(loaded: LoadedModel, frame: pd.DataFrame, name: str) -> tuple[dict[str, float], dict[str, float]]:
    values = drift.psi_by_feature(loaded.metadata.get("drift_reference", {}), frame)
    warnings = drift.drifted(values)
    for feature, value in sorted(warnings.items()):
        log.warning("%s: input %s drifted from the training data (PSI %.3f > %.2f)", name, feature, value,
                    drift.PSI_WARNING)
    return values, warnings


def _monitor(lake: Lake, kind: str, run_id: str, loaded: LoadedModel, scored_at: datetime, frame: pd.DataFrame,
             psi: dict[str, float], *, predictions: np.ndarray | None = None) -> None:
    """Per-input PSI and value summaries (and the predictions' distribution) to `ops.model_monitoring`."""
    declared = list(loaded.metadata.get("features", []))
    columns = [c for c in declared if c in frame.columns]
    monitoring.record_monitoring(lake, run_id=run_id, kind=kind, model_name=loaded.ref.name,
                                 model_version=loaded.ref.version, scored_at=scored_at,
                                 inputs=frame.loc[:, columns].astype(float), psi=psi, predictions=predictions,
                                 prediction_reference=loaded.metadata.get("prediction_reference"),
                                 declared=declared)


def _log_scoring(tracker: Tracker, kind: str, run_id: str, loaded: LoadedModel, psi: dict[str, float],
                 extra_params: dict[str, Any], rows: int) -> str:
    with tracker.start_run(loaded.ref.name, run_name=f"score-{kind}-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": kind, "shoplake.run_type": "score",
                                 "shoplake.model_version": loaded.ref.version}) as run:
        run.params({"model_version": loaded.ref.version, "psi_warning_threshold": drift.PSI_WARNING,
                    **extra_params})
        run.metrics({"rows_scored": float(rows), "max_psi": max(psi.values(), default=0.0),
                     **{f"psi.{k}": v for k, v in psi.items()}})
        run.tags({"shoplake.drift_warnings": ",".join(sorted(drift.drifted(psi))) or "-"})
        return run.run_id


# -- segments -----------------------------------------------------------------------------------------

def _segments(loaded: LoadedModel, frame: pd.DataFrame, predict: Predict) -> tuple[np.ndarray, dict[int, str]]:
    columns = list(loaded.metadata["features"])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{loaded.ref.name} v{loaded.ref.version} needs inputs {missing} that this version of "
                          f"shoplake does not compute: retrain it with `shoplake ml train`")
    ids = predict(loaded, frame.loc[:, columns].astype(float), False)
    names = {int(k): v for k, v in loaded.metadata["segment_names"].items()}
    return ids, names


def _model_columns(loaded: LoadedModel, scored_at: datetime) -> dict[str, Any]:
    return {"model_name": loaded.ref.name, "model_version": loaded.ref.version, "scored_at": scored_at}


def _score_user_segments(lake: Lake, tracker: Tracker, run_id: str, predict: Predict) -> list[ScoreResult]:
    features.require_tables(lake, (features.USER_SEGMENT_INPUT,), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES["segments"])
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs = features.bind(lake, engine, features.USER_SEGMENT_INPUT)
        frame = features.user_segment_frame(engine)
    ids, names = _segments(loaded, frame, predict)
    scored_at = datetime.now(UTC)
    rows = frame.assign(segment_id=ids.astype("int32"), segment_name=[names[int(i)] for i in ids],
                        **_model_columns(loaded, scored_at))
    grouped = rows.groupby("segment_id")
    profile = pd.DataFrame({
        "count_users": grouped.size(),
        "mean_recency_days": grouped["recency_days"].mean(),
        "mean_frequency": grouped["count_sessions"].mean(),
        "mean_monetary": grouped["revenue"].mean(),
        "mean_count_purchases": grouped["count_purchases"].mean(),
        "mean_views_per_session": grouped["views_per_session"].mean(),
        "mean_carts_per_session": grouped["carts_per_session"].mean(),
        "mean_purchases_per_session": grouped["purchases_per_session"].mean(),
    }).reset_index()
    profile["segment_id"] = profile["segment_id"].astype("int32")
    profile["segment_name"] = [names[int(i)] for i in profile["segment_id"]]
    profile["share_of_users"] = profile["count_users"] / len(rows)
    profile["recommended_action"] = [segmentation.recommended_action(n, segmentation.USER_ACTIONS)
                                     for n in profile["segment_name"]]
    profile = profile.assign(**_model_columns(loaded, scored_at))
    psi, warnings = _drift(loaded, frame, loaded.ref.name)
    mlflow_run = _log_scoring(tracker, "segments", run_id, loaded, psi, {}, len(rows))
    _monitor(lake, "segments", run_id, loaded, scored_at, frame, psi)
    out = []
    for spec, table_frame, rows_out in ((tables.USER_SEGMENTS, rows, len(rows)),
                                        (tables.USER_SEGMENT_PROFILES, profile, int(profile["count_users"].sum()))):
        version, written, skipped = _write(lake, spec, table_frame, run_id=run_id, loaded=loaded, rows_in=len(rows),
                                           rows_out=rows_out, inputs=inputs)
        out.append(ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, psi, warnings,
                               mlflow_run, skipped))
    return out


def _score_rfm(lake: Lake, tracker: Tracker, run_id: str, predict: Predict) -> list[ScoreResult]:
    features.require_tables(lake, (features.RFM_INPUT,), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES["rfm"])
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs = features.bind(lake, engine, features.RFM_INPUT)
        frame = features.rfm_frame(engine)
    ids, names = _segments(loaded, frame, predict)
    scored_at = datetime.now(UTC)
    scores = frame[["r_score", "f_score", "m_score"]].astype(int).astype(str)
    rows = frame.assign(segment_id=ids.astype("int32"), segment_name=[names[int(i)] for i in ids],
                        rfm_cell=scores["r_score"] + scores["f_score"] + scores["m_score"],
                        recency_days=frame["recency_days"].astype("int64"),
                        frequency=frame["frequency"].astype("int64"),
                        **_model_columns(loaded, scored_at))
    grouped = rows.groupby("segment_id")
    total_net = float(rows["net_monetary"].sum())
    profile = pd.DataFrame({
        "count_customers": grouped.size(),
        "mean_recency_days": grouped["recency_days"].mean(),
        "mean_frequency": grouped["frequency"].mean(),
        "mean_monetary": grouped["monetary"].mean(),
        "mean_returns_value": grouped["returns_value"].mean(),
        "mean_net_monetary": grouped["net_monetary"].mean(),
        "total_net_monetary": grouped["net_monetary"].sum(),
        "mean_r_score": grouped["r_score"].mean(),
        "mean_f_score": grouped["f_score"].mean(),
        "mean_m_score": grouped["m_score"].mean(),
    }).reset_index()
    profile["segment_id"] = profile["segment_id"].astype("int32")
    profile["segment_name"] = [names[int(i)] for i in profile["segment_id"]]
    profile["share_of_customers"] = profile["count_customers"] / len(rows)
    profile["share_of_net_monetary"] = profile["total_net_monetary"] / total_net if total_net else np.nan
    profile["recommended_action"] = [segmentation.recommended_action(n, rfm.RFM_ACTIONS)
                                     for n in profile["segment_name"]]
    profile = profile.assign(**_model_columns(loaded, scored_at))
    psi, warnings = _drift(loaded, frame, loaded.ref.name)
    mlflow_run = _log_scoring(tracker, "rfm", run_id, loaded, psi, {}, len(rows))
    _monitor(lake, "rfm", run_id, loaded, scored_at, frame, psi)
    out = []
    for spec, table_frame, rows_out in ((tables.CUSTOMER_SEGMENTS, rows, len(rows)),
                                        (tables.CUSTOMER_SEGMENT_PROFILES, profile,
                                         int(profile["count_customers"].sum()))):
        version, written, skipped = _write(lake, spec, table_frame, run_id=run_id, loaded=loaded, rows_in=len(rows),
                                           rows_out=rows_out, inputs=inputs)
        out.append(ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, psi, warnings,
                               mlflow_run, skipped))
    return out


# -- propensity ---------------------------------------------------------------------------------------

def _score_propensity(lake: Lake, tracker: Tracker, run_id: str, predict: Predict) -> list[ScoreResult]:
    features.require_tables(lake, (features.PROPENSITY_INPUT,), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES["propensity"])
    window = loaded.metadata["window"]
    columns = tuple(loaded.metadata["features"])
    lookback, horizon = timedelta(days=window["lookback_days"]), timedelta(days=window["horizon_days"])
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs = features.bind(lake, engine, features.PROPENSITY_INPUT)
        _, last = features.event_span(engine)
        cutoff = features.scoring_cutoff(last)
        trained_until = datetime.fromisoformat(window["validation_cutoff"]) + horizon
        if cutoff < trained_until:
            # The model saw labels up to `trained_until`: scoring an earlier cutoff would overlap them.
            raise LeakageError(f"the scoring cutoff {cutoff.isoformat()} is before the end of the model's "
                               f"labelled data ({trained_until.isoformat()}): the windows would overlap; "
                               f"retrain with `shoplake ml train propensity`")
        frame = features.pair_features(engine, cutoff, lookback)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{loaded.ref.name} v{loaded.ref.version} needs inputs {missing}: retrain it with "
                          f"`shoplake ml train propensity`")
    matrix = features.as_matrix(frame, columns)  # the model's input, its drift and its monitoring
    probability = predict(loaded, matrix, True)
    scored_at = datetime.now(UTC)
    rows = frame[["user_id", "product_id"]].assign(probability=probability)
    rows = rows.sort_values(["user_id", "probability", "product_id"], ascending=[True, False, True],
                            kind="stable")
    rows["user_rank"] = rows.groupby("user_id").cumcount().astype("int32") + 1
    rows = rows.assign(cutoff_at=cutoff, horizon_days=np.int32(window["horizon_days"]),
                       **_model_columns(loaded, scored_at))
    psi, warnings = _drift(loaded, matrix, loaded.ref.name)
    mlflow_run = _log_scoring(tracker, "propensity", run_id, loaded, psi,
                              {"cutoff_at": cutoff.isoformat(), "lookback_days": window["lookback_days"],
                               "horizon_days": window["horizon_days"]}, len(rows))
    _monitor(lake, "propensity", run_id, loaded, scored_at, matrix, psi,
             predictions=probability)
    spec = tables.CONVERSION_PREDICTIONS
    version, written, skipped = _write(lake, spec, rows, run_id=run_id, loaded=loaded, rows_in=len(frame),
                                       rows_out=len(rows), inputs=inputs)
    # Earlier scorings whose label window has now passed: what their predictions turned into.
    monitoring.record_outcomes(lake, run_id=run_id)
    return [ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, psi, warnings,
                        mlflow_run, skipped)]


# -- recommender --------------------------------------------------------------------------------------

def _score_recommender(lake: Lake, tracker: Tracker, run_id: str, predict: Predict) -> list[ScoreResult]:
    """Write gold.user_recommendations and gold.similar_products with the champion's method, refitted on every
    event before the scoring cutoff (`predict` is unused: the method scores in this process)."""
    features.require_tables(lake, (recommender.INPUT,), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES["recommender"])
    method, params = recommender.params_from_config(dict(getattr(loaded.model, "config", {}) or {}))
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs = features.bind(lake, engine, recommender.INPUT)
        _, cutoff = recommender.cutoffs(engine, params)
        data = recommender.read_interactions(engine, cutoff)
        active_from = cutoff - timedelta(days=params.active_days)
        active_products = engine.table("SELECT DISTINCT product_id FROM silver.events WHERE event_at >= $1 "
                                       "AND event_at < $2 AND product_id IS NOT NULL",
                                       [active_from, cutoff]).to_pandas()["product_id"].to_numpy(np.int64)
    model = recommender.Recommender(method, params, data)
    last_at = data.last_at.reindex(data.user_ids)
    active_rows = np.flatnonzero((last_at >= active_from).to_numpy())
    scored_at = datetime.now(UTC)
    columns = {"cutoff_at": cutoff, "model_name": loaded.ref.name, "model_version": loaded.ref.version,
               "scored_at": scored_at}
    users = model.user_frame(active_rows, params.top_n).assign(**columns)
    item_rows = np.searchsorted(data.product_ids, active_products)
    similar = model.similar_frame(np.sort(item_rows), params.similar_n).assign(**columns)
    mlflow_run = _log_scoring(tracker, "recommender", run_id, loaded, {},
                              {"cutoff_at": cutoff.isoformat(), "method": method, "active_days": params.active_days,
                               "top_n": params.top_n}, len(active_rows))
    out = []
    # Ledger: entities in (active users, active products) = entities with a list + those left without one
    # (every candidate already bought; a product alone in its category with no co-occurrence).
    for spec, frame, rows_in, rows_out in (
            (tables.USER_RECOMMENDATIONS, users, len(active_rows), int(users["user_id"].nunique())),
            (tables.SIMILAR_PRODUCTS, similar, len(item_rows), int(similar["product_id"].nunique()))):
        empty = {"no_candidate": rows_in - rows_out} if rows_in > rows_out else {}
        version, written, skipped = _write(lake, spec, frame, run_id=run_id, loaded=loaded, rows_in=rows_in,
                                           rows_out=rows_out, inputs=inputs, diverted=empty)
        out.append(ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, {}, {},
                               mlflow_run, skipped))
    log.info("%s (%s): %d active users, %d active products", loaded.ref.name, method, len(active_rows),
             len(item_rows))
    return out


# -- customer lifetime value -----------------------------------------------------------------------------

def _score_clv(lake: Lake, tracker: Tracker, run_id: str, predict: Predict) -> list[ScoreResult]:
    """gold.customer_clv: the champion's parameters on every customer's history up to the latest sale day.

    Predictions come from pymc-marketing's formulas over the stored parameter draws in this process on
    either engine (no per-customer model to distribute)."""
    from shoplake.ml.training import CLV_FEATURES, clv_transactions

    features.require_tables(lake, ("silver.sales",), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES["clv"])
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs, _, cutoff, days, returns = clv_transactions(lake, engine)
    summary = clv.summarise(days, returns, cutoff)
    predicted = clv.predict(loaded.model, summary, interval=float(loaded.metadata.get("interval", 0.8)))
    scored_at = datetime.now(UTC)
    rows = predicted.assign(spend_basis=summary["spend_basis"].to_numpy(),
                            frequency=summary["frequency"].astype("int64").to_numpy(),
                            recency_days=summary["recency"].astype("int64").to_numpy(),
                            tenure_days=summary["T"].astype("int64").to_numpy(),
                            net_value=summary["net_value"].to_numpy(),
                            cutoff_at=pd.Timestamp(cutoff, tz="UTC"), **_model_columns(loaded, scored_at))
    frame = summary.loc[:, list(CLV_FEATURES)]
    psi, warnings = _drift(loaded, frame, loaded.ref.name)
    mlflow_run = _log_scoring(tracker, "clv", run_id, loaded, psi, {"cutoff_at": cutoff.isoformat()}, len(rows))
    _monitor(lake, "clv", run_id, loaded, scored_at, frame, psi)
    spec = tables.CUSTOMER_CLV
    version, written, skipped = _write(lake, spec, rows, run_id=run_id, loaded=loaded, rows_in=len(summary),
                                       rows_out=len(rows), inputs=inputs)
    return [ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, psi, warnings,
                        mlflow_run, skipped)]


# How each model kind of `shoplake.catalog.models` scores (a test checks that every kind has one).
_SCORERS = {"segments": _score_user_segments, "rfm": _score_rfm, "propensity": _score_propensity,
            "recommender": _score_recommender, "clv": _score_clv}
