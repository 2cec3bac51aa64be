"""Leakage made impossible by construction: the feature SQL is parse-checked before anything runs.

Mutations of the shipped feature queries, each refused by `train_model` before it reads a table or opens
MLflow: a feature reading any Gold table, a table not bound as of the cutoff T, and events at or after T.
The shipped queries pass. Needs no data: refusing comes before reading (the lake here is empty, and the
refusal is a `LeakageError`, not the "has not been built yet" a read would raise).
"""

from __future__ import annotations

import pytest

from shoplake.catalog import default_catalog
from shoplake.ml import as_of, features, train_model
from shoplake.ml.errors import LeakageError

from .lakes import open_lake

GOLD_TABLES = sorted(spec.name for spec in default_catalog() if spec.layer == "gold")
HONEST_WINDOW = features.feature_window_sql()
HONEST_FEATURES = features.pair_features_sql()
# Where the feature query joins its last input: mutations add one more join there.
JOIN_POINT = "LEFT JOIN cat_price AS cp ON cp.category_l1 = p.category_l1"


def _refused_before_training(tmp_path, monkeypatch, *, window: str | None = None, feature_sql: str | None = None,
                             match: str) -> None:
    if window is not None:
        monkeypatch.setattr(features, "feature_window_sql", lambda: window)
    if feature_sql is not None:
        monkeypatch.setattr(features, "pair_features_sql", lambda: feature_sql)
    lake = open_lake(tmp_path / "lake")
    with pytest.raises(LeakageError, match=match):
        train_model(lake, "propensity", run_id="mutant")
    assert not (tmp_path / "lake" / "_mlflow").exists()  # no run, no model: refused before training


def _joining(table: str, column: str = "*") -> str:
    mutated = HONEST_FEATURES.replace(
        JOIN_POINT, f"{JOIN_POINT}\nLEFT JOIN {table} AS leak ON leak.product_id = p.product_id")
    assert mutated != HONEST_FEATURES
    return mutated


def test_the_shipped_feature_queries_pass():
    features.check_feature_queries()
    assert as_of.check_window_sql(HONEST_WINDOW) == as_of.AS_OF_INPUTS["silver.events"]
    as_of.check_feature_sql(HONEST_FEATURES)


@pytest.mark.parametrize("gold", GOLD_TABLES)
def test_mutation_a_feature_reading_any_gold_table_is_refused(tmp_path, monkeypatch, gold):
    # The audit's finding: all-time counts from gold.product_performance passed both old checks.
    _refused_before_training(tmp_path, monkeypatch, feature_sql=_joining(gold),
                             match=rf"a feature query reads {gold}: Gold tables aggregate all time")


@pytest.mark.parametrize("gold", ["gold.product_performance", "gold.user_features"])
def test_mutation_a_window_reading_a_gold_table_is_refused(gold):
    window = HONEST_WINDOW.replace("FROM silver.events", f"FROM {gold}")
    with pytest.raises(LeakageError, match=rf"the feature window query reads {gold}: Gold tables"):
        as_of.check_window_sql(window)


@pytest.mark.parametrize("reference", [
    "silver.events",                                       # all of it, not the window before T
    "silver.products",                                     # no time column: cannot be bound as of T
    "bronze.clickstream",
    "(SELECT product_id FROM silver.sales)",               # inside a subquery
    "read_parquet('lakehouse/gold/product_performance/*.parquet')",  # by path
])
def test_mutation_a_feature_reading_a_table_unbound_as_of_the_cutoff_is_refused(tmp_path, monkeypatch, reference):
    name = reference.split("FROM ")[-1].rstrip(")") if reference.startswith("(") else reference
    expected = "a table function" if reference.startswith("read_") else f"{name}, which is not bound as of the cutoff"
    _refused_before_training(tmp_path, monkeypatch, feature_sql=_joining(reference),
                             match=rf"a feature query reads {expected}".replace("(", r"\(").replace(".", r"\."))


@pytest.mark.parametrize("upper_bound", [
    "event_at < CAST($cutoff AS TIMESTAMPTZ) + INTERVAL 7 DAY",   # the window runs into the label window
    "event_at <= $cutoff",                                        # events at exactly T
    "event_at < $window_start + INTERVAL 14 DAY",                 # bounded, but not by the cutoff
    "(event_at < $cutoff OR event_type = 'purchase')",            # every purchase, whenever
    "TRUE",                                                       # no upper bound at all
])
def test_mutation_a_feature_reading_events_at_or_after_the_cutoff_is_refused(tmp_path, monkeypatch, upper_bound):
    window = HONEST_WINDOW.replace("event_at < $cutoff", upper_bound)
    assert window != HONEST_WINDOW
    _refused_before_training(tmp_path, monkeypatch, window=window,
                             match=r"reads silver\.events without the condition `event_at < \$cutoff` on every row")


def test_mutation_a_window_that_hides_later_events_in_a_subquery_or_join_is_refused():
    subquery = HONEST_WINDOW.replace(
        "price,", "price, (SELECT max(price) FROM silver.events AS later WHERE later.event_at >= $cutoff) AS p2,")
    with pytest.raises(LeakageError, match="must read one table, without subqueries"):
        as_of.check_window_sql(subquery)
    joined = HONEST_WINDOW.replace("FROM silver.events", "FROM silver.events JOIN silver.events AS e2 USING (user_id)")
    with pytest.raises(LeakageError, match="without WITH, joins or set operations"):
        as_of.check_window_sql(joined)


def test_feature_sql_that_does_not_parse_is_refused():
    with pytest.raises(LeakageError, match="cannot be parsed"):
        as_of.check_feature_sql("SELECT FROM WHERE (")
