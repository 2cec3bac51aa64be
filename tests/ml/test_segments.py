"""Behavioural and RFM segments: planted types recovered, names from profiles, tables and profiles."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from shoplake.ml.rfm import RFM_ACTIONS, name_rfm_segments
from shoplake.ml.segmentation import name_user_segments, recommended_action

from .lakes import rows


def _majority(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """planted type -> the segment name most of its members got."""
    by_type: dict[str, Counter] = {}
    for planted, name in pairs:
        by_type.setdefault(planted, Counter())[name] += 1
    return {planted: counts.most_common(1)[0][0] for planted, counts in by_type.items()}


# -- clickstream users ------------------------------------------------------------------------------

def test_user_segments_recover_the_planted_user_types(trained):
    truth = trained.truth("clickstream_truth_users.csv")
    segments = rows(trained.lake, "SELECT user_id, segment_id, segment_name FROM gold.user_segments")
    assert len(segments) == len(truth) == rows(trained.lake, "SELECT count(*) AS n FROM gold.user_features")[0]["n"]
    planted = [truth[r["user_id"]] for r in segments]
    ari = adjusted_rand_score(planted, [r["segment_id"] for r in segments])
    result = trained.train["segments"]
    print(f"\nuser segments: k={int(result.metrics['k'])}, silhouette {result.metrics['silhouette']:.3f}, "
          f"ARI vs planted types {ari:.3f}, sizes {result.details['segments']}, "
          f"silhouette by k {({k: round(v, 3) for k, v in result.details['k_silhouettes'].items()})}, "
          f"trained in {trained.seconds['segments']:.1f}s")
    assert ari >= 0.8
    # The names follow the planted behaviour, not just the partition.
    assert _majority(list(zip(planted, (r["segment_name"] for r in segments), strict=True))) == {
        "browser": "Browsers", "engaged": "Engaged", "high_value": "High-Value"}


def test_user_segments_k_is_the_best_silhouette_on_the_logged_curve(trained):
    result = trained.train["segments"]
    silhouettes = result.details["k_silhouettes"]
    assert int(result.metrics["k"]) == max(silhouettes, key=silhouettes.get)
    assert set(silhouettes) == set(range(2, 9))


def test_user_segment_profiles_agree_with_the_segment_table(trained):
    profiles = pd.DataFrame(rows(trained.lake, "SELECT * FROM gold.user_segment_profiles ORDER BY segment_id"))
    expected = pd.DataFrame(rows(trained.lake, """
        SELECT s.segment_id, count(*) AS n, avg(f.recency_days) AS recency, avg(f.count_sessions) AS sessions,
               avg(f.revenue) AS revenue
        FROM gold.user_segments AS s JOIN gold.user_features AS f USING (user_id)
        GROUP BY s.segment_id ORDER BY s.segment_id"""))
    assert profiles["segment_id"].tolist() == expected["segment_id"].tolist()
    assert profiles["count_users"].tolist() == expected["n"].tolist()
    assert profiles["mean_recency_days"].round(6).tolist() == expected["recency"].round(6).tolist()
    assert profiles["mean_frequency"].round(6).tolist() == expected["sessions"].round(6).tolist()
    assert profiles["mean_monetary"].round(4).tolist() == expected["revenue"].round(4).tolist()
    assert profiles["share_of_users"].sum() == pytest.approx(1.0)
    assert profiles["recommended_action"].str.len().min() > 10
    high_value = profiles.set_index("segment_name").loc["High-Value"]
    assert high_value["mean_monetary"] == profiles["mean_monetary"].max()


# -- naming rules on hand-made profiles -------------------------------------------------------------------

def _user_profile(*segments: tuple[float, float, float, float, float, float]) -> pd.DataFrame:
    columns = ["views_per_session", "carts_per_session", "purchases_per_session", "revenue", "recency_days",
               "count_sessions"]
    return pd.DataFrame(list(segments), columns=columns)


def test_user_naming_rules_for_three_segments():
    profile = _user_profile((9.0, 0.00, 0.00, 0.0, 5, 5),    # looks around only
                            (3.0, 0.60, 0.02, 20.0, 8, 3),   # carts a lot
                            (3.5, 0.20, 2.00, 900.0, 8, 3))  # buys
    assert name_user_segments(profile) == {0: "Browsers", 1: "Engaged", 2: "High-Value"}


def test_user_naming_rules_for_two_and_five_segments():
    two = _user_profile((9.0, 0.0, 0.0, 0.0, 5, 5), (3.0, 0.4, 1.5, 500.0, 8, 3))
    assert name_user_segments(two) == {0: "Browsers", 1: "High-Value"}
    five = _user_profile((9.0, 0.00, 0.00, 0.0, 5, 5), (3.0, 0.60, 0.02, 20.0, 8, 3),
                         (3.5, 0.20, 2.00, 900.0, 8, 3), (4.0, 0.10, 0.10, 50.0, 25, 2),
                         (12.0, 0.05, 0.01, 5.0, 3, 6))
    assert name_user_segments(five) == {0: "Browsers", 1: "Engaged", 2: "High-Value", 3: "Lapsed",
                                        4: "Window Shoppers"}


def test_rfm_naming_rules_for_three_and_four_segments():
    columns = ["recency_days", "frequency", "r_score", "f_score", "m_score"]
    three = pd.DataFrame([(200, 1.3, 1.5, 2.1, 1.8), (45, 3.2, 3.4, 3.5, 3.2), (15, 13.0, 4.6, 4.9, 4.8)],
                         columns=columns)
    assert name_rfm_segments(three) == {0: "Hibernating", 1: "Regular", 2: "Champions"}
    four = pd.DataFrame([(190, 1.3, 1.4, 2.0, 1.7), (20, 2.0, 4.2, 2.8, 2.4), (70, 4.0, 2.9, 3.9, 3.8),
                         (12, 13.0, 4.7, 4.9, 4.8)], columns=columns)
    # The audit's case: recent customers with two invoices are new, not "Regular"
    assert name_rfm_segments(four) == {0: "Hibernating", 1: "New Customers", 2: "At-Risk", 3: "Champions"}
    # relative to the median segment: recent (recency <= median), frequent (frequency >= median)
    five = pd.DataFrame([(190, 1.3, 1.4, 2.0, 1.7), (20, 1.4, 4.2, 2.0, 2.4), (60, 4.0, 2.9, 3.9, 3.8),
                         (30, 3.0, 3.8, 3.5, 3.0), (12, 13.0, 4.7, 4.9, 4.8)], columns=columns)
    assert name_rfm_segments(five) == {0: "Hibernating", 1: "New Customers", 2: "At-Risk", 3: "Regular",
                                       4: "Champions"}
    # medians: recency 23.5 days, frequency 2.75 invoices; a name taken twice gets a number
    six = pd.DataFrame([(190, 1.3, 1.4, 2.0, 1.7), (20, 1.4, 4.2, 2.0, 2.4), (22, 1.5, 4.1, 2.1, 2.2),
                        (60, 4.0, 2.9, 3.9, 3.8), (25, 5.0, 3.8, 4.0, 3.0), (12, 13.0, 4.7, 4.9, 4.8)],
                       columns=columns)
    assert name_rfm_segments(six) == {0: "Hibernating", 1: "New Customers", 2: "New Customers 2", 3: "At-Risk",
                                      4: "At-Risk 2", 5: "Champions"}
    assert recommended_action("New Customers 2", RFM_ACTIONS) == RFM_ACTIONS["New Customers"]


# -- RFM ------------------------------------------------------------------------------------------------

def test_rfm_segments_recover_the_planted_customer_types(trained):
    truth = trained.truth("retail_truth_customers.csv")
    segments = rows(trained.lake, "SELECT customer_id, segment_id, segment_name FROM gold.customer_segments")
    planted = [truth[r["customer_id"]] for r in segments]
    ari = adjusted_rand_score(planted, [r["segment_id"] for r in segments])
    print(f"\nRFM on generated retail: k={int(trained.train['rfm'].metrics['k'])}, ARI vs planted types {ari:.3f}, "
          f"sizes {trained.train['rfm'].details['segments']}")
    assert ari >= 0.8
    assert _majority(list(zip(planted, (r["segment_name"] for r in segments), strict=True))) == {
        "champion": "Champions", "regular": "Regular", "hibernating": "Hibernating"}


def test_rfm_segments_on_the_real_uci_file(uci_trained):
    lake = uci_trained.lake
    profiles = pd.DataFrame(rows(lake, "SELECT * FROM gold.customer_segment_profiles ORDER BY segment_id"))
    customers = rows(lake, "SELECT count(*) AS n, sum(net_monetary) AS net FROM gold.customer_rfm")[0]
    result = uci_trained.train["rfm"]
    shown = profiles[["segment_id", "segment_name", "count_customers", "share_of_customers", "mean_recency_days",
                      "mean_frequency", "mean_monetary", "mean_net_monetary", "share_of_net_monetary",
                      "recommended_action"]]
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print(f"\nRFM on UCI Online Retail ({customers['n']} customers): k={int(result.metrics['k'])}, "
              f"silhouette {result.metrics['silhouette']:.3f} (by k: "
              f"{ {k: round(v, 3) for k, v in result.details['k_silhouettes'].items()} }), "
              f"trained in {uci_trained.seconds['rfm']:.1f}s\n{shown.round(2).to_string(index=False)}")
    assert profiles["count_customers"].sum() == customers["n"]
    assert profiles["total_net_monetary"].sum() == pytest.approx(customers["net"])
    by_name = profiles.set_index("segment_name")
    assert {"Champions", "Regular", "Hibernating"} <= set(by_name.index)
    champions, hibernating = by_name.loc["Champions"], by_name.loc["Hibernating"]
    # A small high-value group and a large lapsed group, as in published k=3-4 segmentations.
    assert champions["share_of_customers"] < 0.3
    assert champions["mean_net_monetary"] == profiles["mean_net_monetary"].max()
    assert champions["share_of_net_monetary"] > 0.5
    assert hibernating["share_of_customers"] > 0.3
    assert hibernating["mean_recency_days"] == profiles["mean_recency_days"].max()
    assert hibernating["mean_recency_days"] > 4 * champions["mean_recency_days"]


def test_rfm_profiles_are_net_of_returns_and_agree_with_gold_customer_rfm(uci_trained):
    lake = uci_trained.lake
    profiles = pd.DataFrame(rows(lake, "SELECT * FROM gold.customer_segment_profiles ORDER BY segment_id"))
    expected = pd.DataFrame(rows(lake, """
        SELECT s.segment_id, count(*) AS n, avg(r.recency_days) AS recency, avg(r.frequency) AS frequency,
               avg(r.monetary) AS monetary, avg(r.returns_value) AS returns, avg(r.net_monetary) AS net
        FROM gold.customer_segments AS s JOIN gold.customer_rfm AS r USING (customer_id)
        GROUP BY s.segment_id ORDER BY s.segment_id"""))
    assert profiles["count_customers"].tolist() == expected["n"].tolist()
    for mine, theirs in (("mean_recency_days", "recency"), ("mean_frequency", "frequency"),
                         ("mean_monetary", "monetary"), ("mean_returns_value", "returns"),
                         ("mean_net_monetary", "net")):
        assert profiles[mine].round(4).tolist() == expected[theirs].round(4).tolist(), mine
    assert (profiles["mean_net_monetary"] <= profiles["mean_monetary"]).all()
    cells = rows(lake, """SELECT count(*) AS bad FROM gold.customer_segments AS s JOIN gold.customer_rfm AS r
                          USING (customer_id)
                          WHERE s.rfm_cell <> CAST(r.r_score AS VARCHAR) || CAST(r.f_score AS VARCHAR)
                                            || CAST(r.m_score AS VARCHAR)""")
    assert cells[0]["bad"] == 0


def test_each_k_silhouette_is_sklearn_silhouette_of_that_k_on_the_seeded_sample():
    """select_k computes the sample's distances once for every k: each silhouette must still be the one of
    that k's labels on the sampled rows (sklearn's own, from the points)."""
    import numpy as np
    from sklearn.metrics import silhouette_score

    from shoplake.ml.params import SegmentParams
    from shoplake.ml.segmentation import select_k, transform_pipeline

    rng = np.random.default_rng(7)
    centres = rng.uniform(0, 50, size=(4, 3))
    X = pd.DataFrame(np.abs(np.concatenate([c + rng.normal(0, 4, size=(150, 3)) for c in centres])),
                     columns=["a", "b", "c"])
    params = SegmentParams(k_min=2, k_max=5, silhouette_sample=240, n_init=2)
    selection, fitted, rows = select_k(X, params)
    assert len(rows) == 240 < len(X)
    Z = transform_pipeline().fit(X).transform(X)
    for k, silhouette in zip(selection.ks, selection.silhouettes, strict=True):
        labels = fitted[k].named_steps["kmeans"].labels_
        assert silhouette == pytest.approx(silhouette_score(Z[rows], labels[rows]), abs=1e-12)
