"""Work that every job worker would repeat, done once in the fork server (the last of `workers.PRELOAD`).

The recommender's compiled kernel (Numba) is loaded by one call on a tiny matrix.

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


def _recommender_kernel() -> None:
    # Numba compiles (or loads from its cache, 0.4 s of CPU) the recommender's kernel at its first call;
    # called here on a tiny matrix of the index and value types of real ones, the workers inherit it.
    with contextlib.suppress(Exception):
        import numpy as np
        import scipy.sparse as sp

        from shoplake.ml.recommender import rows_times

        tiny = sp.csr_matrix(np.ones((1, 1), dtype=np.float32))
        rows_times(tiny, np.zeros(1, dtype=np.int64), tiny)


_mlflow_package_map()
_recommender_kernel()
