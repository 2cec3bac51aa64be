"""Honest evaluation of the propensity models: baselines, metrics with intervals, a rolling-origin backtest.

`assess` evaluates fitted candidates and the baseline rules (`propensity.BASELINES`) on all candidates of
one evaluation cutoff, every metric with a bootstrap 95 % interval (`evaluation`), plus the candidate
coverage of all conversions. Training runs it on the validation cutoff; `backtest` runs the whole
training procedure at several earlier origins (rolling origin: each fold sees only data before its own
evaluation cutoff's label window ends) and logs every fold to MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shoplake.engines.base import Capability
from shoplake.errors import InsufficientDataError, ShoplakeError
from shoplake.ml import evaluation, features, propensity
from shoplake.ml.evaluation import Estimate
from shoplake.ml.params import PropensityParams, RFMParams, SegmentParams

log = logging.getLogger(__name__)

BASELINE_PREFIX = "baseline."
HEADLINE_K = 100  # precision@k / recall@k shown in tables


@dataclass
class Assessment:
    """Every model's and baseline's metrics (with intervals) on one evaluation cutoff."""

    cutoff: datetime
    candidates: int
    positives: int
    conversions: int
    coverage: Estimate
    estimates: dict[str, dict[str, Estimate]]
    chosen: str = ""
    probabilities: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # model -> (point values, per-resample values): what the estimates came from (the champion rule reuses them)
    draws: dict[str, tuple[dict[str, float], dict[str, np.ndarray]]] = field(default_factory=dict, repr=False)

    @property
    def baselines(self) -> list[str]:
        return [name for name in self.estimates if name.startswith(BASELINE_PREFIX)]

    def best_baseline(self, metric: str = "pr_auc") -> str:
        return max(self.baselines, key=lambda name: self.estimates[name][metric].value)

    def flat_metrics(self, prefix: str = "eval.") -> dict[str, float]:
        """`<prefix><model>.<metric>` with `_low` / `_high` for MLflow."""
        out = {f"{prefix}coverage": self.coverage.value, f"{prefix}coverage_low": self.coverage.low,
               f"{prefix}coverage_high": self.coverage.high}
        for name, metrics in self.estimates.items():
            for metric, est in metrics.items():
                out[f"{prefix}{name}.{metric}"] = est.value
                out[f"{prefix}{name}.{metric}_low"] = est.low
                out[f"{prefix}{name}.{metric}_high"] = est.high
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "candidates": self.candidates, "positives": self.positives,
                "conversions": self.conversions, "chosen": self.chosen,
                "coverage": _est_dict(self.coverage),
                "metrics": {name: {m: _est_dict(e) for m, e in metrics.items()}
                            for name, metrics in self.estimates.items()}}


def _est_dict(est: Estimate) -> dict[str, float]:
    return {"value": est.value, "low": est.low, "high": est.high}


def assess(cal: pd.DataFrame, evaluated: pd.DataFrame, candidates: list[propensity.Candidate], counts: dict[str, int],
           params: PropensityParams, *, cutoff: datetime, chosen: str = "") -> Assessment:
    """Candidates and baselines on all candidates of `evaluated` (baselines Platt-scaled on `cal`)."""
    y = evaluated["label"].to_numpy()
    scores = {c.name: c.probabilities for c in candidates}
    for name, p in propensity.baseline_probabilities(cal, evaluated).items():
        scores[BASELINE_PREFIX + name] = p
    try:
        draws = evaluation.paired_draws(y, scores, ks=params.eval_ks, resamples=params.bootstrap_resamples,
                                        seed=params.random_state)
    except ValueError as exc:
        raise InsufficientDataError(f"cannot evaluate the cutoff {cutoff.date()}: {exc}; ingest more clickstream "
                                 f"data") from exc
    estimates = evaluation.estimates_of(draws)
    cover = evaluation.coverage(counts["positives"], counts["conversions"], resamples=params.bootstrap_resamples,
                                seed=params.random_state)
    return Assessment(cutoff, counts["candidates"], counts["positives"], counts["conversions"], cover, estimates,
                      chosen, scores, draws)


# -- rolling-origin backtest -----------------------------------------------------------------------------

@dataclass
class Fold:
    plan: features.CutoffPlan
    assessment: Assessment


def fold_plans(first_event_at: datetime, last_event_at: datetime, params: PropensityParams, *, folds: int,
               step_days: int) -> list[features.CutoffPlan]:
    """Plans whose evaluation cutoffs step back `step_days` from the latest possible one, oldest first."""
    if folds < 1 or step_days < 1:
        raise ShoplakeError(f"a backtest needs at least 1 fold and a step of at least 1 day (got {folds}, "
                            f"{step_days})")
    latest = features.plan_cutoffs(first_event_at, last_event_at, params.window)
    plans = []
    for i in range(folds):
        evaluation_cutoff = latest.validation - timedelta(days=i * step_days)
        # the fold's data ends where its evaluation label window ends: nothing later is read
        end = evaluation_cutoff + latest.horizon - timedelta(microseconds=1)
        try:
            plans.append(features.plan_cutoffs(first_event_at, end, params.window))
        except ShoplakeError as exc:
            raise ShoplakeError(f"fold {i + 1} of {folds} (evaluation cutoff {evaluation_cutoff.date()}) has too "
                                f"little data before it: {exc}; use fewer folds or a smaller --step-days") from exc
    return plans[::-1]


def backtest(lake, *, params: PropensityParams, folds: int = 3, step_days: int = 3) -> list[Fold]:
    """Train and assess at `folds` rolling origins; every fold's models see only data before its label window."""
    from shoplake.ml.training import collect_examples

    inputs = tuple(source.table for source in _bound_inputs())
    features.require_tables(lake, inputs, hint="run `shoplake build` (after `shoplake ingest ...`)")
    out = []
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        features.bind(lake, engine, *inputs)
        plans = fold_plans(*features.event_span(engine), params, folds=folds, step_days=step_days)
        for i, plan in enumerate(plans, 1):
            plan.check()
            _, train_frame, evaluated, stats = collect_examples(engine, params, plan=plan)
            fit, cal = propensity.split_fit_calibration(train_frame, params)
            candidates = propensity.train_candidates(train_frame, evaluated, params)
            chosen = propensity.best(candidates).name
            result = assess(cal, evaluated, candidates, stats["validation"], params, cutoff=plan.validation,
                            chosen=chosen)
            log.info("backtest fold %d/%d (cutoff %s): %d positives", i, len(plans), plan.validation.date(),
                     result.positives)
            out.append(Fold(plan, result))
    return out


def _bound_inputs():
    from shoplake.ml.leakage import bound_inputs

    features.check_feature_queries()
    return bound_inputs()


def table_rows(assessment: Assessment, k: int = HEADLINE_K) -> list[list[str]]:
    """Rows for a printed table: model, ROC-AUC, PR-AUC, precision@k (realised / predicted), recall@k, Brier
    skill, ECE."""
    rows = []
    best_pr = max(m["pr_auc"].value for m in assessment.estimates.values())
    for name, m in assessment.estimates.items():
        label = name + (" (chosen)" if name == assessment.chosen else "")
        pr = m["pr_auc"].as_text()
        rows.append([label, m["roc_auc"].as_text(), f"*{pr}" if m["pr_auc"].value == best_pr else pr,
                     f"{m[f'precision_at_{k}'].as_text()} / {m[f'predicted_precision_at_{k}'].value:.3f}",
                     m[f"recall_at_{k}"].as_text(),
                     m["brier_skill"].as_text(), m["ece"].as_text(5)])
    return rows


def log_backtest(lake, folds: list[Fold], *, params: PropensityParams, run_id: str, step_days: int) -> str:
    """One MLflow run (`shoplake.run_type = backtest`) in the propensity experiment; returns its run id."""
    from shoplake.catalog.models import MODEL_NAMES
    from shoplake.ml.params import flat_params
    from shoplake.ml.tracking import Tracker

    tracker = Tracker(lake.settings)
    model_name = MODEL_NAMES["propensity"]
    with tracker.start_run(model_name, run_name=f"backtest-propensity-{run_id}",
                           tags={"shoplake.run_id": run_id, "shoplake.kind": "propensity",
                                 "shoplake.run_type": "backtest"}) as run:
        run.params({**flat_params(params), "folds": len(folds), "step_days": step_days,
                    "evaluation_cutoffs": ",".join(f.plan.validation.date().isoformat() for f in folds)})
        for i, fold in enumerate(folds, 1):
            run.metrics(fold.assessment.flat_metrics(prefix=f"fold{i}."))
        run.dict({"folds": [fold.assessment.as_dict() for fold in folds]}, "backtest.json")
        return run.run_id


# -- the champion rule -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChampionDecision:
    """Whether a new version takes the `champion` alias, and the numbers behind it.

    `difference` is new minus champion on the key metric, with the 95 % interval of the paired bootstrap
    (both models on the same resamples of the same candidates or rows) when the champion could be evaluated
    on this run's data; otherwise the champion's recorded value, with the new model's own interval.
    `data_changed` (segments and RFM): whether the champion was fit on other data versions of the inputs
    (None: unknown, or not part of the rule).
    """

    promote: bool
    decision: str
    value: float
    champion_value: float | None = None
    difference: Estimate | None = None
    required_gain: float | None = None
    pr_auc_difference: float | None = None
    brier_skill_difference: float | None = None
    compared_on: str = ""
    data_changed: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("promote", "decision", "value", "champion_value", "required_gain",
                                             "pr_auc_difference", "brier_skill_difference", "compared_on",
                                             "data_changed")}
        out["difference"] = _est_dict(self.difference) if self.difference is not None else None
        return out


def decide_champion(y: np.ndarray, new: np.ndarray, champion: np.ndarray | None, *, champion_version: int | None,
                    recorded_value: float | None, params: PropensityParams, metric: str = "roc_auc",
                    new_draws: tuple[dict[str, float], dict[str, np.ndarray]] | None = None) -> ChampionDecision:
    """The propensity champion rule.

    Promote only when the new version beats the champion on `metric` by more than the half-width of the
    difference's 95 % interval (and by more than `params.champion_min_effect`), and is not worse on
    PR-AUC or Brier skill by more than their tolerances. Noise cannot promote a model, nor block one that
    is clearly better; a tie keeps the champion.

    `new_draws`: the new version's `evaluation.paired_draws` on `y` with these parameters, when the caller
    has them (`Assessment.draws`): the resamples depend only on `y` and the seed, so the champion's draws
    computed alone pair with them, and the new version's are not computed twice.
    """
    if champion_version is None:
        value = new_draws[0][metric] if new_draws is not None else evaluation.point_metrics(y, new)[metric]
        return ChampionDecision(True, "first version: champion", value, compared_on="no champion")
    names = {"champion": champion} if champion is not None else {}
    if new_draws is None:
        names["new"] = new
    draws = evaluation.paired_draws(y, names, ks=params.eval_ks, resamples=params.bootstrap_resamples,
                                    seed=params.random_state) if names else {}
    if new_draws is not None:
        draws["new"] = new_draws
    point, samples = draws["new"]
    value = point[metric]
    if champion is not None:
        diff = evaluation.difference(*draws["new"], *draws["champion"], metric)
        pr_diff: float | None = point["pr_auc"] - draws["champion"][0]["pr_auc"]
        skill_diff: float | None = point["brier_skill"] - draws["champion"][0]["brier_skill"]
        champion_value, compared_on = draws["champion"][0][metric], "both on this run's validation cutoff"
    else:
        if recorded_value is None:
            return ChampionDecision(True, f"champion v{champion_version} has no recorded {metric}: promoted",
                                    value, compared_on="nothing to compare")
        own = evaluation.estimate_from(value, samples[metric])
        diff = Estimate(value - recorded_value, own.low - recorded_value, own.high - recorded_value)
        pr_diff = skill_diff = None
        champion_value, compared_on = recorded_value, "the champion's recorded value (another validation window)"
    required = max(diff.half_width, params.champion_min_effect)
    reasons = []
    if not diff.value > required:
        reasons.append(f"gain {diff.value:+.4f} not above {required:.4f} (interval half-width "
                       f"{diff.half_width:.4f}, minimum effect {params.champion_min_effect:g})")
    if pr_diff is not None and pr_diff < -params.champion_pr_auc_tolerance:
        reasons.append(f"PR-AUC {pr_diff:+.4f} worse than the tolerance {params.champion_pr_auc_tolerance:g}")
    if skill_diff is not None and skill_diff < -params.champion_brier_skill_tolerance:
        reasons.append(f"Brier skill {skill_diff:+.4f} worse than the tolerance "
                       f"{params.champion_brier_skill_tolerance:g}")
    promote = not reasons
    summary = (f"{metric} {value:.4f} vs champion v{champion_version} {champion_value:.4f}: difference "
               f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")
    decision = f"{summary}: promoted" if promote else f"{summary}: not promoted ({'; '.join(reasons)})"
    return ChampionDecision(promote, decision, value, champion_value, diff, required, pr_diff, skill_diff,
                            compared_on)


def decide_recommender_champion(value: float, own: Estimate, difference: Estimate | None,
                                champion_value: float | None, *, champion_version: int | None,
                                recorded_value: float | None, min_effect: float,
                                metric: str = "recall_at_10") -> ChampionDecision:
    """The recommender champion rule on `metric`: `difference` (new - champion, paired over the same users)
    when the champion was refitted on this run's data, else the champion's recorded value against the new
    version's own interval `own`. Promote only above the interval half-width and `min_effect`."""
    if champion_version is None:
        return ChampionDecision(True, "first version: champion", value, compared_on="no champion")
    if difference is not None and champion_value is not None:
        diff, compared_on = difference, "both refitted on this run's validation week"
    elif recorded_value is not None:
        diff = Estimate(value - recorded_value, own.low - recorded_value, own.high - recorded_value)
        champion_value, compared_on = recorded_value, "the champion's recorded value"
    else:
        return ChampionDecision(True, f"champion v{champion_version} has no recorded {metric}: promoted", value,
                                compared_on="nothing to compare")
    required = max(diff.half_width, min_effect)
    promote = diff.value > required
    summary = (f"{metric} {value:.4f} vs champion v{champion_version} {champion_value:.4f}: difference "
               f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")
    decision = (f"{summary}: promoted" if promote else
                f"{summary}: not promoted (gain not above {required:.4f}, the interval half-width or the "
                f"minimum effect {min_effect:g})")
    return ChampionDecision(promote, decision, value, champion_value, diff, required, compared_on=compared_on)


def decide_segments_champion(new: np.ndarray, champion: np.ndarray | None, *, champion_version: int | None,
                             recorded_value: float | None, data_changed: bool | None,
                             params: SegmentParams | RFMParams, data_note: str = "",
                             metric: str = "silhouette") -> ChampionDecision:
    """The segments champion rule (clickstream segments and RFM).

    `new` and `champion` are each sampled row's silhouette coefficient under the new version and under the
    champion, on this run's rows in the same space (`segmentation.silhouette_values_on`); their means are
    the silhouettes. The 95 % interval of the difference comes from resampling those rows (the same
    resamples for both: paired). The distances are held fixed, so this is the sampling uncertainty of the
    mean over rows, not of a refit (cheap: no silhouette is recomputed).

    - Same input data (`data_changed` False, or None when the champion's data versions are unknown):
      promote only when the gain exceeds max(the interval's half-width, `params.champion_min_effect`). A
      tie, such as the same model retrained on the same data, keeps the champion.
    - New input data (the champion was fit on other data versions): the new version replaces the champion
      unless it is worse by more than that same margin. Segments describe the population they were fit on
      (names and actions come from the profiles relative to each other, drift references from the training
      values), so a segmentation of the new data replaces one of the old when they separate it equally well.
    """
    new = np.asarray(new, dtype=float)
    value = float(new.mean())
    if champion_version is None:
        return ChampionDecision(True, "first version: champion", value, compared_on="no champion")
    rng = np.random.default_rng(params.random_state)
    rows = rng.integers(0, len(new), size=(params.bootstrap_resamples, len(new)))
    if champion is not None:
        champion = np.asarray(champion, dtype=float)
        if champion.shape != new.shape:
            raise ValueError(f"the champion was measured on {len(champion)} rows, the new version on {len(new)}")
        gain = new - champion
        diff = evaluation.estimate_from(float(gain.mean()), gain[rows].mean(axis=1))
        champion_value, compared_on = float(champion.mean()), "both on this run's sampled rows"
    else:
        if recorded_value is None:
            return ChampionDecision(True, f"champion v{champion_version} has no recorded {metric}: promoted",
                                    value, compared_on="nothing to compare", data_changed=data_changed)
        own = evaluation.estimate_from(value, new[rows].mean(axis=1))
        diff = Estimate(value - recorded_value, own.low - recorded_value, own.high - recorded_value)
        champion_value, compared_on = recorded_value, "the champion's recorded value (other rows)"
    required = max(diff.half_width, params.champion_min_effect)
    summary = (f"{metric} {value:.4f} vs champion v{champion_version} {champion_value:.4f}: difference "
               f"{diff.value:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}]")
    margin = (f"{required:.4f} (interval half-width {diff.half_width:.4f}, minimum effect "
              f"{params.champion_min_effect:g})")
    if data_changed:
        promote = not diff.value < -required
        why = (f"new input data ({data_note}): promoted, a segmentation of the new data replaces one of the old "
               f"unless worse by more than {margin}" if promote else
               f"new input data ({data_note}): not promoted, worse by more than {margin}")
    else:
        promote = diff.value > required
        same = (f"same input data ({data_note})" if data_changed is False
                else f"input data versions unknown ({data_note})")
        why = (f"{same}: promoted, gain above {margin}" if promote else
               f"{same}: not promoted (gain {diff.value:+.4f} not above {margin})")
    return ChampionDecision(promote, f"{summary}; {why}", value, champion_value, diff, required,
                            compared_on=compared_on, data_changed=data_changed)
