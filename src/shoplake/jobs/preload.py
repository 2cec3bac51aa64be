"""Work that every job worker would repeat, done once in the fork server (the last of `workers.PRELOAD`).

The recommender's compiled kernels (Numba) are loaded by scoring a tiny model.

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


def _recommender_kernels() -> None:
    # Numba compiles (or loads from its cache, 0.4 s of CPU each) the recommender's kernels at their first
    # call; called here on a tiny model (matrices of the index and value types of real ones), the workers
    # inherit them.
    with contextlib.suppress(Exception):
        import numpy as np
        import pandas as pd

        from shoplake.ml.params import RecommenderParams
        from shoplake.ml.recommender import Recommender, interactions_from_events

        events = pd.DataFrame({"user_id": [1, 1, 2], "product_id": [10, 11, 10],
                               "event_type": ["view", "purchase", "cart"],
                               "event_at": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
                               "category_id": [1, 1, 1], "category_code": ["a", "a", "a"], "brand": ["b", "", "b"]})
        model = Recommender("affinity", RecommenderParams(), interactions_from_events(events))
        model.top(np.arange(model.data.n_users), 1)
        model.top_by_blocks(np.arange(model.data.n_users), 1)


_mlflow_package_map()
_recommender_kernels()
