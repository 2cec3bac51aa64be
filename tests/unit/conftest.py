"""Shared fixtures for the unit tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shoplake.catalog import Catalog, default_catalog

CHECK_CONTRACT = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "check_contract.py"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working directory, so no stray `shoplake.toml` is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return default_catalog()


@pytest.fixture(scope="session")
def contract_required() -> dict[str, list[str]]:
    """`REQUIRED` from ../shared/tools/check_contract.py (the contract's tables and columns)."""
    if not CHECK_CONTRACT.is_file():
        pytest.skip(f"{CHECK_CONTRACT} is absent (expected ../shared/tools next to the repo)")
    spec = importlib.util.spec_from_file_location("shoplake_check_contract", CHECK_CONTRACT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REQUIRED
