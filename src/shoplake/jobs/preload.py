"""Work that every job worker would repeat, done once in the fork server (the last of `workers.PRELOAD`).

MLflow maps each installed distribution to its modules (`importlib.metadata` over all of site-packages,
about 0.4 s of CPU) the first time a process logs or loads a model, to warn of requirement mismatches.
Built here, every forked training and scoring inherits the map instead of building it again.
"""

from __future__ import annotations

import contextlib


def _mlflow_package_map() -> None:
    # A private MLflow function: if a release renames it, workers simply build the map themselves again.
    with contextlib.suppress(Exception):
        from mlflow.utils import requirements_utils

        requirements_utils._init_modules_to_packages_map()


_mlflow_package_map()
