"""`shoplake ml ...`: train, score, list the registered models, open the MLflow UI.

A thin layer over `shoplake.ml`; heavy imports (scikit-learn, MLflow) happen inside the commands so
that the rest of the CLI starts fast.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from shoplake.catalog.models import KINDS, MODEL_SPECS
from shoplake.cli import app as cli

# The model kinds as a choice on the command line (the registry in `shoplake.catalog.models`).
Kind = StrEnum("Kind", {kind: kind for kind in KINDS})  # type: ignore[misc]  # members from the registry


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def train(
    kinds: Annotated[list[Kind], typer.Argument(help="one or more of: " + ", ".join(
                                                     f"{s.kind} ({s.summary})" for s in MODEL_SPECS.values()))],
    seed: Annotated[int | None, typer.Option(help="random seed (default 42)")] = None,
) -> None:
    """Train models, log them to MLflow and register them; each becomes champion only by the champion rule."""
    from shoplake.lake import new_run_id
    from shoplake.ml import train_model
    from shoplake.ml.params import default_params, with_seed

    lake = cli.lake()
    run_id = new_run_id()
    for kind in dict.fromkeys(kinds):  # several kinds share one process: MLflow starts once
        with cli.console.status(f"training {kind.value} ..."):
            result = train_model(lake, kind.value, run_id=run_id, params=with_seed(default_params(kind.value), seed))
        _show_training(cli.console, kind, run_id, result)


def _show_training(console, kind: Kind, run_id: str, result) -> None:
    summary = Table("model", "version", "champion", result.key_metric, "decision", "seconds",
                    title=f"ml train {kind.value} {run_id}")
    summary.add_row(result.model_name, str(result.version), "[green]yes[/]" if result.is_champion else "no",
                    _fmt(result.metrics.get(result.key_metric)), result.decision, f"{result.seconds:.1f}")
    console.print(summary)
    if kind == "propensity":
        console.print(_assessment_table(result.details["assessment"],
                                        title=f"validation cutoff {result.details['plan']['validation_cutoff']}"))
    elif kind == "recommender" and "evaluation" in result.details:
        console.print(_recommender_table(result.details["evaluation"], result.details["chosen"]))
    elif kind == "clv":
        holdout = result.details.get("holdout")
        if holdout is not None:
            table = Table("repeat purchase days", "customers", "predicted purchases (80 %)", "actual",
                          title=f"holdout: fit before {holdout.calibration_cutoff}, {holdout.days} days predicted")
            for row in holdout.table.itertuples():
                table.add_row(str(row.bucket), f"{row.customers:,}",
                              f"{row.predicted:,.1f} [{row.predicted_low:,.1f}, {row.predicted_high:,.1f}]",
                              f"{row.actual:,.0f}")
            console.print(table)
    elif "segments" in result.details:
        segments = Table("segment", "members", title=f"k = {int(result.metrics['k'])}")
        for name, size in result.details["segments"].items():
            segments.add_row(name, f"{size:,}")
        console.print(segments)
    for warning in result.warnings:
        console.print(f"[yellow]warning: {warning}[/]")
    console.print(f"MLflow run {result.mlflow_run_id}; see `shoplake ml models` and `shoplake ml ui`")


def _recommender_table(evaluation, chosen: str) -> Table:
    metrics = ("recall_at_10", "precision_at_10", "ndcg_at_10", "map_at_10")
    caption = (f"validation week from {evaluation.cutoff:%Y-%m-%d}: {len(evaluation.user_ids):,} users with history "
               f"bought a product new to them (95 % bootstrap intervals over users; * chosen)")
    out = Table("method", "recall@10", "precision@10", "NDCG@10", "MAP@10", "coverage@10", "popularity bias",
                title=caption)
    for name, result in evaluation.results.items():
        estimates = result.estimates
        out.add_row(name + (" *" if name == chosen else ""), *(estimates[m].as_text() for m in metrics),
                    f"{estimates['coverage_at_10'].value:.3f}", f"{estimates['popularity_bias'].value:.3f}")
    return out


def _assessment_table(report, *, title: str) -> Table:
    from rich.table import Column

    from shoplake.ml.assessment import HEADLINE_K, table_rows

    k = HEADLINE_K
    caption = (f"{title}: {report.positives} positives in {report.candidates:,} candidates; candidates cover "
               f"{report.coverage.as_text()} of {report.conversions:,} conversions (95 % bootstrap intervals)")
    out = Table(Column("model / baseline", no_wrap=True), "ROC-AUC", "PR-AUC (* best)",
                f"precision@{k} / predicted",
                f"recall@{k}", "Brier skill", "ECE", title=caption)
    for row in table_rows(report, k):
        out.add_row(*row)
    return out


def backtest(
    kind: Annotated[Kind, typer.Argument(help="the model kind to backtest (propensity)")],
    folds: Annotated[int, typer.Option(help="evaluation cutoffs (rolling origins)")] = 3,
    step_days: Annotated[int, typer.Option(help="days between successive evaluation cutoffs")] = 3,
    model: Annotated[list[str] | None, typer.Option("--model", help="only these candidate models (repeatable): "
                                                                      "popularity, logistic_regression, "
                                                                      "gradient_boosting; default all")] = None,
    resamples: Annotated[int, typer.Option(help="bootstrap resamples behind each 95 % interval")] = 200,
    calibration: Annotated[str, typer.Option(help="sigmoid (Platt, the default) or isotonic")] = "sigmoid",
    seed: Annotated[int | None, typer.Option(help="random seed (default 42)")] = None,
) -> None:
    """Rolling-origin backtest: train and evaluate at several earlier cutoffs, against the baselines."""
    from shoplake.errors import ConfigError
    from shoplake.lake import new_run_id
    from shoplake.ml.assessment import backtest as run_backtest
    from shoplake.ml.assessment import log_backtest
    from shoplake.ml.params import PROPENSITY_MODELS, PropensityParams, default_params, with_seed

    if kind != "propensity":
        raise ConfigError(f"only propensity can be backtested (got {kind.value}): segments have no later outcome")
    lake = cli.lake()
    run_id = new_run_id()
    params = with_seed(default_params(kind.value), seed)
    assert isinstance(params, PropensityParams)
    unknown = sorted(set(model or ()) - set(PROPENSITY_MODELS))
    if unknown or resamples < 10:
        raise ConfigError(f"unknown model(s) {', '.join(unknown)}: expected {', '.join(PROPENSITY_MODELS)}" if unknown
                          else f"--resamples must be at least 10 (got {resamples})")
    params = replace(params, models=tuple(model) if model else params.models, bootstrap_resamples=resamples,
                     calibration=calibration)
    with cli.console.status(f"backtesting {kind.value} over {folds} cutoffs ..."):
        folds_done = run_backtest(lake, params=params, folds=folds, step_days=step_days)
        mlflow_run = log_backtest(lake, folds_done, params=params, run_id=run_id, step_days=step_days)
    for i, fold in enumerate(folds_done, 1):
        cli.console.print(_assessment_table(fold.assessment, title=f"fold {i}/{len(folds_done)}, evaluation cutoff "
                                                                      f"{fold.plan.validation.date()}"))
    wins = sum(fold.assessment.estimates[fold.assessment.chosen]["pr_auc"].value
               > fold.assessment.estimates[fold.assessment.best_baseline()]["pr_auc"].value for fold in folds_done)
    cli.console.print(f"the chosen model beats the best baseline on PR-AUC in {wins} of {len(folds_done)} folds; "
                       f"MLflow run {mlflow_run}")


def card(
    model: Annotated[str, typer.Argument(help="KIND or MODEL_NAME, optionally @alias or @version (default "
                                              "@champion): propensity, rfm@3, shoplake-user-segments@champion")],
) -> None:
    """Print a registered model's card (data window, features, metrics with intervals, baselines, calibration,
    backtest, known limits, reviewed-feature exemptions) and store it in its MLflow run as model_card.md."""
    from shoplake.ml.card import model_card

    cli.console.print(model_card(cli.lake(), model), markup=False, highlight=False, soft_wrap=True)


def score(
    kind: Annotated[list[Kind] | None, typer.Option("--kind", "-k", help="only these kinds (repeatable); "
                                                                       "default all")] = None,
) -> None:
    """Write the predictions of each model's champion version to its Gold tables."""
    from shoplake.lake import new_run_id
    from shoplake.ml import score_models

    lake = cli.lake()
    run_id = new_run_id()
    with cli.console.status("scoring ..."):
        results = score_models(lake, run_id=run_id, kinds=[k.value for k in kind] if kind else None)
    out = Table("table", "rows written", "model", "version", "max PSI", "drift (PSI > 0.2)", title=f"ml score {run_id}")
    for r in results:
        warn = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.drift_warnings.items())) or "-"
        out.add_row(r.table, f"{r.rows_written:,}" + (" (already written)" if r.skipped else ""), r.model_name,
                    str(r.model_version), _fmt(max(r.drift.values(), default=0.0), 3),
                    f"[yellow]{warn}[/]" if r.drift_warnings else warn)
    cli.console.print(out)


def models() -> None:
    """Registered models: versions, the champion and its key validation metric."""
    from shoplake.catalog.models import KEY_METRICS, KIND_OF_MODEL, MODEL_NAMES
    from shoplake.ml.tracking import Tracker

    tracker = Tracker(cli.settings())
    out = Table("model", "versions", "champion", "key metric", "champion value", "latest", "latest value",
                "latest decision", title=f"MLflow registry: {tracker.uri}")
    for summary in tracker.summaries(list(MODEL_NAMES.values())):
        metric = KEY_METRICS[KIND_OF_MODEL[summary.name]]
        latest = summary.versions[-1] if summary.versions else None
        champion = summary.champion
        out.add_row(summary.name, str(len(summary.versions)), f"v{champion.version}" if champion else "-", metric,
                    champion.tags.get("shoplake.key_metric_value", "-") if champion else "-",
                    f"v{latest.version}" if latest else "-",
                    latest.tags.get("shoplake.key_metric_value", "-") if latest else "-",
                    latest.tags.get("shoplake.decision", "-") if latest else "not trained yet")
    cli.console.print(out)


def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store (Ctrl-C stops it)."""
    from shoplake.ml.tracking import UI_ENVIRONMENT, Tracker

    tracker = Tracker(cli.settings())
    command = tracker.ui_command(host="127.0.0.1", port=port)
    cli.console.print(f"MLflow UI for {tracker.uri} on http://127.0.0.1:{port} (Ctrl-C stops it)")
    try:
        code = subprocess.run(command, check=False, env={**os.environ, **UI_ENVIRONMENT}).returncode
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


# The `ml` group of the shoplake command line.
group = typer.Typer(no_args_is_help=True, help="Machine learning: segments, RFM, conversion propensity, "
                                               "recommendations, customer lifetime value (tracked in MLflow).")
group.command("train")(train)
group.command("score")(score)
group.command("models")(models)
group.command("backtest")(backtest)
group.command("card")(card)
group.command("ui")(ui)
cli.app.add_typer(group, name="ml")
