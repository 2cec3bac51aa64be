"""Training and scoring of the recommender (`shoplake.ml.recommender`), wired like the other model kinds.

Training compares every method of `RecommenderParams.methods` on the validation week (fit on the events
before `scoring cutoff - horizon`, measured on the purchases of the following `horizon_days`), registers
the best recall@10 as a new version of `shoplake-recommender` and applies the champion rule: the current
champion's method and parameters are refitted on the same events and measured on the same users, and the
new version is promoted only when its recall@10 is higher by more than the half-width of the paired
bootstrap interval of the difference (and `champion_min_effect`); a tie keeps the champion.

Scoring refits the champion's method on every event before the scoring cutoff (the midnight after the last
event) and writes the top N of each active user and the similar products of each active product.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta
from importlib import metadata as _pkg
from pathlib import Path
from typing import Any

import numpy as np

from shoplake.catalog.models import MODEL_NAMES
from shoplake.engines.base import Capability
from shoplake.lake import Lake
from shoplake.layers import ml as tables
from shoplake.ml import assessment, features, recommender
from shoplake.ml.errors import ModelNotFoundError
from shoplake.ml.evaluation import Estimate
from shoplake.ml.params import RecommenderParams, flat_params
from shoplake.ml.tracking import Tracker

log = logging.getLogger(__name__)

KIND = "recommender"
KEY = "recall_at_10"
INPUT = "silver.events"
_BUILD_HINT = "run `shoplake build` (after `shoplake ingest clickstream ...`)"
_CODE = Path(__file__).with_name("recommender_model.py")


def _cutoffs(engine, params: RecommenderParams) -> tuple[datetime, datetime]:
    """(validation cutoff, scoring cutoff): the scoring cutoff is the midnight after the last event."""
    _, last = features.event_span(engine)
    scoring = features.scoring_cutoff(last)
    return scoring - timedelta(days=params.horizon_days), scoring


def decide(evaluation: recommender.Evaluation, *, champion_version: int | None, recorded_value: float | None,
           compared: bool, params: RecommenderParams) -> assessment.ChampionDecision:
    """The champion rule on recall@10 (`new` and, when `compared`, `champion` results of `evaluation`)."""
    value = evaluation.results["new"].estimates[KEY].value
    if champion_version is None:
        return assessment.ChampionDecision(True, "first version: champion", value, compared_on="no champion")
    if compared:
        diff = evaluation.difference("new", "champion", KEY)
        champion_value = evaluation.results["champion"].estimates[KEY].value
        compared_on = "both refitted on this run's validation week"
    else:
        if recorded_value is None:
            return assessment.ChampionDecision(True, f"champion v{champion_version} has no recorded {KEY}: "
                                               "promoted", value, compared_on="nothing to compare")
        own = evaluation.results["new"].estimates[KEY]
        diff = Estimate(value - recorded_value, own.low - recorded_value, own.high - recorded_value)
        champion_value, compared_on = recorded_value, "the champion's recorded value"
    required = max(diff.half_width, params.champion_min_effect)
    promote = diff.value > required
    summary = (f"{KEY} {value:.4f} vs champion v{champion_version} {champion_value:.4f}: difference "
               f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")
    decision = (f"{summary}: promoted" if promote else
                f"{summary}: not promoted (gain not above {required:.4f}, the interval half-width or the "
                f"minimum effect {params.champion_min_effect:g})")
    return assessment.ChampionDecision(promote, decision, value, champion_value, diff, required,
                                       compared_on=compared_on)


def _champion_config(tracker: Tracker, name: str) -> tuple[Any, dict[str, Any] | None]:
    champion = tracker.champion(name)
    if champion is None:
        return None, None
    try:
        loaded = tracker.load_champion(name)
    except ModelNotFoundError as exc:
        log.warning("%s: cannot evaluate the champion on this data (%s)", name, exc)
        return champion, None
    return champion, dict(getattr(loaded.model, "config", {}) or {})


def train(lake: Lake, params: RecommenderParams, run_id: str, tracker: Tracker):
    """Compare the methods, register the best, apply the champion rule; a `TrainResult`."""
    from shoplake.ml.training import TrainResult, _crown

    model_name = MODEL_NAMES[KIND]
    features.require_tables(lake, (INPUT,), hint=_BUILD_HINT)
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        versions = features.bind(lake, engine, INPUT)
        cutoff, scoring = _cutoffs(engine, params)
        train_data = recommender.read_interactions(engine, cutoff)
        purchases = recommender.read_purchases(engine, cutoff, scoring)
        example = engine.table(f"SELECT {', '.join(recommender.EVENT_COLUMNS)} FROM silver.events "
                               "WHERE event_at < $1 ORDER BY event_at, user_id, product_id LIMIT 200",
                               [cutoff]).to_pandas()
    # MLflow signatures hold timezone-naive datetimes only: the example's event_at in UTC
    example["event_at"] = example["event_at"].dt.tz_convert("UTC").dt.tz_localize(None)
    evaluation = recommender.evaluate(train_data, purchases, params, cutoff=cutoff, horizon_end=scoring)
    chosen = max(evaluation.results.values(), key=lambda r: r.estimates[KEY].value).method
    champion, champion_config = _champion_config(tracker, model_name)
    paired = dataclasses.replace(evaluation, results={})
    if champion_config and champion_config.get("method") in recommender.METHODS:
        # the champion refitted on the same events, measured on the same users and resamples
        method, champion_params = recommender.params_from_config(champion_config)
        paired = recommender.evaluate(train_data, purchases, params, cutoff=cutoff, horizon_end=scoring,
                                      methods=[("champion", method, champion_params)])
    paired.results["new"] = evaluation.results[chosen]
    recorded = champion.tags.get("shoplake.key_metric_value") if champion is not None else None
    decided = decide(paired, champion_version=champion.version if champion is not None else None,
                     recorded_value=float(recorded) if recorded not in (None, "") else None,
                     compared="champion" in paired.results, params=params)
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
        gain = evaluation.difference(chosen, popularity, KEY)
        metrics.update({"gain_over_popularity": gain.value, "gain_over_popularity_low": gain.low,
                        "gain_over_popularity_high": gain.high})
        details["gain_over_popularity"] = gain
    key_value = best[KEY].value
    with tracker.start_run(model_name, run_name=f"train-{KIND}-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": KIND, "shoplake.run_type": "train",
                                 "shoplake.chosen_model": chosen}) as run:
        run.params({**flat_params(params), "chosen_model": chosen, "validation_cutoff": cutoff.isoformat(),
                    "scoring_cutoff": scoring.isoformat(),
                    "relevant": "products bought in [cutoff, cutoff + horizon) not bought before the cutoff",
                    **{f"input.{k}": v for k, v in versions.items()}})
        run.metrics(metrics)
        run.dict(evaluation.as_dict(), "evaluation.json")
        config = recommender.params_config(chosen, params)
        output = recommender.recommend_events(example, config)
        metadata = {"shoplake_kind": KIND, "model": chosen, "key_metric": "val_recall_at_10",
                    "key_metric_value": key_value, "validation_cutoff": cutoff.isoformat(),
                    "input_versions": versions, "run_id": run_id, "config": config}
        ref = run.code_model(_CODE, registered_name=model_name, config=config, input_example=example,
                             output_example=output, metadata=metadata,
                             requirements=[f"implicit=={_pkg.version('implicit')}"])
        is_champion, decision = _crown(lake, tracker, KIND, ref, champion, run, run_id=run_id, decided=decided,
                                       input_versions=versions)
    return TrainResult(model_name, ref.version, metrics, is_champion, run.run_id, key_metric="val_recall_at_10",
                       champion_value=decided.champion_value, decision=decision, details=details)


def score(lake: Lake, tracker: Tracker, run_id: str, predict: Any) -> list:
    """Write gold.user_recommendations and gold.similar_products with the champion's method."""
    from shoplake.ml.scoring import ScoreResult, _log_scoring, _write

    features.require_tables(lake, (INPUT,), hint=_BUILD_HINT)
    loaded = tracker.load_champion(MODEL_NAMES[KIND])
    method, params = recommender.params_from_config(dict(getattr(loaded.model, "config", {}) or {}))
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        inputs = features.bind(lake, engine, INPUT)
        _, cutoff = _cutoffs(engine, params)
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
    mlflow_run = _log_scoring(tracker, KIND, run_id, loaded, {},
                              {"cutoff_at": cutoff.isoformat(), "method": method, "active_days": params.active_days,
                               "top_n": params.top_n}, len(active_rows))
    out = []
    for spec, frame, rows_in, rows_out in (
            (tables.USER_RECOMMENDATIONS, users, len(active_rows), int(users["user_id"].nunique())),
            (tables.SIMILAR_PRODUCTS, similar, len(item_rows), int(similar["product_id"].nunique()))):
        version, written, skipped = _write(lake, spec, frame, run_id=run_id, loaded=loaded, rows_in=rows_in,
                                           rows_out=rows_out, inputs=inputs)
        out.append(ScoreResult(spec.name, written, loaded.ref.name, loaded.ref.version, version, {}, {},
                               mlflow_run, skipped))
    log.info("%s: %d active users, %d active products (%s)", MODEL_NAMES[KIND], len(active_rows), len(item_rows),
             json.dumps({"method": method}))
    return out
