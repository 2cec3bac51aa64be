"""The recommender as an MLflow pyfunc "model from code": MLflow stores this file, not a pickle.

A recommender is its method and parameters (the model's `model_config`); what it learns from the data is
refitted on the events it is given, so `predict` takes events (`shoplake.ml.recommender.EVENT_COLUMNS`)
and returns the top N products of every user in them. MLflow executes this file when it loads the model.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class RecommenderModel(PythonModel):
    """`predict(events)`: user_id, rank, product_id, score, reason for every user of the events."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    def load_context(self, context) -> None:
        self.config = dict(context.model_config or {})

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from shoplake.ml import recommender

        return recommender.recommend_events(model_input, self.config)


mlflow.models.set_model(RecommenderModel())
