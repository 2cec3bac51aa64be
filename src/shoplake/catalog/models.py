"""The model kinds: one declaration each (`ModelSpec`), read by the ML code, the jobs, the CLI and the
dashboard. Nothing else lists the kinds.

A declaration is plain data, so reading the registry imports neither scikit-learn nor MLflow (the job
definitions and the command line read it to validate names).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoplake.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """One kind of model.

    Attributes:
        kind: the name users type (`shoplake ml train segments`, `model: segments` in a job file).
        registered_name: its name in the MLflow model registry.
        key_metric: the validation metric that crowns a champion (higher is better).
        inputs: the tables a training run reads; their versions and the parameters decide whether a
            scheduled run may keep the champion unchanged.
        outputs: the Gold tables its scoring writes.
        summary: what it models, in a few words (CLI help).
        limits: the known limits printed in its model card.
    """

    kind: str
    registered_name: str
    key_metric: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    summary: str
    limits: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (*self.inputs, *self.outputs):
            if name.count(".") != 1:
                raise ValueError(f"model {self.kind}: {name!r} is not a catalog name such as gold.user_features")


_SEGMENT_NAMES = "Segment names come from fixed rules over the profiles; they describe, they do not predict."

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        kind="segments",
        registered_name="shoplake-user-segments",
        key_metric="silhouette",
        inputs=("gold.user_features",),
        outputs=("gold.user_segments", "gold.user_segment_profiles"),
        summary="clickstream users",
        limits=("K-means on per-session rates of one month of clickstream; k by silhouette on a sample.",
                _SEGMENT_NAMES),
    ),
    ModelSpec(
        kind="rfm",
        registered_name="shoplake-rfm-segments",
        key_metric="silhouette",
        inputs=("gold.customer_rfm",),
        outputs=("gold.customer_segments", "gold.customer_segment_profiles"),
        summary="retail customers",
        limits=("K-means on log recency, frequency and net monetary value; k by bootstrap stability (ARI).",
                _SEGMENT_NAMES),
    ),
    ModelSpec(
        kind="propensity",
        registered_name="shoplake-propensity",
        key_metric="val_roc_auc",
        inputs=("silver.events",),
        outputs=("gold.conversion_predictions",),
        summary="user x product conversion",
        limits=(
            "Candidates are the (user, product) pairs with an event in the lookback window: a purchase of a pair "
            "never touched in that week cannot be predicted (see the coverage).",
            "Positives are few (tens per validation week at 1-2M events): every metric is given with its "
            "bootstrap interval; differences inside it are noise.",
            "Trained and measured on generated data (shoplake generate); on real data the reviewed strong features "
            "and the baselines must be looked at again.",
        ),
    ),
    ModelSpec(
        kind="recommender",
        registered_name="shoplake-recommender",
        key_metric="val_recall_at_10",
        inputs=("silver.events",),
        outputs=("gold.user_recommendations", "gold.similar_products"),
        summary="next-best products",
        limits=(
            "Implicit feedback of one clickstream: popularity, category popularity, item-to-item co-occurrence, "
            "category/brand affinity and ALS compared on the last week; the model is the method and its "
            "parameters, refitted on all events before the scoring cutoff.",
            "Only users with history are evaluated and recommended to; products bought before the cutoff are "
            "never recommended (a repeat purchase is not predicted).",
            "The affinity method won on generated data with planted category affinities; on the REES46 samples "
            "no user with history bought in the validation week, so it is not measured on real data.",
        ),
    ),
    ModelSpec(
        kind="clv",
        registered_name="shoplake-clv",
        key_metric="holdout_accuracy",
        inputs=("silver.sales", "silver.returns"),
        outputs=("gold.customer_clv",),
        summary="retail customer lifetime value",
        limits=(
            "BG/NBD purchase days and Gamma-Gamma net spend per purchase day; no seasonality: on the UCI file a "
            "fit up to 2011-09-09 under-predicts the Q4 holdout by about a quarter in every frequency bucket.",
            "Intervals are over the parameters' posterior (Laplace approximation): the uncertainty of the "
            "expected value, not the spread of what one customer will do. Values are not discounted.",
            "Returns are netted per customer (they cannot be tied to an invoice); a customer whose returns "
            "reach its purchases gets the population mean spend.",
        ),
    ),
)

MODEL_SPECS: dict[str, ModelSpec] = {spec.kind: spec for spec in MODELS}
KINDS: tuple[str, ...] = tuple(MODEL_SPECS)
# Views of the registry that the ML code reads often.
MODEL_NAMES: dict[str, str] = {spec.kind: spec.registered_name for spec in MODELS}
KIND_OF_MODEL: dict[str, str] = {spec.registered_name: spec.kind for spec in MODELS}
KEY_METRICS: dict[str, str] = {spec.kind: spec.key_metric for spec in MODELS}


def model_spec(kind: str) -> ModelSpec:
    """The declaration of `kind`; a `ConfigError` naming the kinds when there is none."""
    try:
        return MODEL_SPECS[kind]
    except KeyError:
        raise ConfigError(f"unknown model kind {kind!r}: expected one of {', '.join(KINDS)}") from None


def kinds_text(conjunction: str = "or") -> str:
    """`segments, rfm or propensity`: the kinds for help texts."""
    return f"{', '.join(KINDS[:-1])} {conjunction} {KINDS[-1]}"
