"""gold.user_recommendations and gold.similar_products on a handful of hand-made clickstream rows.

Products 1, 2, 3 are in category a.b, 4 and 5 in c.d. Before the validation week (cutoff 2019-10-06):
user 1 buys 1, user 2 buys 1 and 4 together, user 3 buys 1 and 2, user 4 views 4 and 5. In the validation
week user 1 buys 2 and user 4 buys 3. The last event is on 2019-10-12, so the scoring cutoff is
2019-10-13 and every user and product is active. Only the affinity method is compared (the lists below
are worked out for it); the recommender may list products bought at least once (1, 2, 3, 4).
"""

from __future__ import annotations

import pytest

from shoplake.build import check_table
from shoplake.engines.base import Capability
from shoplake.errors import QualityCheckError
from shoplake.layers.ml import SIMILAR_PRODUCTS, USER_RECOMMENDATIONS
from shoplake.ml import score_models, train_model
from shoplake.ml.params import RecommenderParams

from .shop import CLICKSTREAM_HEADER, Shop

CLICKS = (
    "2019-10-01 08:00:00 UTC,view,1,10,a.b,x,10.0,1,s1",
    "2019-10-01 08:01:00 UTC,purchase,1,10,a.b,x,10.0,1,s1",
    "2019-10-02 08:00:00 UTC,view,2,10,a.b,x,20.0,1,s2",
    "2019-10-02 09:00:00 UTC,view,1,10,a.b,x,10.0,2,s3",
    "2019-10-02 09:01:00 UTC,purchase,1,10,a.b,x,10.0,2,s3",
    "2019-10-02 09:02:00 UTC,view,4,20,c.d,y,40.0,2,s3",
    "2019-10-02 09:03:00 UTC,purchase,4,20,c.d,y,40.0,2,s3",
    "2019-10-03 10:00:00 UTC,view,1,10,a.b,x,10.0,3,s4",
    "2019-10-03 10:01:00 UTC,purchase,1,10,a.b,x,10.0,3,s4",
    "2019-10-03 10:02:00 UTC,view,2,10,a.b,x,20.0,3,s4",
    "2019-10-03 10:03:00 UTC,purchase,2,10,a.b,x,20.0,3,s4",
    "2019-10-04 11:00:00 UTC,view,4,20,c.d,y,40.0,4,s5",
    "2019-10-04 11:01:00 UTC,view,5,20,c.d,y,50.0,4,s5",
    "2019-10-04 11:02:00 UTC,view,3,10,a.b,x,30.0,4,s5",
    "2019-10-09 12:00:00 UTC,view,2,10,a.b,x,20.0,1,s6",
    "2019-10-09 12:01:00 UTC,purchase,2,10,a.b,x,20.0,1,s6",
    "2019-10-10 13:00:00 UTC,view,3,10,a.b,x,30.0,4,s7",
    "2019-10-10 13:01:00 UTC,purchase,3,10,a.b,x,30.0,4,s7",
    "2019-10-12 14:00:00 UTC,view,5,20,c.d,y,50.0,3,s8",
)
BOUGHT = {1: {1, 2}, 2: {1, 4}, 3: {1, 2}, 4: {3}}  # before the scoring cutoff


@pytest.fixture(scope="module")
def scored(module_shop) -> Shop:
    shop = module_shop("recommendations")
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *CLICKS)
    assert all(r.status != "failed" for r in shop.build("silver.events").values())
    params = RecommenderParams(methods=("affinity",), bootstrap_resamples=20)
    result = train_model(shop.lake, "recommender", run_id="train", params=params)
    assert result.is_champion and result.details["chosen"] == "affinity"
    score_models(shop.lake, run_id="score", kinds=["recommender"])
    return shop


def _lists(shop: Shop, table: str, key: str, other: str) -> dict[int, list[tuple[int, int, float, str]]]:
    out: dict[int, list[tuple[int, int, float, str]]] = {}
    for row in shop.query(f"SELECT * FROM {table} ORDER BY {key}, rank"):
        out.setdefault(row[key], []).append((row["rank"], row[other], row["score"], row["reason"]))
    return out


def test_user_recommendations_exclude_purchases_and_give_reasons(scored):
    lists = _lists(scored, "gold.user_recommendations", "user_id", "product_id")
    assert set(lists) == {1, 2, 3, 4}  # every active user
    for user, rows in lists.items():
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # ranks 1..N without gaps
        assert not {r[1] for r in rows} & BOUGHT[user]  # never a product the user bought
        assert {r[1] for r in rows} == {1, 2, 3, 4} - BOUGHT[user]  # every other bought-once product
        scores = [r[2] for r in rows]
        assert scores == sorted(scores, reverse=True)
    reasons = {user: {r[1]: r[3] for r in rows} for user, rows in lists.items()}
    # user 1 bought 1, which user 2 bought with 4; 3 is in user 1's category a.b
    assert reasons[1] == {4: "bought with 1", 3: "popular in a.b"}
    # user 2 bought 1: user 3 bought 1 with 2 (user 1 too, in different sessions: per user, not per basket)
    assert reasons[2] == {2: "bought with 1", 3: "popular in a.b"}
    # user 4 bought 3, bought by no one else; it browsed a.b and c.d
    assert reasons[4] == {1: "popular in a.b", 2: "popular in a.b", 4: "popular in c.d"}
    cutoffs = scored.query("SELECT DISTINCT cutoff_at, model_name, model_version FROM gold.user_recommendations")
    assert [(str(r["cutoff_at"])[:10], r["model_name"], r["model_version"]) for r in cutoffs] == [
        ("2019-10-13", "shoplake-recommender", 1)]


def test_similar_products_rank_cooccurrence_then_category(scored):
    lists = _lists(scored, "gold.similar_products", "product_id", "similar_product_id")
    assert set(lists) == {1, 2, 3, 4, 5}  # every product with an event in the active window
    for product, rows in lists.items():
        assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
        assert product not in {r[1] for r in rows}
        scores = [r[2] for r in rows]
        assert scores == sorted(scores, reverse=True)
    # 1 and 2 were bought by users 1 and 3; 1 and 4 by user 2; 3 is the rest of category a.b
    assert [(r[1], r[3]) for r in lists[1]] == [(2, "bought together by 2 users"),
                                                 (4, "bought together by 1 user"), (3, "popular in a.b")]
    # 5 was only viewed: its category's other product
    assert [(r[1], r[3]) for r in lists[5]] == [(4, "popular in c.d")]


@pytest.mark.parametrize(("spec", "bad"), [
    (USER_RECOMMENDATIONS, "SELECT * REPLACE (CASE WHEN rank = 2 THEN 3 ELSE rank END AS rank) FROM t"),
    (USER_RECOMMENDATIONS, "SELECT * REPLACE (CASE WHEN rank = 1 THEN -1.0 ELSE score END AS score) FROM t"),
    (SIMILAR_PRODUCTS, "SELECT * REPLACE (product_id AS similar_product_id) FROM t"),
])
def test_declared_checks_refuse_gaps_rising_scores_and_self_similarity(scored, spec, bad):
    with scored.lake.engine(Capability.EMBEDDED_SQL) as engine:
        engine.bind(scored.lake.catalog.get(spec.name))
        # the checks read the relation `candidate`, as when scoring writes the table
        engine.bind_arrow("t", engine.table(f"SELECT * FROM {spec.name}"))
        engine.bind_arrow("candidate", engine.table("SELECT * FROM t"))
        check_table(scored.lake, engine, spec, "candidate", "ok")  # the written table passes
        engine.bind_arrow("candidate", engine.table(bad))
        with pytest.raises(QualityCheckError):
            check_table(scored.lake, engine, spec, "candidate", "bad")
