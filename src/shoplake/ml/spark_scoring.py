"""Model inference on Spark (`shoplake --engine spark ml score`): the champion as an MLflow Spark UDF.

Only the predictions move to Spark. The model inputs are the feature frame the embedded path builds
(`shoplake.ml.features`, DuckDB SQL): the propensity features of a cutoff are cut in one place,
`features.feature_window_sql()`, and the leakage audit proves that place; a second copy of the features
in Spark SQL would be a second, unaudited definition. The frame reaches Spark as an Arrow table with a
row number, the UDF (`Tracker.spark_udf`, MLflow's `pyfunc.spark_udf`) runs the registered model on the
executors, and the predictions come back in row order to the embedded write path (checks, ledger,
idempotency), which is the same for both engines.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from shoplake.config import Settings
from shoplake.engines.spark_session import spark_session
from shoplake.errors import ShoplakeError
from shoplake.ml.tracking import ModelRef, Tracker

log = logging.getLogger(__name__)

_ROW = "_shoplake_row"  # position of the input row, to return predictions in input order
_PREDICTION = "_shoplake_prediction"


def predict(settings: Settings, tracker: Tracker, ref: ModelRef, inputs: pd.DataFrame, *,
            probability: bool) -> np.ndarray:
    """Predictions of registered model version `ref` for the rows of `inputs`, computed on Spark.

    Args:
        settings: the lake's settings (`spark_master` or `spark_remote`, driver memory).
        tracker: the MLflow store holding `ref`.
        ref: the registered version to run (the champion `load_champion` returned).
        inputs: the model input, one column per model feature, named as in the model's signature.
        probability: True for a classifier logged with `predict_proba` (returns the probability of
            class 1), False for a model whose `predict` returns one integer label per row.

    Returns:
        One prediction per row of `inputs`, in the same order.
    """
    if inputs.empty:
        return np.empty(0, dtype=np.float64 if probability else np.int64)
    from pyspark.sql import functions as F

    spark = spark_session(settings)
    table = pa.Table.from_pandas(inputs.reset_index(drop=True), preserve_index=False)
    table = table.append_column(_ROW, pa.array(np.arange(len(inputs), dtype=np.int64)))
    frame = spark.createDataFrame(table)
    # predict_proba gives one column per class; the UDF returns them as an array, class 1 second.
    model = tracker.spark_udf(spark, ref, result_type="array<double>" if probability else "long")
    scored = frame.select(_ROW, model(F.struct(*[F.col(c) for c in inputs.columns])).alias(_PREDICTION))
    result = scored.toArrow().sort_by(_ROW)
    if not np.array_equal(result[_ROW].to_numpy(), np.arange(len(inputs))):
        raise ShoplakeError(f"Spark returned {result.num_rows} predictions for {len(inputs)} input rows of "
                            f"{ref.name} v{ref.version}, not one per row")
    log.info("%s v%s scored %d rows on Spark", ref.name, ref.version, result.num_rows)
    column = result[_PREDICTION]
    if probability:
        column = pc.list_element(column, 1)
    return column.to_numpy()
