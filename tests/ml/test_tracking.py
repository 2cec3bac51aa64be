"""MLflow: runs with metrics and plots, the registry and the champion rule, predictions tied to versions."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from importlib import metadata

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.models import Model

from shoplake.errors import ConfigError, TableNotFoundError
from shoplake.ml import PropensityParams, SegmentParams, score_models, train_model
from shoplake.ml.errors import ModelNotFoundError
from shoplake.ml.features import WindowSettings
from shoplake.ml.tracking import tracking_uri, warn_on_other_versions

from .lakes import open_lake, rows

MODELS = ("shoplake-user-segments", "shoplake-rfm-segments", "shoplake-propensity")
TABLES = {
    "gold.user_segments": "shoplake-user-segments",
    "gold.user_segment_profiles": "shoplake-user-segments",
    "gold.customer_segments": "shoplake-rfm-segments",
    "gold.customer_segment_profiles": "shoplake-rfm-segments",
    "gold.conversion_predictions": "shoplake-propensity",
    "gold.user_recommendations": "shoplake-recommender",
    "gold.similar_products": "shoplake-recommender",
}
KEY = {"shoplake-user-segments": "silhouette", "shoplake-rfm-segments": "silhouette",
       "shoplake-propensity": "val_roc_auc"}


def _client(lake) -> MlflowClient:
    uri = tracking_uri(lake.settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_tracking_store_is_a_sqlite_file_inside_the_lake(trained):
    db = trained.lake.settings.lake / "_mlflow" / "mlflow.db"
    assert db.is_file()
    assert tracking_uri(trained.lake.settings) == f"sqlite:///{db.resolve()}"
    assert any((trained.lake.settings.lake / "_mlflow" / "artifacts").rglob("MLmodel"))
    # every experiment, MLflow's own `Default` included, keeps its artifacts inside the lake
    artifacts = (trained.lake.settings.lake / "_mlflow" / "artifacts").resolve().as_uri()
    experiments = _client(trained.lake).search_experiments()
    assert "Default" in {e.name for e in experiments}
    assert all(e.artifact_location.startswith(artifacts + "/") for e in experiments), \
        [(e.name, e.artifact_location) for e in experiments]


def test_search_runs_lists_the_training_runs_with_metrics_params_and_plots(trained):
    client = _client(trained.lake)
    for name in MODELS:
        experiment = client.get_experiment_by_name(name)
        runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id],
                                  filter_string="tags.`shoplake.run_type` = 'train'")
        assert len(runs) >= 1, name
        run = runs.iloc[-1]  # the oldest: the session's first training run
        assert run["status"] == "FINISHED"
        assert 0 < run[f"metrics.{KEY[name]}"] <= 1
        assert run["params.random_state"] == "42"
        artifacts = {a.path for a in client.list_artifacts(run["run_id"], "plots")}
        expected = ({"plots/roc_pr.png", "plots/calibration.png", "plots/feature_importance.png"}
                    if name == "shoplake-propensity" else {"plots/elbow_silhouette.png", "plots/segment_profiles.png"})
        assert expected <= artifacts, name
        headline = {k[8:]: round(float(v), 4) for k, v in run.items()
                    if k.startswith("metrics.") and "." not in k[8:] and v == v}
        print(f"\n{name}: {len(runs)} training run(s); first run metrics {headline}")


def test_registry_holds_the_three_models_with_champion_aliases_signatures_and_examples(trained):
    client = _client(trained.lake)
    for name in MODELS:
        champion = client.get_model_version_by_alias(name, "champion")
        model = Model.load(f"models:/{name}@champion")
        assert model.signature is not None and model.signature.inputs is not None
        assert model.saved_input_example_info is not None
        assert model.metadata["features"] and model.metadata["key_metric"] == KEY[name]
        assert champion.tags["shoplake.key_metric"] == KEY[name]
        print(f"\n{name}: champion v{champion.version}, {KEY[name]} {champion.tags['shoplake.key_metric_value']}")


def test_prediction_tables_carry_the_champion_version(trained):
    client = _client(trained.lake)
    for table, model in TABLES.items():
        champion = int(client.get_model_version_by_alias(model, "champion").version)
        found = rows(trained.lake, f"SELECT DISTINCT model_name, model_version FROM {table}")
        assert found == [{"model_name": model, "model_version": champion}], table
    assert {r.table for r in trained.score} == set(TABLES)


def test_scoring_records_drift_and_ledger_entries(trained):
    client = _client(trained.lake)
    for name in MODELS:
        experiment = client.get_experiment_by_name(name)
        runs = mlflow.search_runs(experiment_ids=[experiment.experiment_id],
                                  filter_string="tags.`shoplake.run_type` = 'score'")
        assert len(runs) >= 1
        psi = [c for c in runs.columns if c.startswith("metrics.psi.")]
        assert psi and runs["metrics.max_psi"].notna().all()
    ledger = rows(trained.lake, """SELECT table_name, rows_in, rows_out, rows_written, is_balanced FROM ops.ledger
                                   WHERE write_key LIKE 'ml:%'""")
    assert {r["table_name"] for r in ledger} == set(TABLES)
    assert all(r["is_balanced"] for r in ledger)
    predictions = next(r for r in ledger if r["table_name"] == "gold.conversion_predictions")
    written = rows(trained.lake, "SELECT count(*) AS n FROM gold.conversion_predictions")[0]["n"]
    assert predictions["rows_written"] == written


def test_scoring_again_with_the_same_run_id_writes_nothing(trained):
    before = {t: trained.lake.store.version(t) for t in TABLES}
    again = score_models(trained.lake, run_id="score-1", kinds=["segments", "rfm"])
    assert all(r.skipped for r in again)
    after = {t: trained.lake.store.version(t) for t in TABLES}
    assert before == after


def test_a_worse_model_does_not_take_the_champion_alias(trained):
    lake = trained.lake
    client = _client(lake)
    champion = client.get_model_version_by_alias("shoplake-user-segments", "champion").version
    worse = train_model(lake, "segments", run_id="worse-k8", params=SegmentParams(k_min=8, k_max=8))
    assert not worse.is_champion and "not promoted" in worse.decision
    assert worse.metrics["silhouette"] < worse.champion_value  # the champion, measured on the same rows
    assert client.get_model_version_by_alias("shoplake-user-segments", "champion").version == champion
    assert client.get_model_version("shoplake-user-segments", str(worse.version)).tags["shoplake.decision"] \
        == worse.decision
    # The same model retrained on the same data is as good: a tie keeps the champion.
    same = train_model(lake, "segments", run_id="same-again")
    assert not same.is_champion and same.metrics["silhouette"] == pytest.approx(same.champion_value)
    assert "same input data" in same.decision and "not promoted (gain +0.0000" in same.decision
    assert client.get_model_version_by_alias("shoplake-user-segments", "champion").version == champion

    prop_champion = client.get_model_version_by_alias("shoplake-propensity", "champion").version
    baseline_only = PropensityParams(models=("popularity",),
                                     window=replace(WindowSettings(), max_train_cutoffs=2))
    weaker = train_model(lake, "propensity", run_id="baseline-only", params=baseline_only)
    print(f"\nchampion rule: segments k=8 silhouette {worse.metrics['silhouette']:.3f} < champion "
          f"{worse.champion_value:.3f}; propensity baseline-only ROC-AUC {weaker.metrics['val_roc_auc']:.4f} < "
          f"champion {weaker.champion_value:.4f}: neither promoted")
    assert not weaker.is_champion and weaker.metrics["val_roc_auc"] < weaker.champion_value
    assert client.get_model_version_by_alias("shoplake-propensity", "champion").version == prop_champion
    scored = score_models(lake, run_id="score-after-rule", kinds=["propensity"])
    assert scored[0].model_version == int(prop_champion)


def test_scoring_without_a_champion_says_to_train_first(shop_lake, tmp_path):
    lake, _ = shop_lake
    empty_store = open_lake(lake.settings.lake, mlflow_tracking_uri=f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ModelNotFoundError, match=r"no 'champion' version yet: train it first with "
                                                 r"`shoplake ml train segments`"):
        score_models(empty_store, run_id="no-champion", kinds=["segments"])


def test_unknown_kind_and_missing_inputs_are_clear_errors(tmp_path):
    lake = open_lake(tmp_path / "empty")
    with pytest.raises(ConfigError, match="unknown model kind 'churn'"):
        train_model(lake, "churn", run_id="x")
    with pytest.raises(ConfigError, match="unknown model kind"):
        score_models(lake, run_id="x", kinds=["churn"])
    with pytest.raises(TableNotFoundError, match=r"gold.user_features has not been built yet: run `shoplake build`"):
        train_model(lake, "segments", run_id="x")
    with pytest.raises(TableNotFoundError, match=r"silver.events has not been built yet: run `shoplake build`"):
        train_model(lake, "propensity", run_id="x")
    with pytest.raises(ConfigError, match="rfm takes RFMParams"):
        train_model(lake, "rfm", run_id="x", params=SegmentParams())


def test_training_records_inputs_and_leakage_audit(trained):
    client = _client(trained.lake)
    run = client.get_run(trained.train["propensity"].mlflow_run_id)
    assert run.data.params["input.silver.events"] == str(trained.lake.store.version("silver.events"))
    audit = json.loads(open(client.download_artifacts(run.info.run_id, "leakage_audit.json")).read())
    assert audit["cutoff_invariance"].startswith("passed")
    assert max(v for k, v in audit["single_feature_auc"].items()
               if k not in audit["reviewed_strong_features"]) <= 0.95


def test_unchanged_inputs_keep_the_champion_and_write_no_table(trained):
    """What a scheduled job relies on: same inputs and parameters -> no training, no new table version."""
    lake = trained.lake
    client = _client(lake)
    champion = int(client.get_model_version_by_alias("shoplake-rfm-segments", "champion").version)
    registered = len(client.search_model_versions("name='shoplake-rfm-segments'"))
    before = {t: lake.store.version(t) for t in TABLES}

    kept = train_model(lake, "rfm", run_id="scheduled-again", skip_unchanged=True)
    assert kept.details.get("skipped") and kept.version == champion and kept.is_champion
    assert len(client.search_model_versions("name='shoplake-rfm-segments'")) == registered
    rescored = score_models(lake, run_id="scheduled-score", kinds=["rfm"])
    assert all(r.skipped for r in rescored)
    assert {t: lake.store.version(t) for t in TABLES} == before

    # An explicit retrain (the default) does train and register a new version.
    retrained = train_model(lake, "rfm", run_id="explicit-again")
    assert not retrained.details.get("skipped") and retrained.version > champion


_CREATE_STORE = """
import sys
from pathlib import Path
from shoplake.config import Settings
from shoplake.ml.tracking import Tracker
tracker = Tracker(Settings(lake=Path(sys.argv[1])))
print(tracker.experiment_id(sys.argv[2]))
"""


def test_processes_starting_on_a_new_lake_at_once_create_one_tracking_store(tmp_path):
    # The daily job's trainings of different models start side by side on a new lake: each must find a
    # whole store (one process migrates it aside and renames it into place), none a half-made one.
    import subprocess
    import sys

    lake = tmp_path / "lake"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE_STORE, str(lake), f"model-{i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outcomes = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in outcomes), [err[-2000:] for _, err, _ in outcomes]
    store = lake / "_mlflow"
    assert (store / "mlflow.db").is_file() and not list(store.glob("*.new"))
    client = MlflowClient(tracking_uri=tracking_uri(open_lake(lake).settings))
    assert {f"model-{i}" for i in range(3)} <= {e.name for e in client.search_experiments()}


def test_asking_a_new_lake_for_its_champion_creates_no_store(tmp_path):
    from shoplake.ml.tracking import Tracker

    lake = open_lake(tmp_path / "lake")
    tracker = Tracker(lake.settings)
    assert tracker.champion("shoplake-rfm-segments") is None
    assert not (tmp_path / "lake" / "_mlflow" / "mlflow.db").exists()  # created by the first logged run only
    tracker.experiment_id("shoplake-rfm-segments")
    assert (tmp_path / "lake" / "_mlflow" / "mlflow.db").is_file() and tracker.champion("shoplake-rfm-segments") is None


def test_a_model_logged_with_other_versions_is_warned_about(tmp_path, caplog):
    # MLflow's own check is skipped on load (it maps every installed distribution first); ours compares the
    # model's pinned requirements and Python with this environment's
    numpy = metadata.version("numpy")
    running = ".".join(map(str, sys.version_info[:3]))
    (tmp_path / "requirements.txt").write_text(f"numpy=={numpy}\nmlflow\n")
    assert warn_on_other_versions(tmp_path, running) == []
    assert warn_on_other_versions(tmp_path, running[:-1] + "99") == []  # another patch release
    (tmp_path / "requirements.txt").write_text("numpy==0.0.1\nno-such-package-here==1.0\n")
    with caplog.at_level("WARNING", logger="shoplake.ml.tracking"):
        lines = warn_on_other_versions(tmp_path, "2.7.18")
    assert lines == [f"numpy: the model was logged with 0.0.1, this environment has {numpy}",
                     "no-such-package-here: the model was logged with 1.0, this environment has not installed",
                     f"Python: the model was logged with 2.7.18, this process runs {running}"]
    assert len(caplog.records) == 3
