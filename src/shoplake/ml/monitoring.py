"""Outcomes and monitoring in the lake: what the predictions turned into, and how far the inputs drifted.

- `ops.model_monitoring` (appended by every scoring run): per model input, the population stability
  index against the training distribution and a summary of the scored values; for propensity also the
  distribution of the predicted probabilities (against the validation predictions of training).
- `gold.prediction_outcomes` (rewritten by every propensity scoring): for every earlier scoring whose label
  window has passed (its cutoff + horizon is at or before the end of the data), the predictions of that
  Delta version of `gold.conversion_predictions` joined to the purchases that happened: realised
  precision@k and recall@k, candidate coverage of all conversions, and predicted against realised
  purchases in rank bins (calibration where it matters: the top of the list).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shoplake import locks
from shoplake.engines.base import Capability
from shoplake.layers import ml as tables
from shoplake.ml import drift, features
from shoplake.quality.ledger import LedgerEntry

log = logging.getLogger(__name__)

PREDICTION = "_prediction"  # the input_name of the prediction distribution's row
OUTCOME_KS = (10, 100, 1000)
# Rank bins: [1, 10], [11, 100], [101, 1000], [1001, 10000], [10001, all]
RANK_BIN_STARTS = (1, 11, 101, 1001, 10001)


def _summary(values: np.ndarray) -> dict[str, float | None]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.quantile(values, [0.5, 0.9, 0.99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def record_monitoring(lake, *, run_id: str, kind: str, model_name: str, model_version: int, scored_at: datetime,
                      inputs: pd.DataFrame, psi: dict[str, float], predictions: np.ndarray | None = None,
                      prediction_reference: dict | None = None, declared: Sequence[str] | None = None) -> int:
    """Append one row per model input (and one for the predictions) to `ops.model_monitoring`.

    `declared`: the model's inputs (default: the columns of `inputs`); one absent from `inputs` is
    accounted as diverted (`input_not_scored`) in the write's `ops.ledger` entry, whose rows in are the
    declared inputs plus the predictions, and whose inputs record the rows scored (`shoplake verify`
    compares them with the prediction table's entry of the same run).

    Returns the rows written; 0 when this run's rows were written before (a retried run).
    """
    spec = tables.MODEL_MONITORING
    key = f"ml-monitoring:{model_name}:{run_id}"
    if lake.store.exists(spec.name) and lake.store.find_write(spec.name, key) is not None:
        return 0
    base = {"run_id": run_id, "scored_at": scored_at, "kind": kind, "model_name": model_name,
            "model_version": model_version, "psi_threshold": drift.PSI_WARNING, "rows": len(inputs)}
    rows: list[dict[str, Any]] = []
    for name in inputs.columns:
        value = psi.get(name)
        rows.append({**base, "input_name": name, "psi": value,
                     "is_drifted": value is not None and value > drift.PSI_WARNING,
                     **_summary(inputs[name].to_numpy())})
    if predictions is not None:
        value = (drift.psi(drift.FeatureReference.from_dict(prediction_reference), predictions)
                 if prediction_reference else None)
        rows.append({**base, "input_name": PREDICTION, "psi": value,
                     "is_drifted": value is not None and value > drift.PSI_WARNING, **_summary(predictions)})
    declared = list(inputs.columns if declared is None else declared)
    missing = [name for name in declared if name not in inputs.columns]
    entry = LedgerEntry(run_id=run_id, table_name=spec.name, write_key=key,
                        rows_in=len(declared) + (predictions is not None), rows_out=len(rows),
                        diverted={"input_not_scored": len(missing)} if missing else {}, rows_written=len(rows),
                        inputs={"model": f"{model_name}/{model_version}", "kind": kind, "rows_scored": len(inputs)})
    table = pa.Table.from_pylist(rows, schema=spec.arrow_schema)
    with locks.writing(lake.store.lake, [spec.name]):
        lake.store.write(spec.name, table, mode="append", description=spec.description,
                         meta={"write_key": key, "run_id": run_id, "ledger": entry.as_meta()})
    lake.sync_ledger([spec.name])
    return len(rows)


# -- outcomes -------------------------------------------------------------------------------------------

def _scorings(lake) -> list[tuple[int, datetime, int, int]]:
    """(Delta version, cutoff_at, horizon_days, predictions) of every scoring of gold.conversion_predictions,
    latest version per (cutoff, model version)."""
    spec = tables.CONVERSION_PREDICTIONS
    if not lake.store.exists(spec.name):
        return []
    found: dict[tuple, tuple[int, datetime, int, int]] = {}
    for commit in sorted(lake.store.history(spec.name), key=lambda c: c.version):
        table = lake.store.open(spec.name, commit.version).to_pyarrow_table(
            columns=["cutoff_at", "horizon_days", "model_version"])
        if table.num_rows == 0:
            continue
        cutoff = table["cutoff_at"][0].as_py()
        found[(cutoff, table["model_version"][0].as_py())] = (commit.version, cutoff, table["horizon_days"][0].as_py(),
                                                              table.num_rows)
    return sorted(found.values(), key=lambda v: v[0])


def outcome_rows(predictions: pd.DataFrame, bought: set[tuple[int, int]], conversions: int, *,
                 predictions_version: int, evaluated_at: datetime) -> list[dict[str, Any]]:
    """The outcome rows of one scoring: predictions ranked by probability (ties by user_id, product_id)."""
    ranked = predictions.sort_values(["probability", "user_id", "product_id"], ascending=[False, True, True],
                                     kind="stable")
    hit = np.array([(u, p) in bought for u, p in zip(ranked["user_id"], ranked["product_id"], strict=True)],
                   dtype=float)
    probability = ranked["probability"].to_numpy(dtype=float)
    candidate_conversions = int(hit.sum())
    first = ranked.iloc[0]
    run = {"cutoff_at": first["cutoff_at"], "horizon_days": int(first["horizon_days"]),
           "model_name": first["model_name"], "model_version": int(first["model_version"]),
           "predictions_version": predictions_version, "evaluated_at": evaluated_at, "candidates": len(ranked),
           "conversions": conversions, "candidate_conversions": candidate_conversions,
           "coverage": candidate_conversions / conversions if conversions else None}
    for k in OUTCOME_KS:
        top = hit[:k]
        run[f"precision_at_{k}"] = float(top.sum() / len(top))
        run[f"recall_at_{k}"] = float(top.sum() / candidate_conversions) if candidate_conversions else None
    rows = []
    for i, start in enumerate(RANK_BIN_STARTS):
        if start > len(ranked):
            break
        end = RANK_BIN_STARTS[i + 1] - 1 if i + 1 < len(RANK_BIN_STARTS) else len(ranked)
        end = min(end, len(ranked))
        p, y = probability[start - 1:end], hit[start - 1:end]
        rows.append({**run, "rank_from": start, "rank_to": end, "bin_candidates": len(p),
                     "predicted_purchases": float(p.sum()),
                     "predicted_purchases_sd": float(np.sqrt(np.sum(p * (1 - p)))),
                     "realised_purchases": int(y.sum())})
    return rows


def record_outcomes(lake, *, run_id: str) -> int:
    """Rewrite `gold.prediction_outcomes` from every scoring whose label window has passed. Returns its rows.

    The write's `ops.ledger` entry: rows in = the predictions of every scoring found in the history (the
    latest Delta version per cutoff and model version), rows out = the predictions folded into the rank
    bins (`sum(bin_candidates)`), diverted `label_window_open` = the predictions of scorings whose label
    window has not passed yet.
    """
    spec = tables.PREDICTION_OUTCOMES
    key = f"ml:{spec.name}:{run_id}"
    if lake.store.exists(spec.name) and lake.store.find_write(spec.name, key) is not None:
        return 0  # a retried run: its outcomes were written
    evaluated_at = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    predictions_in = window_open = 0
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        events_version = features.bind(lake, engine, features.PROPENSITY_INPUT)[features.PROPENSITY_INPUT]
        _, last = features.event_span(engine)
        data_end = features.scoring_cutoff(last)
        scorings = _scorings(lake)
        for version, cutoff, horizon_days, count in scorings:
            predictions_in += count
            end = cutoff + timedelta(days=horizon_days)
            if end > data_end:
                window_open += count
                continue  # the label window has not passed: nothing to compare yet
            predictions = lake.store.open(tables.CONVERSION_PREDICTIONS.name, version).to_pyarrow_table().to_pandas()
            labels = engine.rows(features.label_sql(), [cutoff, end])
            out.extend(outcome_rows(predictions, {(int(u), int(p)) for u, p in labels}, len(labels),
                                    predictions_version=version, evaluated_at=evaluated_at))
    if not out and not lake.store.exists(spec.name):
        return 0
    table = pa.Table.from_pylist(out, schema=spec.arrow_schema)
    inputs = {features.PROPENSITY_INPUT: events_version,
              tables.CONVERSION_PREDICTIONS.name: max((v for v, *_ in scorings), default=None)}
    entry = LedgerEntry(run_id=run_id, table_name=spec.name, write_key=f"ml-outcomes:{spec.name}:v{{version}}",
                        rows_in=predictions_in, rows_out=sum(r["bin_candidates"] for r in out),
                        diverted={"label_window_open": window_open} if window_open else {},
                        rows_written=len(out), inputs={**inputs, "scorings": len(scorings)})
    with locks.writing(lake.store.lake, [spec.name]):
        lake.store.write(spec.name, table, mode="overwrite", description=spec.description,
                         meta={"write_key": key, "run_id": run_id, "inputs": inputs, "ledger": entry.as_meta()})
    lake.sync_ledger([spec.name])
    log.info("%s: %d rows from %d scoring(s) whose horizon has passed", spec.name, len(out),
             len({r["predictions_version"] for r in out}))
    return len(out)
