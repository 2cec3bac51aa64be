"""`shoplake ml ...` through the console script's entry point (`shoplake.cli.main`), in process."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shoplake.ml.tracking import Tracker

from .lakes import open_lake, run_cli_main

CHECK_CONTRACT = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "check_contract.py"


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    return run_cli_main(monkeypatch, capsys, *args)


def test_cli_ml_models_lists_the_three_champions(trained, monkeypatch, capsys):
    tracker = Tracker(trained.lake.settings)
    champions = {name: tracker.champion(name).version for name in
                 ("shoplake-user-segments", "shoplake-rfm-segments", "shoplake-propensity")}
    code, out, err = _main(monkeypatch, capsys, "--lake", str(trained.lake.settings.lake), "ml", "models")
    assert code == 0, err
    assert tracker.uri in out
    for name, version in champions.items():
        line = next(line for line in out.splitlines() if name in line)
        assert f" v{version} " in line, line


def test_cli_ml_score_without_champion_is_one_red_line(shop_lake, tmp_path, monkeypatch, capsys):
    lake, _ = shop_lake
    # The store comes from the environment (Settings.mlflow_tracking_uri via SHOPLAKE_MLFLOW_TRACKING_URI).
    monkeypatch.setenv("SHOPLAKE_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    code, out, err = _main(monkeypatch, capsys, "--lake", str(lake.settings.lake), "ml", "score", "--kind", "rfm")
    assert code == 1
    assert err.strip().splitlines() == [
        "error: model 'shoplake-rfm-segments' has no 'champion' version yet: train it first with "
        "`shoplake ml train rfm`"]
    assert (tmp_path / "empty.db").is_file()


def test_cli_ml_train_unknown_kind_is_a_usage_error(monkeypatch, capsys, tmp_path):
    code, _, err = _main(monkeypatch, capsys, "--lake", str(tmp_path), "ml", "train", "churn")
    assert code == 2 and "churn" in err


def test_cli_ml_train_on_an_unbuilt_lake_says_to_build(monkeypatch, capsys, tmp_path):
    code, _, err = _main(monkeypatch, capsys, "--lake", str(tmp_path / "empty"), "ml", "train", "rfm")
    assert code == 1
    assert "gold.customer_rfm has not been built yet: run `shoplake build`" in err


def test_ui_command_serves_the_project_store_on_localhost(trained):
    command = Tracker(trained.lake.settings).ui_command(port=5123)
    assert command[command.index("ui") - 1].endswith("mlflow")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert f"sqlite:///{(trained.lake.settings.lake / '_mlflow' / 'mlflow.db').resolve()}" in command
    assert command[command.index("--default-artifact-root") + 1].endswith("/_mlflow/artifacts")


def test_ml_tables_publish_the_contract_columns(trained):
    if not CHECK_CONTRACT.is_file():
        pytest.skip(f"{CHECK_CONTRACT} is absent")
    spec = importlib.util.spec_from_file_location("shoplake_check_contract_ml", CHECK_CONTRACT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lake = open_lake(trained.lake.settings.lake)
    for table in ("gold.user_segments", "gold.customer_segments", "gold.conversion_predictions"):
        declared = lake.catalog.get(table).column_names
        written = lake.store.open(table).schema().to_arrow().names
        assert set(module.REQUIRED[table]) <= set(declared), table
        assert list(written) == declared, table
