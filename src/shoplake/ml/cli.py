"""`shoplake ml ...`: train, score, list the registered models, open the MLflow UI.

A thin layer over `shoplake.ml`; heavy imports (scikit-learn, MLflow) happen inside the commands so
that the rest of the CLI starts fast.
"""

from __future__ import annotations

import os
import subprocess
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table


class Kind(StrEnum):
    segments = "segments"
    rfm = "rfm"
    propensity = "propensity"


def _core():
    from shoplake import cli

    return cli


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def train(
    kinds: Annotated[list[Kind], typer.Argument(help="one or more of: segments (clickstream users), rfm (retail "
                                                     "customers), propensity (user x product conversion)")],
    seed: Annotated[int | None, typer.Option(help="random seed (default 42)")] = None,
) -> None:
    """Train models, log them to MLflow and register them; each becomes champion if at least as good."""
    from shoplake.lake import new_run_id
    from shoplake.ml import train_model
    from shoplake.ml.params import default_params, with_seed

    core = _core()
    lake = core._lake()
    run_id = new_run_id()
    for kind in dict.fromkeys(kinds):  # several kinds share one process: MLflow starts once
        with core.console.status(f"training {kind.value} ..."):
            result = train_model(lake, kind.value, run_id=run_id, params=with_seed(default_params(kind.value), seed))
        _show_training(core.console, kind, run_id, result)


def _show_training(console, kind: Kind, run_id: str, result) -> None:
    summary = Table("model", "version", "champion", result.key_metric, "decision", "seconds",
                    title=f"ml train {kind.value} {run_id}")
    summary.add_row(result.model_name, str(result.version), "[green]yes[/]" if result.is_champion else "no",
                    _fmt(result.metrics.get(result.key_metric)), result.decision, f"{result.seconds:.1f}")
    console.print(summary)
    if kind is Kind.propensity:
        models = Table("candidate", "ROC-AUC", "PR-AUC", "log loss", "Brier", "top-decile lift",
                       title=f"validation cutoff {result.details['plan']['validation_cutoff']} "
                             f"({int(result.metrics['val_positives'])} positives in "
                             f"{int(result.metrics['val_candidates']):,} candidates)")
        for name, m in result.details["models"].items():
            chosen = " (registered)" if name == result.details["chosen"] else ""
            models.add_row(name + chosen, _fmt(m["val_roc_auc"]), _fmt(m["val_pr_auc"]), _fmt(m["val_log_loss"], 6),
                           _fmt(m["val_brier"], 6), _fmt(m["val_top_decile_lift"], 2))
        console.print(models)
    else:
        segments = Table("segment", "members", title=f"k = {int(result.metrics['k'])}")
        for name, size in result.details["segments"].items():
            segments.add_row(name, f"{size:,}")
        console.print(segments)
    for warning in result.warnings:
        console.print(f"[yellow]warning: {warning}[/]")
    console.print(f"MLflow run {result.mlflow_run_id}; see `shoplake ml models` and `shoplake ml ui`")


def score(
    kind: Annotated[list[Kind] | None, typer.Option("--kind", "-k", help="only these kinds (repeatable); "
                                                                       "default all")] = None,
) -> None:
    """Write the predictions of each model's champion version to its Gold tables."""
    from shoplake.lake import new_run_id
    from shoplake.ml import score_models

    core = _core()
    lake = core._lake()
    run_id = new_run_id()
    with core.console.status("scoring ..."):
        results = score_models(lake, run_id=run_id, kinds=[k.value for k in kind] if kind else None)
    out = Table("table", "rows written", "model", "version", "max PSI", "drift (PSI > 0.2)", title=f"ml score {run_id}")
    for r in results:
        warn = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.drift_warnings.items())) or "-"
        out.add_row(r.table, f"{r.rows_written:,}" + (" (already written)" if r.skipped else ""), r.model_name,
                    str(r.model_version), _fmt(max(r.drift.values(), default=0.0), 3),
                    f"[yellow]{warn}[/]" if r.drift_warnings else warn)
    core.console.print(out)


def models() -> None:
    """Registered models: versions, the champion and its key validation metric."""
    from shoplake.ml.kinds import KEY_METRICS, KIND_OF_MODEL, MODEL_NAMES
    from shoplake.ml.tracking import Tracker

    core = _core()
    tracker = Tracker(core._settings())
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
    core.console.print(out)


def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store (Ctrl-C stops it)."""
    from shoplake.ml.tracking import UI_ENVIRONMENT, Tracker

    core = _core()
    tracker = Tracker(core._settings())
    command = tracker.ui_command(host="127.0.0.1", port=port)
    core.console.print(f"MLflow UI for {tracker.uri} on http://127.0.0.1:{port} (Ctrl-C stops it)")
    try:
        code = subprocess.run(command, check=False, env={**os.environ, **UI_ENVIRONMENT}).returncode
    except KeyboardInterrupt:
        code = 0
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the `ml` command group to the shoplake CLI."""
    group = typer.Typer(no_args_is_help=True, help="Machine learning: segments, RFM, conversion propensity "
                                                   "(tracked in MLflow).")
    group.command("train")(train)
    group.command("score")(score)
    group.command("models")(models)
    group.command("ui")(ui)
    app.add_typer(group, name="ml")
