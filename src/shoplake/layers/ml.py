"""Machine-learning outputs: written by `shoplake ml score` (shoplake.ml), declared here like every table.

Each scoring run overwrites these tables with the predictions of the current `champion` model version
(earlier scorings stay readable through Delta time travel, `shoplake history <table>`). Every row
names the registered model and version that produced it. `ops.model_decisions` is appended by
`shoplake ml train`: one row per registered version with its champion decision.
"""

from __future__ import annotations

from shoplake.catalog.spec import TableSpec, col, in_range, not_null, query_rule, row_rule, unique

_MODEL_COLUMNS = (
    col("model_name", "VARCHAR", "registered MLflow model that produced the row"),
    col("model_version", "BIGINT", "version of that model (the champion when scored)"),
    col("scored_at", "TIMESTAMPTZ", "when the scoring run wrote the row"),
)

USER_SEGMENTS = TableSpec(
    name="gold.user_segments",
    description=("One row per user_id in gold.user_features: the behavioural segment (K-means on views, carts "
                 "and purchases per session) and its business name."),
    grain=("user_id",),
    columns=(
        col("user_id", "BIGINT"),
        col("segment_id", "INTEGER", "segment number; higher = more purchases (then carts) per session"),
        col("segment_name", "VARCHAR", "Browsers, Engaged, High-Value (more names when k > 3)"),
        col("views_per_session", "DOUBLE", "model input: count_views / count_sessions"),
        col("carts_per_session", "DOUBLE", "model input: count_carts / count_sessions"),
        col("purchases_per_session", "DOUBLE", "model input: count_purchases / count_sessions"),
        *_MODEL_COLUMNS,
    ),
    inputs=("gold.user_features",),
    build="external",
    checks=(unique("user_id"), not_null("segment_name", action="fail")),
)

USER_SEGMENT_PROFILES = TableSpec(
    name="gold.user_segment_profiles",
    description=("One row per user segment_id of the latest scoring: size, mean recency, frequency "
                 "(sessions) and monetary value (purchase revenue), per-visit behaviour and a recommended action."),
    grain=("segment_id",),
    columns=(
        col("segment_id", "INTEGER"),
        col("segment_name", "VARCHAR"),
        col("count_users", "BIGINT"),
        col("share_of_users", "DOUBLE", "count_users / all segmented users"),
        col("mean_recency_days", "DOUBLE", "mean gold.user_features.recency_days"),
        col("mean_frequency", "DOUBLE", "mean sessions per user"),
        col("mean_monetary", "DOUBLE", "mean purchase revenue per user (clickstream has no returns)"),
        col("mean_count_purchases", "DOUBLE"),
        col("mean_views_per_session", "DOUBLE"),
        col("mean_carts_per_session", "DOUBLE"),
        col("mean_purchases_per_session", "DOUBLE"),
        col("recommended_action", "VARCHAR"),
        *_MODEL_COLUMNS,
    ),
    inputs=("gold.user_segments", "gold.user_features"),
    build="external",
    checks=(unique("segment_id"),),
)

CUSTOMER_SEGMENTS = TableSpec(
    name="gold.customer_segments",
    description=("One row per customer_id in gold.customer_rfm: the RFM segment (K-means on log recency, "
                 "frequency and net monetary value), its business name and the quintile scores."),
    grain=("customer_id",),
    columns=(
        col("customer_id", "BIGINT"),
        col("segment_id", "INTEGER", "segment number; higher = higher summed RFM scores"),
        col("segment_name", "VARCHAR", "Champions, Regular, Hibernating (At-Risk, ... when k > 3)"),
        col("r_score", "INTEGER", "1-5 recency quintile (5 = most recent)"),
        col("f_score", "INTEGER", "1-5 frequency quintile"),
        col("m_score", "INTEGER", "1-5 monetary quintile"),
        col("rfm_cell", "VARCHAR", "the three scores as text, e.g. '545'"),
        col("recency_days", "BIGINT"),
        col("frequency", "BIGINT"),
        col("net_monetary", "DOUBLE", "monetary + returns_value"),
        *_MODEL_COLUMNS,
    ),
    inputs=("gold.customer_rfm",),
    build="external",
    checks=(unique("customer_id"), not_null("segment_name", action="fail")),
)

CUSTOMER_SEGMENT_PROFILES = TableSpec(
    name="gold.customer_segment_profiles",
    description=("One row per RFM segment_id of the latest scoring: size, mean recency, frequency and "
                 "monetary value (gross, returns, net of returns), mean scores and a recommended action."),
    grain=("segment_id",),
    columns=(
        col("segment_id", "INTEGER"),
        col("segment_name", "VARCHAR"),
        col("count_customers", "BIGINT"),
        col("share_of_customers", "DOUBLE"),
        col("mean_recency_days", "DOUBLE"),
        col("mean_frequency", "DOUBLE", "mean distinct sale invoices"),
        col("mean_monetary", "DOUBLE", "mean gross sales"),
        col("mean_returns_value", "DOUBLE", "mean returns (<= 0)"),
        col("mean_net_monetary", "DOUBLE", "mean monetary net of returns"),
        col("total_net_monetary", "DOUBLE"),
        col("share_of_net_monetary", "DOUBLE", "total_net_monetary / all customers' net monetary"),
        col("mean_r_score", "DOUBLE"),
        col("mean_f_score", "DOUBLE"),
        col("mean_m_score", "DOUBLE"),
        col("recommended_action", "VARCHAR"),
        *_MODEL_COLUMNS,
    ),
    inputs=("gold.customer_segments", "gold.customer_rfm"),
    build="external",
    checks=(unique("segment_id"),),
)

CONVERSION_PREDICTIONS = TableSpec(
    name="gold.conversion_predictions",
    description=("One row per (user_id, product_id) candidate at cutoff_at (a pair with an event in the "
                 "lookback window before it): the calibrated probability that the user buys the product "
                 "within horizon_days after cutoff_at."),
    grain=("user_id", "product_id", "cutoff_at"),
    columns=(
        col("user_id", "BIGINT"),
        col("product_id", "BIGINT"),
        col("probability", "DOUBLE", "calibrated probability of a purchase in [cutoff_at, cutoff_at + horizon)"),
        col("cutoff_at", "TIMESTAMPTZ", "features use only events strictly before it"),
        col("horizon_days", "INTEGER"),
        col("user_rank", "INTEGER", "1 = the user's most likely product"),
        *_MODEL_COLUMNS,
    ),
    inputs=("silver.events",),
    build="external",
    checks=(
        unique("user_id", "product_id", "cutoff_at"),
        in_range("probability", low=0.0, high=1.0, action="fail"),
        not_null("probability", action="fail"),
    ),
)

_RANKS_WITHOUT_GAPS = """
    SELECT {key} FROM candidate GROUP BY {key}
    HAVING min(rank) <> 1 OR max(rank) <> count(*) OR count(DISTINCT rank) <> count(*)"""
_SCORES_BY_RANK = """
    SELECT a.{key} FROM candidate AS a JOIN candidate AS b ON a.{key} = b.{key} AND b.rank = a.rank + 1
    WHERE b.score > a.score"""

USER_RECOMMENDATIONS = TableSpec(
    name="gold.user_recommendations",
    description=("One row per (user_id, rank): the top N next-best products of every active user (an event in "
                 "the last active_days before cutoff_at) by the champion recommender, products the user bought "
                 "before cutoff_at excluded, with the reason shown to the user."),
    grain=("user_id", "rank"),
    columns=(
        col("user_id", "BIGINT"),
        col("rank", "INTEGER", "1 = the best recommendation; 1..N without gaps"),
        col("product_id", "BIGINT"),
        col("score", "DOUBLE", "the recommender's score (comparable within one user's list; not a probability)"),
        col("reason", "VARCHAR", "bought with <product_id>, popular in <category> or popular overall"),
        col("cutoff_at", "TIMESTAMPTZ", "recommendations use only events strictly before it"),
        *_MODEL_COLUMNS,
    ),
    inputs=("silver.events",),
    build="external",
    checks=(
        unique("user_id", "rank"),
        unique("user_id", "product_id"),
        not_null("product_id", action="fail"),
        query_rule("ranks_without_gaps", _RANKS_WITHOUT_GAPS.format(key="user_id"), action="fail"),
        query_rule("scores_non_increasing_by_rank", _SCORES_BY_RANK.format(key="user_id"), action="fail"),
    ),
)

SIMILAR_PRODUCTS = TableSpec(
    name="gold.similar_products",
    description=("One row per (product_id, rank): up to N products most similar to every active product (an "
                 "event in the last active_days before cutoff_at): carted or bought by the same users (cosine), "
                 "then the most bought products of its category."),
    grain=("product_id", "rank"),
    columns=(
        col("product_id", "BIGINT"),
        col("rank", "INTEGER", "1 = the most similar; 1..N without gaps"),
        col("similar_product_id", "BIGINT"),
        col("score", "DOUBLE", "cosine of co-occurrence, plus a small same-category popularity term"),
        col("reason", "VARCHAR", "bought together by n users, carted or bought by the same users, popular in "
                                 "<category>"),
        col("cutoff_at", "TIMESTAMPTZ", "similarities use only events strictly before it"),
        *_MODEL_COLUMNS,
    ),
    inputs=("silver.events",),
    build="external",
    checks=(
        unique("product_id", "rank"),
        unique("product_id", "similar_product_id"),
        row_rule("not_itself", "product_id = similar_product_id", action="fail"),
        query_rule("ranks_without_gaps", _RANKS_WITHOUT_GAPS.format(key="product_id"), action="fail"),
        query_rule("scores_non_increasing_by_rank", _SCORES_BY_RANK.format(key="product_id"), action="fail"),
    ),
)


_CLV_HORIZONS = (("3m", 91), ("6m", 183), ("12m", 365))  # shoplake.ml.clv.HORIZONS (a test checks they agree)


def _clv_columns() -> tuple:
    out = []
    for label, days in _CLV_HORIZONS:
        for measure, what in (("purchases", "purchase days (days with a sale)"),
                              ("value", "net revenue, undiscounted, in the invoices' currency")):
            name = f"expected_{measure}_{label}"
            out += [col(name, "DOUBLE", f"posterior median of the expected {what} in the {days} days from cutoff_at"),
                    col(f"{name}_low", "DOUBLE", "10th percentile of that expectation over the parameter draws"),
                    col(f"{name}_high", "DOUBLE", "90th percentile")]
    return tuple(out)


def _clv_ordered() -> tuple:
    checks = []
    for label, _ in _CLV_HORIZONS:
        for measure in ("purchases", "value"):
            name = f"expected_{measure}_{label}"
            checks.append(row_rule(f"interval_ordered_{name}",
                                   f"NOT ({name}_low <= {name} AND {name} <= {name}_high)", action="fail"))
    return tuple(checks)


CUSTOMER_CLV = TableSpec(
    name="gold.customer_clv",
    description=("One row per customer_id with a sale line before cutoff_at: BG/NBD probability alive and expected "
                 "purchase days, Gamma-Gamma expected net spend, and their product (expected value) over 3, 6 "
                 "and 12 months, each with an 80 % interval over the parameters' posterior."),
    grain=("customer_id",),
    columns=(
        col("customer_id", "BIGINT"),
        col("probability_alive", "DOUBLE", "posterior mean probability that the customer has not dropped out"),
        *_clv_columns(),
        col("expected_spend_per_purchase", "DOUBLE", "posterior median net spend per future purchase day"),
        col("spend_basis", "VARCHAR", "own: the customer's net spend shrunk to the mean (Gamma-Gamma); "
                                      "population: the mean spend (net value <= 0, returns reach purchases)"),
        col("frequency", "BIGINT", "repeat purchase days before cutoff_at (purchase days - 1)"),
        col("recency_days", "BIGINT", "last - first purchase day"),
        col("tenure_days", "BIGINT", "cutoff_at - first purchase day (BG/NBD's T)"),
        col("net_value", "DOUBLE", "sale revenue + returns (negative) before cutoff_at"),
        col("cutoff_at", "TIMESTAMPTZ", "the day after the last invoice date: the model reads only earlier days"),
        *_MODEL_COLUMNS,
    ),
    inputs=("silver.sales", "silver.returns"),
    build="external",
    checks=(
        unique("customer_id"),
        in_range("probability_alive", low=0.0, high=1.0, action="fail"),
        not_null("expected_value_12m", action="fail"),
        row_rule("accepted_values_spend_basis", "spend_basis NOT IN ('own', 'population')",
                 action="fail"),
        *_clv_ordered(),
    ),
)

MODEL_DECISIONS = TableSpec(
    name="ops.model_decisions",
    description=("One row per registered model version: the champion decision of the training run that "
                 "registered it, with the numbers it was taken on. Appended by `shoplake ml train`."),
    grain=("model_name", "model_version"),
    columns=(
        col("model_name", "VARCHAR", "registered MLflow model"),
        col("model_version", "BIGINT", "the version the decision is about"),
        col("kind", "VARCHAR", "segments, rfm or propensity"),
        col("run_id", "VARCHAR", "shoplake run id of the training run"),
        col("decided_at", "TIMESTAMPTZ"),
        col("key_metric", "VARCHAR", "silhouette, or val_roc_auc for propensity"),
        col("value", "DOUBLE", "the new version's key metric"),
        col("champion_version", "BIGINT", "the champion it was compared with (NULL for a first version)"),
        col("champion_value", "DOUBLE", "the champion's key metric, as compared"),
        col("difference", "DOUBLE", "value - champion_value"),
        col("difference_low", "DOUBLE", "95 % paired-bootstrap interval of the difference"),
        col("difference_high", "DOUBLE"),
        col("required_gain", "DOUBLE", "the gain a promotion needed: max(interval half-width, minimum effect); "
                                       "on new data (segments, rfm), the loss that blocks one"),
        col("pr_auc_difference", "DOUBLE", "new - champion validation PR-AUC (propensity)"),
        col("brier_skill_difference", "DOUBLE", "new - champion Brier skill score (propensity)"),
        col("compared_on", "VARCHAR", "what the champion was measured on"),
        col("promoted", "BOOLEAN", "whether the version took the champion alias"),
        col("decision", "VARCHAR", "the decision in words, as tagged on the MLflow version"),
        col("data_changed", "BOOLEAN", "the champion was fit on other input data versions (segments, rfm; "
                                       "NULL: unknown or no champion)"),
        col("input_versions", "VARCHAR", "JSON: input table -> data version the new version was fit on"),
    ),
    build="external",
    ledgered=True,
)

PREDICTION_OUTCOMES = TableSpec(
    name="gold.prediction_outcomes",
    description=("One row per scoring of gold.conversion_predictions whose label window has passed and rank bin "
                 "(1-10, 11-100, 101-1000, 1001-10000, the rest): predicted against realised purchases, and the "
                 "scoring's realised precision@k / recall@k and coverage (the same on each of its rows). "
                 "Rewritten by every propensity scoring from the table's Delta history."),
    grain=("cutoff_at", "model_version", "rank_from"),
    columns=(
        col("cutoff_at", "TIMESTAMPTZ", "the scoring's cutoff; its label window is [cutoff_at, + horizon_days)"),
        col("horizon_days", "INTEGER"),
        col("model_name", "VARCHAR"),
        col("model_version", "BIGINT", "the champion version that scored"),
        col("predictions_version", "BIGINT", "the Delta version of gold.conversion_predictions read"),
        col("evaluated_at", "TIMESTAMPTZ"),
        col("candidates", "BIGINT", "pairs scored"),
        col("conversions", "BIGINT", "pairs bought in the label window, candidates or not"),
        col("candidate_conversions", "BIGINT", "scored pairs that were bought"),
        col("coverage", "DOUBLE", "candidate_conversions / conversions"),
        col("precision_at_10", "DOUBLE", "share bought among the 10 most likely pairs (ties by user_id, product_id)"),
        col("precision_at_100", "DOUBLE"),
        col("precision_at_1000", "DOUBLE"),
        col("recall_at_10", "DOUBLE", "share of candidate_conversions among the 10 most likely pairs"),
        col("recall_at_100", "DOUBLE"),
        col("recall_at_1000", "DOUBLE"),
        col("rank_from", "BIGINT", "first rank of the bin (1 = most likely pair)"),
        col("rank_to", "BIGINT"),
        col("bin_candidates", "BIGINT"),
        col("predicted_purchases", "DOUBLE", "sum of the bin's probabilities"),
        col("predicted_purchases_sd", "DOUBLE", "standard deviation of that count if the probabilities are right"),
        col("realised_purchases", "BIGINT", "pairs of the bin bought in the label window"),
    ),
    inputs=("gold.conversion_predictions", "silver.events"),
    build="external",
    checks=(unique("cutoff_at", "model_version", "rank_from"),),
)

MODEL_MONITORING = TableSpec(
    name="ops.model_monitoring",
    description=("One row per scoring run, model and input (`_prediction` for the predicted probabilities): "
                 "population stability index against the training distribution and a summary of the scored "
                 "values. Appended by every scoring run."),
    grain=("run_id", "model_name", "input_name"),
    columns=(
        col("run_id", "VARCHAR"),
        col("scored_at", "TIMESTAMPTZ"),
        col("kind", "VARCHAR", "segments, rfm or propensity"),
        col("model_name", "VARCHAR"),
        col("model_version", "BIGINT"),
        col("input_name", "VARCHAR", "a model input, or _prediction (propensity's probabilities)"),
        col("rows", "BIGINT", "rows scored"),
        col("psi", "DOUBLE", "population stability index against training (NULL: no reference stored)"),
        col("psi_threshold", "DOUBLE", "drift is flagged above this (0.2)"),
        col("is_drifted", "BOOLEAN", "psi > psi_threshold"),
        col("mean", "DOUBLE", "of the scored values"),
        col("p50", "DOUBLE"),
        col("p90", "DOUBLE"),
        col("p99", "DOUBLE"),
    ),
    build="external",
    ledgered=True,
)

TABLES = (USER_SEGMENTS, USER_SEGMENT_PROFILES, CUSTOMER_SEGMENTS, CUSTOMER_SEGMENT_PROFILES,
          CONVERSION_PREDICTIONS, USER_RECOMMENDATIONS, SIMILAR_PRODUCTS, CUSTOMER_CLV, PREDICTION_OUTCOMES,
          MODEL_DECISIONS, MODEL_MONITORING)
