"""Fixtures shared by several test folders, and how the suite is split between processes.

`make test` runs the suite in two pytest-xdist workers. Tests that share an expensive session fixture run
in one worker, so it is made once: the trained model lakes (`ml`), the Spark session (`spark`) and the
served lake (`serve`); every other test file is a unit of its own, so its module fixtures are made once
too. (The grouping is a scheduler of our own: xdist's `xdist_group` marks do not reach its scheduler under
pytest 9, whose node ids no longer carry the group suffix xdist appends.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shoplake.config import Settings

_TESTS = Path(__file__).parent
# Test files that start Spark (one JVM per worker that needs it: keep them together).
_SPARK_FILES = {"parity/test_engine_parity.py", "parity/test_interop.py", "parity/test_sql_overrides.py",
                "ml/test_spark_scoring.py", "e2e/test_hostile_inputs.py"}


def _group(relative: str) -> str:
    if relative in _SPARK_FILES:
        return "spark"
    if relative.startswith("ml/"):
        return "ml"
    if relative.startswith("serve/"):
        return "serve"
    return relative


# Rough minutes of the longest groups on a quiet 2-core machine (from `--durations`): the scheduler hands
# them out first, so no long group starts last and holds up the end of the run. Only the order uses them.
_MINUTES = {"ml": 5, "spark": 4, "integrity/test_crash.py": 3, "jobs/test_maintain_daily.py": 2,
            "serve": 2, "integrity/test_crash_spark_ingest.py": 2.5,
            "integrity/test_concurrency.py": 1.5, "integrity/test_guarantees.py": 1.5,
            "jobs/test_adapt.py": 1.5, "parity/test_standalone_cluster.py": 1.1, "jobs/test_runner.py": 0.5,
            "jobs/test_kill.py": 0.5}


# Fixtures that make a test `slow` (left out of `make test-fast`): trained models, Spark, the browser.
_SLOW_FIXTURES = {"shop_lake", "trained", "uci_trained", "uci_clv", "held_out", "scored", "spark_available",
                  "parity_lakes", "spark_cluster", "browser", "live_server"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole groups (see `_group`) go to one worker: xdist's scope scheduling with our scopes."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _group(path.removeprefix("tests/"))

        def _assign_work_unit(self, node) -> None:
            # Longest first (xdist orders by test count, which sent one-test files of minutes last).
            if not self.ordered:
                by_length = sorted(self.workqueue.items(), key=lambda item: (-_MINUTES.get(item[0], 0), -len(item[1])))
                self.workqueue.clear()
                self.workqueue.update(by_length)
                self.ordered = True
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session")
def spark_available(tmp_path_factory) -> None:
    """Start the one Spark session of the test session (every SparkEngine reuses it), or skip."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17 on PATH")
    pytest.importorskip("pyspark")
    from shoplake.engines.spark_session import spark_session

    spark_session(Settings(lake=tmp_path_factory.mktemp("spark-lake"), engine="spark"))
