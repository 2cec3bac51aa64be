"""Machine learning on the lake: behavioural and RFM segments, conversion propensity and recommendations.

Models are trained from catalog tables, tracked and registered in MLflow (`shoplake.ml.tracking`),
and their predictions are written as Delta tables by the `champion` version of each model:

| kind | registered model | reads | writes |
|---|---|---|---|
| `segments` | `shoplake-user-segments` | `gold.user_features` | `gold.user_segments`, `gold.user_segment_profiles` |
| `rfm` | `shoplake-rfm-segments` | `gold.customer_rfm` | `gold.customer_segments`, `gold.customer_segment_profiles` |
| `propensity` | `shoplake-propensity` | `silver.events` | `gold.conversion_predictions` |
| `recommender` | `shoplake-recommender` | `silver.events` | `gold.user_recommendations`, `gold.similar_products` |

Example:
    >>> from shoplake.ml import score_models, train_model
    >>> result = train_model(lake, "segments", run_id=run_id)  # doctest: +SKIP
    >>> score_models(lake, run_id=run_id, kinds=["segments"])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shoplake.catalog.models import KEY_METRICS, KINDS, MODEL_NAMES
from shoplake.lake import Lake
from shoplake.ml.params import Params, PropensityParams, RFMParams, SegmentParams

if TYPE_CHECKING:
    from shoplake.ml.scoring import ScoreResult
    from shoplake.ml.training import TrainResult

__all__ = ["KEY_METRICS", "KINDS", "MODEL_NAMES", "PropensityParams", "RFMParams", "ScoreResult",
           "SegmentParams", "TrainResult", "score_models", "train_model"]


def __getattr__(name: str):
    # scikit-learn and MLflow load only when a result type or a function is used, so that importing
    # the CLI (every `shoplake` command) stays fast.
    if name == "ScoreResult":
        from shoplake.ml.scoring import ScoreResult

        return ScoreResult
    if name == "TrainResult":
        from shoplake.ml.training import TrainResult

        return TrainResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train_model(lake: Lake, kind: str, *, run_id: str, params: Params | None = None,
                skip_unchanged: bool = False) -> TrainResult:
    """Train, log and register one model; it becomes `champion` only by the champion rule (docs/ML.md): better
    than the current one by more than the interval of the difference (segments and RFM: or fit on new input
    data and not clearly worse); a tie on the same data keeps the champion.

    Args:
        lake: the lake to read the inputs from (and whose MLflow store records the run).
        kind: `segments`, `rfm` or `propensity`.
        run_id: shoplake run id, recorded as a tag of the MLflow run.
        params: hyperparameters (default: `SegmentParams()`, `RFMParams()` or `PropensityParams()`).
        skip_unchanged: keep the champion, without training, when it was trained on the same input
            table versions and parameters (scheduled jobs use this; an explicit `ml train` retrains).

    Raises:
        ConfigError: unknown kind or parameters of the wrong kind.
        TableNotFoundError: an input table has not been built (run `shoplake build`).
        LeakageError: the propensity leakage audit failed (nothing is registered).
    """
    from shoplake import locks
    from shoplake.ml.training import train

    # One training of a model at a time: the second waits, then compares against the first's champion.
    with locks.writing(lake.store.lake, [f"ml.{kind}"]):
        return train(lake, kind, run_id=run_id, params=params, skip_unchanged=skip_unchanged)


def score_models(lake: Lake, *, run_id: str, kinds: Sequence[str] | None = None) -> list[ScoreResult]:
    """Write the predictions of each kind's `champion` (default: all kinds), one result per table.

    Raises:
        ConfigError: an unknown kind.
        TableNotFoundError: an input table has not been built (run `shoplake build`).
        ModelNotFoundError: a kind has no champion yet (run `shoplake ml train <kind>`).
    """
    from shoplake.ml.scoring import score

    lake.repair()
    return score(lake, run_id=run_id, kinds=kinds)
