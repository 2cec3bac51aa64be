"""The three model kinds, their registered model names and the validation metric that crowns a champion."""

from __future__ import annotations

KINDS = ("segments", "rfm", "propensity")

MODEL_NAMES = {
    "segments": "shoplake-user-segments",
    "rfm": "shoplake-rfm-segments",
    "propensity": "shoplake-propensity",
}
KIND_OF_MODEL = {name: kind for kind, name in MODEL_NAMES.items()}

# The champion rule compares this validation metric (higher is better for all three).
KEY_METRICS = {
    "segments": "silhouette",
    "rfm": "silhouette",
    "propensity": "val_roc_auc",
}
