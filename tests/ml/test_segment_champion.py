"""The segments champion rule (clickstream segments and RFM): better by more than the paired interval of the
silhouette difference on the same data, replaced by a segmentation of new data unless clearly worse, never
promoted on a tie; every decision with its numbers in MLflow and `ops.model_decisions`."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from shoplake.build import build_tables
from shoplake.ingest import ingest_files
from shoplake.ml import train_model
from shoplake.ml.assessment import decide_segments_champion
from shoplake.ml.params import RFMParams, SegmentParams
from shoplake.ml.tracking import Tracker
from shoplake.synth import generate

from .lakes import built_lake, rows

PARAMS = SegmentParams()


def _silhouettes(seed: int = 3, n: int = 5000) -> np.ndarray:
    """Per-row silhouette coefficients of a decent segmentation (mean about 0.6)."""
    return np.clip(np.random.default_rng(seed).normal(0.6, 0.2, n), -1, 1)


def _decide(new, champion, *, data_changed=False, **params):
    return decide_segments_champion(new, champion, champion_version=4, recorded_value=None,
                                    data_changed=data_changed, params=SegmentParams(**params),
                                    data_note="gold.user_features v3")


def test_the_same_segmentation_again_does_not_promote():
    champion = _silhouettes()
    decided = _decide(champion.copy(), champion)
    assert not decided.promote and decided.data_changed is False
    assert decided.difference.value == decided.difference.low == decided.difference.high == 0.0
    assert decided.required_gain == PARAMS.champion_min_effect
    assert decided.decision.endswith("same input data (gold.user_features v3): not promoted (gain +0.0000 not above "
                                     "0.0100 (interval half-width 0.0000, minimum effect 0.01))")


def test_a_gain_inside_the_interval_or_below_the_minimum_effect_does_not_promote_and_a_clear_one_does():
    rng = np.random.default_rng(8)
    champion = _silhouettes()
    # another segmentation, no better in truth: rows move up and down by a lot, the mean by little
    noisy = np.clip(champion + rng.normal(0.002, 0.3, len(champion)), -1, 1)
    decided = _decide(noisy, champion, champion_min_effect=0.0)
    assert not decided.promote and decided.difference.value <= decided.difference.half_width
    # a small but certain gain: inside no interval, below the declared minimum effect
    small = champion + 0.004
    decided = _decide(small, champion)
    assert decided.difference.low > 0 and not decided.promote and "minimum effect 0.01" in decided.decision
    clear = _decide(champion + rng.normal(0.05, 0.05, len(champion)), champion)
    assert clear.promote and clear.difference.low > 0 and clear.difference.value > clear.required_gain
    assert "same input data (gold.user_features v3): promoted, gain above" in clear.decision


def test_on_new_data_a_tie_replaces_the_champion_and_a_clearly_worse_version_does_not():
    champion = _silhouettes()
    tie = _decide(champion.copy(), champion, data_changed=True)
    assert tie.promote and tie.data_changed
    assert "new input data (gold.user_features v3): promoted, a segmentation of the new data replaces" in tie.decision
    worse = _decide(champion - 0.05, champion, data_changed=True)
    assert not worse.promote and "not promoted, worse by more than 0.0100" in worse.decision
    # unknown data versions of the champion count as the same data: a tie keeps it
    unknown = _decide(champion.copy(), champion, data_changed=None)
    assert not unknown.promote and "input data versions unknown" in unknown.decision


def test_first_version_and_a_champion_known_only_by_its_recorded_value():
    new = _silhouettes()
    first = decide_segments_champion(new, None, champion_version=None, recorded_value=None, data_changed=None,
                                     params=PARAMS)
    assert first.promote and first.decision == "first version: champion"
    recorded = decide_segments_champion(new, None, champion_version=2, recorded_value=float(new.mean()) - 0.2,
                                        data_changed=False, params=PARAMS)
    assert recorded.promote and recorded.compared_on.startswith("the champion's recorded value")
    assert recorded.difference.low > 0.15


# -- on a lake -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    lake, data = built_lake(tmp_path_factory.mktemp("segchamp"), click_events=60_000, retail_rows=6_000, seed=5,
                            click_days=14)
    return lake, data


def _decision(lake, result) -> dict:
    found = rows(lake, f"SELECT * FROM ops.model_decisions WHERE model_name = '{result.model_name}' "
                       f"AND model_version = {result.version}")
    assert len(found) == 1
    return found[0]


@pytest.mark.slow  # trains models on a generated lake
def test_segments_rule_on_a_lake_same_data_clear_gain_and_new_data(small_lake, tmp_path):
    lake, _ = small_lake
    client = Tracker(lake.settings).client()
    # a poor first champion: k forced to 8
    forced = train_model(lake, "segments", run_id="seg-k8", params=SegmentParams(k_min=8, k_max=8))
    assert forced.is_champion and forced.decision == "first version: champion"
    # the chosen k on the same data: clearly better, promoted
    better = train_model(lake, "segments", run_id="seg-best")
    row = _decision(lake, better)
    print(f"\nsegments: k=8 silhouette {forced.metrics['silhouette']:.4f}; chosen k={int(better.metrics['k'])} "
          f"{better.metrics['silhouette']:.4f}: {better.decision}")
    assert better.is_champion and row["promoted"] and row["data_changed"] is False
    assert row["champion_version"] == forced.version and row["difference_low"] > 0
    assert row["difference"] > row["required_gain"] >= PARAMS.champion_min_effect
    assert "same input data" in row["decision"] and row["decision"].endswith(
        f"minimum effect {PARAMS.champion_min_effect:g})")
    assert row["compared_on"] == "both on this run's sampled rows"
    assert json.loads(row["input_versions"]) == {"gold.user_features": lake.store.data_version(
        "gold.user_features", lake.store.version("gold.user_features"))}
    # the same model retrained on the same data: a tie, not promoted
    again = train_model(lake, "segments", run_id="seg-again")
    row = _decision(lake, again)
    print(f"segments retrained on the same data: {again.decision}")
    assert not again.is_champion and not row["promoted"] and row["data_changed"] is False
    assert row["difference"] == row["difference_low"] == row["difference_high"] == 0.0
    assert "not promoted (gain +0.0000 not above 0.0100" in row["decision"]
    assert int(client.get_model_version_by_alias("shoplake-user-segments", "champion").version) == better.version
    tags = client.get_model_version("shoplake-user-segments", str(again.version)).tags
    assert tags["shoplake.decision"] == row["decision"]
    run = client.get_run(again.mlflow_run_id)
    assert run.data.metrics["champion.difference"] == 0.0 and run.data.tags["shoplake.data_changed"] == "False"

    # a new data version of gold.user_features: another week of clickstream
    data2 = tmp_path / "data2"
    generate("clickstream", data2, rows=20_000, seed=6, start=dt.date(2019, 10, 15), days=7)
    ingest_files(lake, "clickstream", [str(data2 / "clickstream.csv.gz")], run_id="ingest-click-2")
    assert not [r for r in build_tables(lake, "+gold.user_features", run_id="build-2") if r.status == "failed"]
    fresh = train_model(lake, "segments", run_id="seg-new-data")
    row = _decision(lake, fresh)
    print(f"segments on new data: {fresh.decision}")
    assert row["data_changed"] is True and "the champion was fit on gold.user_features v" in row["decision"]
    assert fresh.is_champion == row["promoted"] == (row["difference"] >= -row["required_gain"])
    assert fresh.is_champion, row["decision"]


@pytest.mark.slow  # trains models on a generated lake
def test_rfm_retrained_on_the_same_data_is_not_promoted(small_lake):
    lake, _ = small_lake
    params = RFMParams(stability_resamples=5)
    first = train_model(lake, "rfm", run_id="rfm-1", params=params)
    again = train_model(lake, "rfm", run_id="rfm-2", params=params)
    row = _decision(lake, again)
    assert first.is_champion and not again.is_champion
    assert row["champion_version"] == first.version and row["data_changed"] is False
    assert row["difference"] == 0.0 and "same input data (gold.customer_rfm v" in row["decision"]
