"""Fixtures for the per-table tests: a real lake in a temp folder, fed a handful of CSV rows.

Every test writes its input rows literally (with the exact source headers of DATA_CONTRACT.md),
ingests and builds through the public Python API, and compares the published rows with values worked
out by hand in the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoplake.catalog import Catalog

from .shop import Shop


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    """An empty lake for one test."""
    return Shop(tmp_path)


@pytest.fixture(scope="module")
def module_shop(tmp_path_factory: pytest.TempPathFactory):
    """A factory of empty lakes shared by the tests of one module (filled once, then only read)."""
    def make(name: str, catalog: Catalog | None = None) -> Shop:
        return Shop(tmp_path_factory.mktemp(name), catalog)
    return make
