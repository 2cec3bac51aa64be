"""The model and source registries: every other list of model kinds or source names derives from them."""

from __future__ import annotations

import pytest

from shoplake.catalog import default_catalog
from shoplake.catalog.models import KEY_METRICS, KINDS, MODEL_NAMES, MODEL_SPECS, model_spec
from shoplake.errors import ConfigError
from shoplake.sources.schemas import SOURCES


def test_model_specs_name_catalog_tables():
    catalog = default_catalog()
    for spec in MODEL_SPECS.values():
        for name in (*spec.inputs, *spec.outputs):
            assert catalog.get(name).name == name


def test_model_registry_views_follow_the_specs():
    assert KINDS == ("segments", "rfm", "propensity", "recommender", "clv")
    assert MODEL_NAMES == {"segments": "shoplake-user-segments", "rfm": "shoplake-rfm-segments",
                           "propensity": "shoplake-propensity", "recommender": "shoplake-recommender",
                           "clv": "shoplake-clv"}
    assert KEY_METRICS == {"segments": "silhouette", "rfm": "silhouette", "propensity": "val_roc_auc",
                           "recommender": "val_recall_at_10", "clv": "holdout_accuracy"}
    with pytest.raises(ConfigError, match="unknown model kind 'churn': expected one of segments, rfm, propensity, "
                                          "recommender, clv"):
        model_spec("churn")


def test_every_model_kind_trains_scores_and_has_parameters():
    from shoplake.ml import features, params, recommender, scoring, training

    assert set(training._TRAINERS) == set(KINDS)
    assert set(scoring._SCORERS) == set(KINDS)
    assert set(params.PARAMS_OF_KIND) == set(KINDS)
    # The feature queries read the tables the specs declare (their versions decide "unchanged").
    assert model_spec("segments").inputs == (features.USER_SEGMENT_INPUT,)
    assert model_spec("rfm").inputs == (features.RFM_INPUT,)
    assert model_spec("propensity").inputs == (features.PROPENSITY_INPUT,)
    assert model_spec("recommender").inputs == (recommender.INPUT,)
    from shoplake.ml import clv

    assert model_spec("clv").inputs == clv.INPUTS


def test_sources_and_model_kinds_reach_the_command_line_and_the_generator():
    from shoplake import synth
    from shoplake.cli import app, ml

    assert tuple(SOURCES) == ("clickstream", "products", "retail")
    assert synth.SOURCES == tuple(SOURCES)
    assert [s.value for s in app.Source] == list(SOURCES)
    assert [k.value for k in ml.Kind] == list(KINDS)
