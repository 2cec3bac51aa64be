"""The propensity champion rule: better by more than the paired interval's half-width, not worse on PR-AUC or
calibration; every decision in MLflow and in `ops.model_decisions`."""

from __future__ import annotations

import numpy as np
import pytest

from shoplake.ml import train_model
from shoplake.ml.assessment import decide_champion
from shoplake.ml.params import PropensityParams
from shoplake.ml.tracking import Tracker

from .lakes import rows

PARAMS = PropensityParams(bootstrap_resamples=200)


def _validation(seed: int = 5, n: int = 20_000):
    """Rare positives and a champion whose scores carry real signal, like a validation cutoff."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.004).astype(int)
    signal = rng.normal(size=n) + 2.0 * y
    champion = 1 / (1 + np.exp(-(signal - 6)))
    return rng, y, signal, champion


def _decide(y, new, champion, **params):
    return decide_champion(y, new, champion, champion_version=3, recorded_value=None,
                           params=PropensityParams(bootstrap_resamples=200, **params))


def test_a_retrained_identical_model_keeps_the_champion():
    _, y, _, champion = _validation()
    decided = _decide(y, champion.copy(), champion)
    assert not decided.promote
    assert decided.difference.value == decided.difference.low == decided.difference.high == 0.0
    assert "not promoted (gain +0.0000 not above 0.0000" in decided.decision


def test_a_gain_inside_the_noise_does_not_promote_and_a_clear_one_does():
    rng, y, signal, champion = _validation()
    # a little noise added to the champion's scores: a different model, no better in truth
    jittered = 1 / (1 + np.exp(-(signal + rng.normal(scale=0.3, size=len(y)) - 6)))
    noise = _decide(y, jittered, champion)
    assert not noise.promote and abs(noise.difference.value) <= noise.difference.half_width
    # a model that sees more of the signal
    better = 1 / (1 + np.exp(-(signal + 1.5 * y - 6)))
    clear = _decide(y, better, champion)
    assert clear.promote, clear.decision
    assert clear.difference.low > 0 and clear.difference.value > clear.required_gain
    assert clear.decision.startswith("roc_auc ") and clear.decision.endswith(": promoted")
    # ... unless the declared minimum effect is larger than the gain
    demanding = _decide(y, better, champion, champion_min_effect=0.5)
    assert not demanding.promote and "minimum effect 0.5" in demanding.decision


def test_better_roc_auc_with_worse_pr_auc_or_calibration_is_not_promoted():
    _, y, signal, champion = _validation()
    better = 1 / (1 + np.exp(-(signal + 1.5 * y - 6)))
    # the same ranking, but every probability 0.05 too high (the rate is 0.004): Brier skill collapses
    overconfident = np.clip(better + 0.05, 0, 1)
    decided = _decide(y, overconfident, champion)
    assert decided.difference.value > decided.required_gain  # it would win on ROC-AUC alone
    assert not decided.promote and "Brier skill" in decided.decision
    # a model better in the bulk but whose top ranks are wrong: ROC-AUC up, PR-AUC down
    rng = np.random.default_rng(9)
    top_wrong = better.copy()
    negatives = np.flatnonzero(y == 0)
    top_wrong[rng.choice(negatives, 200, replace=False)] = 0.99
    decided = _decide(y, top_wrong, champion, champion_brier_skill_tolerance=10.0)
    assert decided.difference.value > decided.required_gain and decided.pr_auc_difference < -0.01
    assert not decided.promote and "PR-AUC" in decided.decision


def test_no_champion_and_a_recorded_champion():
    _, y, _, champion = _validation()
    first = decide_champion(y, champion, None, champion_version=None, recorded_value=None, params=PARAMS)
    assert first.promote and first.decision == "first version: champion"
    recorded = decide_champion(y, champion, None, champion_version=2, recorded_value=0.5, params=PARAMS)
    assert recorded.promote and recorded.compared_on.startswith("the champion's recorded value")
    assert recorded.difference.low > 0


def test_model_decisions_table_records_every_registered_version(trained):
    """The trained lake: every training run's decision, as tagged on its MLflow version."""
    lake = trained.lake
    # retrain propensity on the same data: the same model, so the champion stays
    again = train_model(lake, "propensity", run_id="propensity-again")
    assert not again.is_champion and "not promoted" in again.decision
    decisions = rows(lake, "SELECT * FROM ops.model_decisions ORDER BY decided_at")
    by_version = {(r["model_name"], r["model_version"]): r for r in decisions}
    tracker = Tracker(lake.settings)
    client = tracker.client()
    for result in (*trained.train.values(), again):
        row = by_version[(result.model_name, result.version)]
        assert row["promoted"] == result.is_champion and row["decision"] == result.decision
        assert client.get_model_version(result.model_name, str(result.version)).tags["shoplake.decision"] \
            == row["decision"]
    first = by_version[("shoplake-propensity", trained.train["propensity"].version)]
    assert first["decision"] == "first version: champion" and first["champion_version"] is None
    row = by_version[("shoplake-propensity", again.version)]
    assert row["champion_version"] == trained.train["propensity"].version
    assert row["difference"] == pytest.approx(0.0, abs=1e-12) and row["required_gain"] >= 0
    assert row["compared_on"] == "both on this run's validation cutoff"
    assert tracker.champion("shoplake-propensity").version == trained.train["propensity"].version


def test_the_new_versions_draws_from_the_assessment_give_the_same_decision():
    # Training passes the chosen model's bootstrap draws from its assessment instead of computing them again:
    # the resamples depend only on the labels and the seed, so the decision is the very same.
    from shoplake.ml import evaluation

    rng, y, signal, champion = _validation()
    new = 1 / (1 + np.exp(-(signal + 0.8 * y * rng.random(len(y)) - 6)))
    draws = evaluation.paired_draws(y, {"new": new}, ks=PARAMS.eval_ks, resamples=PARAMS.bootstrap_resamples,
                                    seed=PARAMS.random_state)["new"]
    for version, champion_p, recorded in ((3, champion, None), (3, None, 0.8), (None, None, None)):
        alone = decide_champion(y, new, champion_p, champion_version=version, recorded_value=recorded, params=PARAMS)
        reused = decide_champion(y, new, champion_p, champion_version=version, recorded_value=recorded,
                                 params=PARAMS, new_draws=draws)
        assert reused == alone
    # draws of other labels would pair other resamples: the decision would differ
    other = evaluation.paired_draws(np.roll(y, 1), {"new": new}, ks=PARAMS.eval_ks,
                                    resamples=PARAMS.bootstrap_resamples, seed=PARAMS.random_state)["new"]
    assert decide_champion(y, new, champion, champion_version=3, recorded_value=None, params=PARAMS,
                           new_draws=other) != decide_champion(y, new, champion, champion_version=3,
                                                                recorded_value=None, params=PARAMS)
