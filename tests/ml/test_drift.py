"""Population stability index: hand-computed values, robust bins, and the scoring warning."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest

from shoplake.ml import drift, scoring
from shoplake.ml.tracking import LoadedModel, ModelRef


def test_psi_of_a_two_value_feature_matches_the_formula_by_hand():
    ref = drift.reference(np.array([1.0] * 50 + [2.0] * 50))
    assert ref.edges == (1.5,) and ref.expected == (0.5, 0.5)
    value = drift.psi(ref, np.array([1.0] * 20 + [2.0] * 80))
    by_hand = (0.2 - 0.5) * math.log(0.2 / 0.5) + (0.8 - 0.5) * math.log(0.8 / 0.5)
    assert value == pytest.approx(by_hand)  # 0.416: above the 0.2 warning
    assert drift.psi(ref, np.array([1.0] * 50 + [2.0] * 50)) == 0.0


def test_psi_is_small_for_a_new_sample_and_large_for_a_shift():
    rng = np.random.default_rng(3)
    ref = drift.reference(rng.lognormal(size=20_000))
    assert len(ref.edges) == 9 and sum(ref.expected) == pytest.approx(1.0)
    assert drift.psi(ref, rng.lognormal(size=20_000)) < 0.02
    assert drift.psi(ref, 2 * rng.lognormal(size=20_000)) > 0.25


def test_psi_bins_keep_a_rate_that_moves_a_little_in_its_bin():
    """A per-category rate takes a few values that move slightly between periods: not a drift."""
    training = np.repeat([0.010, 0.012, 0.020, 0.031], [400, 300, 200, 100])
    scoring_values = np.repeat([0.0101, 0.0119, 0.0203, 0.0305], [400, 300, 200, 100])
    assert drift.psi(drift.reference(training), scoring_values) == 0.0


def test_psi_of_a_constant_training_feature_still_sees_a_change():
    ref = drift.reference(np.zeros(100))
    assert drift.psi(ref, np.zeros(10)) == 0.0
    assert drift.psi(ref, np.ones(10)) > 1.0


def test_scoring_warns_about_inputs_above_the_threshold(caplog):
    frame = pd.DataFrame({"steady": np.tile([1.0, 2.0], 50), "moved": [1.0] * 20 + [2.0] * 80})
    reference = drift.references(pd.DataFrame({"steady": np.tile([1.0, 2.0], 50),
                                               "moved": np.tile([1.0, 2.0], 50)}), ["steady", "moved"])
    loaded = LoadedModel(ModelRef("m", 1, None, None), model=None, metadata={"drift_reference": reference})
    with caplog.at_level(logging.WARNING, logger="shoplake.ml.scoring"):
        values, warnings = scoring._drift(loaded, frame, "m")
    assert values["steady"] == 0.0 and warnings == {"moved": pytest.approx(values["moved"])}
    assert "input moved drifted from the training data (PSI 0.416 > 0.20)" in caplog.text
