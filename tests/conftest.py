"""Fixtures shared by several test folders."""

from __future__ import annotations

import shutil

import pytest

from shoplake.config import Settings


@pytest.fixture(scope="session")
def spark_available(tmp_path_factory) -> None:
    """Start the one Spark session of the test session (every SparkEngine reuses it), or skip."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 on PATH")
    pytest.importorskip("pyspark")
    from shoplake.engines.spark_session import spark_session

    spark_session(Settings(lake=tmp_path_factory.mktemp("spark-lake"), engine="spark"))
