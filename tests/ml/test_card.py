"""`shoplake ml card`: a registered version's card, assembled from its MLflow run and the lake, and stored."""

from __future__ import annotations

import pytest

from shoplake.errors import ConfigError
from shoplake.ml.card import model_card
from shoplake.ml.errors import ModelNotFoundError
from shoplake.ml.params import REVIEWED_STRONG_FEATURES
from shoplake.ml.tracking import Tracker

from .lakes import run_cli_main


def test_propensity_card_reports_intervals_baselines_limits_and_exemptions(trained):
    result = trained.train["propensity"]
    card = model_card(trained.lake, f"propensity@{result.version}")
    assert card.startswith(f"# Model card: shoplake-propensity v{result.version}")
    report = result.details["assessment"]
    chosen = report.estimates[result.details["chosen"]]
    assert f"| **{result.details['chosen']}** (this model) | {chosen['roc_auc'].as_text()} | " \
           f"{chosen['pr_auc'].as_text()} |" in card
    for name in ("baseline.popularity", "baseline.user_activity", "baseline.activity_x_popularity"):
        assert f"| {name} | {report.estimates[name]['roc_auc'].as_text()} |" in card
    best = report.best_baseline("pr_auc")
    beats = chosen["pr_auc"].value > report.estimates[best]["pr_auc"].value
    assert f"On PR-AUC this model {'beats' if beats else 'does NOT beat'} the best baseline ({best}:" in card
    for name, reason in REVIEWED_STRONG_FEATURES.items():
        assert f"- `{name}`: {reason}" in card
    for section in ("## Data window", "## Calibration", "## Backtest", "## Known limits"):
        assert section in card
    assert f"validation cutoff {result.details['plan']['validation_cutoff'][:10]}" in card
    stored = Tracker(trained.lake.settings).client().download_artifacts(result.mlflow_run_id, "model_card.md")
    assert open(stored).read() == card


def test_segment_card_and_the_cli(trained, monkeypatch, capsys):
    rfm = trained.train["rfm"]
    code, out, err = run_cli_main(monkeypatch, capsys, "--lake", str(trained.lake.settings.lake), "ml", "card",
                                  "shoplake-rfm-segments")
    assert code == 0, err
    assert out.startswith("# Model card: shoplake-rfm-segments v")
    for name, size in rfm.details["segments"].items():
        assert f"| {name} | {size:,} |" in out
    code, _, err = run_cli_main(monkeypatch, capsys, "--lake", str(trained.lake.settings.lake), "ml", "card", "churn")
    assert code == 1 and err.strip().startswith("error: unknown model 'churn': expected one of segments, rfm")
    with pytest.raises(ModelNotFoundError, match="has no version 999"):
        model_card(trained.lake, "rfm@999")
    with pytest.raises(ConfigError):
        model_card(trained.lake, "nope@champion")
