"""Model cards: what a registered model version is, what it was trained on and how far to trust it.

`model_card(lake, "propensity@champion")` assembles, from the version's MLflow training run (parameters,
metrics, `evaluation.json`, `leakage_audit.json`, `champion_decision.json`, `segment_profiles.json`), the
latest backtest run and the lake's `gold.prediction_outcomes`, a Markdown card: data window, features,
metrics with intervals, baselines, calibration, backtest, the champion decision, known limits and the
reviewed-feature exemptions with their reasons. `shoplake ml card` prints it and stores it in the training
run as `model_card.md`.
"""

from __future__ import annotations

from typing import Any

from shoplake.catalog.models import KIND_OF_MODEL, MODEL_NAMES, model_spec
from shoplake.engines.base import Capability
from shoplake.errors import ConfigError
from shoplake.ml.errors import ModelNotFoundError
from shoplake.ml.tracking import ModelRef, Tracker


def _run_id(ref: ModelRef) -> str:
    """The MLflow run that logged `ref` (every version shoplake registers has one)."""
    if ref.run_id is None:
        raise ModelNotFoundError(f"{ref.name} v{ref.version} has no MLflow run: it was not registered by shoplake")
    return ref.run_id


def resolve(tracker: Tracker, spec: str) -> ModelRef:
    """`KIND|MODEL_NAME[@ALIAS|@VERSION]` (default alias: champion) to a registered version."""
    name, _, selector = spec.partition("@")
    name = MODEL_NAMES.get(name, name)
    if name not in KIND_OF_MODEL:
        raise ConfigError(f"unknown model {spec.partition('@')[0]!r}: expected one of "
                          f"{', '.join([*MODEL_NAMES, *MODEL_NAMES.values()])}, optionally @alias or @version")
    selector = selector or "champion"
    if selector.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            return tracker.version(name, int(selector))
        except MlflowException as exc:
            raise ModelNotFoundError(f"model {name!r} has no version {selector}") from exc
    ref = tracker.by_alias(name, selector)
    if ref is None:
        raise ModelNotFoundError(f"model {name!r} has no {selector!r} version: train it first with "
                                 f"`shoplake ml train {KIND_OF_MODEL[name]}`")
    return ref


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(est: dict[str, float] | None, digits: int = 3) -> str:
    if not est:
        return "-"
    return f"{est['value']:.{digits}f} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"


def _evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    lines = [f"Validation cutoff {evaluation['cutoff'][:10]}: {evaluation['positives']} positives in "
             f"{evaluation['candidates']:,} candidates; the candidates cover "
             f"{_interval(evaluation['coverage'])} of {evaluation['conversions']:,} conversions. "
             "95 % stratified-bootstrap intervals.", "",
             "| model / baseline | ROC-AUC | PR-AUC | precision@100 | recall@100 | Brier skill | ECE |",
             "|---|---|---|---|---|---|---|"]
    for name, m in evaluation["metrics"].items():
        label = f"**{name}** (this model)" if name == evaluation["chosen"] else name
        lines.append(f"| {label} | {_interval(m['roc_auc'])} | {_interval(m['pr_auc'])} | "
                     f"{_interval(m.get('precision_at_100'))} | {_interval(m.get('recall_at_100'))} | "
                     f"{_interval(m['brier_skill'])} | {_interval(m['ece'], 5)} |")
    chosen = evaluation["metrics"][evaluation["chosen"]]
    baselines = {k: v for k, v in evaluation["metrics"].items() if k.startswith("baseline.")}
    best = max(baselines, key=lambda k: baselines[k]["pr_auc"]["value"])
    verdict = "beats" if chosen["pr_auc"]["value"] > baselines[best]["pr_auc"]["value"] else "does NOT beat"
    lines += ["", f"On PR-AUC this model {verdict} the best baseline ({best}: "
                  f"{_interval(baselines[best]['pr_auc'])})."]
    return lines


def _backtest_lines(tracker: Tracker, model_name: str) -> list[str]:
    runs = tracker.runs(model_name)
    if runs.empty or "tags.shoplake.run_type" not in runs:
        backtests = runs
    else:
        backtests = runs[runs["tags.shoplake.run_type"] == "backtest"]
    if backtests.empty:
        return [f"No backtest yet: run `shoplake ml backtest {KIND_OF_MODEL[model_name]}`."]
    latest = backtests.sort_values("start_time").iloc[-1]
    data = tracker.run_json(latest["run_id"], "backtest.json") or {"folds": []}
    lines = [f"Latest backtest (MLflow run {latest['run_id']}), the procedure retrained at each cutoff:", "",
             "| evaluation cutoff | positives | chosen model | its PR-AUC | best baseline PR-AUC |",
             "|---|---|---|---|---|"]
    for fold in data["folds"]:
        metrics = fold["metrics"]
        baselines = {k: v for k, v in metrics.items() if k.startswith("baseline.")}
        best = max(baselines, key=lambda k: baselines[k]["pr_auc"]["value"])
        lines.append(f"| {fold['cutoff'][:10]} | {fold['positives']} | {fold['chosen']} | "
                     f"{_interval(metrics[fold['chosen']]['pr_auc'])} | "
                     f"{best}: {_interval(baselines[best]['pr_auc'])} |")
    return lines


def _outcome_lines(lake, ref: ModelRef) -> list[str]:
    if not lake.store.exists("gold.prediction_outcomes"):
        return ["No scoring of this version has reached the end of its horizon yet."]
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        engine.bind(lake.catalog.get("gold.prediction_outcomes"))
        found = engine.table("SELECT * FROM gold.prediction_outcomes WHERE model_name = ? AND model_version = ? "
                             "ORDER BY cutoff_at, rank_from", [ref.name, ref.version]).to_pylist()
    if not found:
        return ["No scoring of this version has reached the end of its horizon yet."]
    lines = ["Realised after scoring (gold.prediction_outcomes):", "",
             "| cutoff | precision@100 | recall@100 | coverage | ranks | predicted purchases | realised |",
             "|---|---|---|---|---|---|---|"]
    for r in found:
        lines.append(f"| {r['cutoff_at'].date()} | {_fmt(r['precision_at_100'])} | {_fmt(r['recall_at_100'])} | "
                     f"{_fmt(r['coverage'])} | {r['rank_from']}-{r['rank_to']} | "
                     f"{r['predicted_purchases']:.1f} (sd {r['predicted_purchases_sd']:.1f}) | "
                     f"{r['realised_purchases']} |")
    return lines


def model_card(lake, spec: str, *, store: bool = True) -> str:
    """The Markdown card of a registered version (`propensity`, `shoplake-rfm-segments@champion`, `rfm@3`)."""
    tracker = Tracker(lake.settings)
    ref = resolve(tracker, spec)
    kind = KIND_OF_MODEL[ref.name]
    params, metrics, tags = tracker.run_record(_run_id(ref))
    aliases = f" ({', '.join(ref.aliases)})" if ref.aliases else ""
    lines = [f"# Model card: {ref.name} v{ref.version}{aliases}", "",
             f"- kind: {kind}; MLflow training run {_run_id(ref)} (shoplake run {tags.get('shoplake.run_id', '-')})",
             f"- decision: {ref.tags.get('shoplake.decision', '-')}",
             "- inputs: " + ", ".join(f"{k[len('input.'):]} v{v}" for k, v in params.items()
                                       if k.startswith("input.")),
             f"- seed: {params.get('random_state', '-')}", ""]
    if kind == "propensity":
        lines += ["## Data window", "",
                  f"- lookback {params.get('window.lookback_days')} days, horizon {params.get('window.horizon_days')} "
                  f"days; training cutoffs {params.get('train_cutoffs')}; validation cutoff "
                  f"{params.get('validation_cutoff', '')[:10]}; scoring cutoff {params.get('scoring_cutoff', '')[:10]}",
                  f"- candidates: {params.get('candidates')}; label: {params.get('label')}", "",
                  "## Model and features", "",
                  f"- {params.get('chosen_model')}; inputs, most important first: "
                  f"{', '.join(_features(tracker, ref))}", ""]
        evaluation = tracker.run_json(_run_id(ref), "evaluation.json")
        lines += ["## Metrics with intervals and baselines", ""]
        lines += _evaluation_lines(evaluation) if evaluation else ["(trained before evaluations were recorded)"]
        lines += ["", "## Calibration", "",
                  f"Platt scaling on the latest training cutoffs (later than the fit). Validation Brier skill "
                  f"{_fmt(metrics.get('val_brier_skill'))}, expected calibration error "
                  f"{_fmt(metrics.get('val_ece'), 5)}.",
                  ""]
        lines += _outcome_lines(lake, ref)
        lines += ["", "## Backtest", ""] + _backtest_lines(tracker, ref.name)
        audit = tracker.run_json(_run_id(ref), "leakage_audit.json") or {}
        lines += ["", "## Leakage checks and warnings", "",
                  f"- feature queries: {audit.get('feature_queries', '-')}",
                  f"- cutoff invariance: {audit.get('cutoff_invariance', '-')}"]
        lines += [f"- warning: {w}" for w in audit.get("warnings", [])]
        reviewed = audit.get("reviewed_strong_features", {})
        if reviewed:
            lines += ["", "Reviewed-feature exemptions (strong by design, not leaky):", ""]
            lines += [f"- `{name}`: {reason}" for name, reason in reviewed.items()]
    elif kind == "recommender":
        evaluation = tracker.run_json(_run_id(ref), "evaluation.json") or {}
        lines += ["## Model and evaluation", "",
                  f"- {params.get('chosen_model')}, refitted on every event before the scoring cutoff; validation "
                  f"cutoff {params.get('validation_cutoff', '')[:10]}, {evaluation.get('users', '-')} users; relevant: "
                  f"{params.get('relevant', '-')}", "",
                  "| method | recall@10 | NDCG@10 | MAP@10 | coverage@10 | popularity bias |",
                  "|---|---|---|---|---|---|"]
        for name, m in evaluation.get("methods", {}).items():
            cells = [f"{m[k]['value']:.3f} [{m[k]['low']:.3f}, {m[k]['high']:.3f}]"
                     for k in ("recall_at_10", "ndcg_at_10", "map_at_10")]
            lines.append(f"| {name} | {' | '.join(cells)} | {m['coverage_at_10']['value']:.3f} | "
                         f"{m['popularity_bias']['value']:.3f} |")
        gain = [_fmt(metrics.get(f"gain_over_popularity{end}")) for end in ("", "_low", "_high")]
        lines += ["", f"- recall@10 gain over popularity: {gain[0]} [{gain[1]}, {gain[2]}]"]
    elif kind == "clv":
        holdout = tracker.run_json(_run_id(ref), "holdout.json")
        lines += ["## Model", "", f"- BG/NBD + Gamma-Gamma ({params.get('fit_method', '-')}, "
                  f"{params.get('draws', '-')} draws); cutoff {params.get('cutoff', '-')}; "
                  f"{int(metrics.get('customers', 0)):,} customers, {int(metrics.get('spend_customers', 0)):,} in the "
                  f"spend fit", f"- holdout: {params.get('holdout', '-')}", ""]
        if holdout:
            lines += ["## Holdout: predicted against actual purchase days", "",
                      "| repeat purchase days | customers | predicted (80 %) | actual |", "|---|---|---|---|"]
            lines += [f"| {b['bucket']} | {b['customers']:,} | {b['predicted']:,.1f} [{b['predicted_low']:,.1f}, "
                      f"{b['predicted_high']:,.1f}] | {b['actual']:,.0f} |" for b in holdout["buckets"]]
    else:
        profiles = (tracker.run_json(_run_id(ref), "segment_profiles.json") or {}).get("segments", [])
        lines += ["## Model", "", f"- K-means, k = {int(metrics.get('k', 0))} ({params.get('k_criterion', '-')}); "
                  f"silhouette {_fmt(metrics.get('silhouette'))} on {int(metrics.get('silhouette_sample_rows', 0)):,} "
                  f"sampled rows of {int(metrics.get('rows', 0)):,}", f"- inputs: {params.get('features', '-')}", "",
                  "## Segments", "", "| segment | size |", "|---|---|"]
        lines += [f"| {s['segment_name']} | {int(s.get('size', 0)):,} |" for s in profiles]
    lines += ["", "## Known limits", ""] + [f"- {text}" for text in model_spec(kind).limits]
    card = "\n".join(lines) + "\n"
    if store:
        tracker.log_text(_run_id(ref), card, "model_card.md")
    return card


def _features(tracker: Tracker, ref: ModelRef) -> list[str]:
    importance = (tracker.run_json(_run_id(ref), "feature_importance.json") or {}).get("permutation_importance_roc_auc")
    return list(importance) if importance else []
