"""The recommender on the shared generated lake (`trained`: 1M events over 30 days, seed 7, planted category
affinities and companion products): the champion beats popularity on recall@10 with the paired interval
of the difference above 0, and its top 10 hit the users' planted categories far more often than a list
that ignores the user."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from shoplake.ml import recommender
from shoplake.ml.params import RECOMMENDER_METHODS

from .lakes import rows

# The champion's top 10 must hit a user's planted category at least this much more often than the
# popularity list does (measured at 1M events: 0.88 vs 0.31).
PLANTED_MARGIN = 0.30


@pytest.fixture(scope="module")
def result(trained):
    return trained.train["recommender"]


def test_champion_beats_popularity_on_recall_at_10(result):
    evaluation = result.details["evaluation"]
    assert set(evaluation.results) == set(RECOMMENDER_METHODS)  # every baseline measured
    chosen = result.details["chosen"]
    assert chosen != "popularity" and result.is_champion
    gain = evaluation.difference(chosen, "popularity", "recall_at_10")
    assert gain.low > 0, f"{chosen} - popularity recall@10 = {gain.as_text(4)}"
    assert result.metrics["gain_over_popularity_low"] == pytest.approx(gain.low)
    for method in evaluation.results.values():
        for name, estimate in method.estimates.items():
            if not name.startswith("coverage"):
                assert estimate.low <= estimate.value <= estimate.high, (method.method, name)


def test_top_10_recovers_planted_categories(trained, result):
    evaluation = result.details["evaluation"]
    with open(trained.data / "_truth" / "clickstream_truth_affinities.csv", newline="") as handle:
        planted = {int(r["user_id"]): r["category_id"] for r in csv.DictReader(handle)}
    category = {r["product_id"]: str(r["category_id"]) for r in rows(
        trained.lake, "SELECT product_id, any_value(category_id) AS category_id FROM silver.events GROUP BY 1")}

    def hit_rate(method: str) -> float:
        top = evaluation.results[method].top[:, :10]
        return float(np.mean([any(category.get(int(p)) == planted[int(u)] for p in row if p >= 0)
                              for u, row in zip(evaluation.user_ids, top, strict=True)]))

    champion, chance = hit_rate(result.details["chosen"]), hit_rate("popularity")
    assert champion >= chance + PLANTED_MARGIN, (champion, chance)


def test_scored_lists_never_repeat_a_purchase(trained):
    found = rows(trained.lake, """
        SELECT r.user_id, r.product_id FROM gold.user_recommendations AS r
        JOIN silver.events AS e ON e.user_id = r.user_id AND e.product_id = r.product_id
             AND e.event_type = 'purchase' AND e.event_at < r.cutoff_at
        LIMIT 5""")
    assert found == []
    summary = rows(trained.lake, """SELECT count(DISTINCT user_id) AS users, max(rank) AS n, min(rank) AS first
                                    FROM gold.user_recommendations""")[0]
    assert summary["users"] > 1000 and (summary["first"], summary["n"]) == (1, 10)


def test_ranking_metrics_by_hand():
    # user 1 wants {2, 5}: hit at place 2 only; user 2 wants {7}: hit at place 1
    top = np.array([[1, 2, 3], [7, 8, -1]])
    out = recommender._user_metrics(top, [{2, 5}, {7}], (1, 3))
    assert out["recall_at_3"].tolist() == [0.5, 1.0]
    assert out["precision_at_3"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert out["precision_at_1"].tolist() == [0.0, 1.0]
    # DCG 1/log2(3); ideal for two relevant in 3 places: 1 + 1/log2(3)
    assert out["ndcg_at_3"][0] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    assert out["map_at_3"].tolist() == pytest.approx([(1 / 2) / 2, 1.0])


def _reasons_by_loop(model: recommender.Recommender, rows_at: np.ndarray, items: np.ndarray) -> list[list[str]]:
    """The reasons as contract §9.3 states them, one user and one product at a time (the oracle)."""
    data, out = model.data, []
    for r, row_items in zip(rows_at.tolist(), items.tolist(), strict=True):
        own = data.bought.indices[data.bought.indptr[r]:data.bought.indptr[r + 1]].tolist()
        shares = model.category_share
        cats = set(shares.indices[shares.indptr[r]:shares.indptr[r + 1]].tolist())
        texts = []
        for item in row_items:
            counts = [(model.copurchase[x, item], -k, x) for k, x in enumerate(own)]
            best = max(counts, default=(0, 0, -1))
            if item < 0:
                texts.append("")
            elif model.method == "popularity":
                texts.append("popular overall")
            elif best[0] > 0:
                texts.append(f"bought with {data.product_ids[best[2]]}")
            elif data.category[item] in cats:
                texts.append(f"popular in {data.category_names[data.category[item]]}")
            else:
                texts.append("popular overall")
        out.append(texts)
    return out


@pytest.mark.parametrize("method", ["cooccurrence", "affinity"])
def test_reasons_follow_the_contract_for_every_listed_product(trained, method):
    from datetime import timedelta

    from shoplake.engines.base import Capability
    from shoplake.ml import features
    from shoplake.ml.params import RecommenderParams

    params = RecommenderParams()
    with trained.lake.engine(Capability.EMBEDDED_SQL) as engine:
        features.bind(trained.lake, engine, recommender.INPUT)
        _, cutoff = recommender.cutoffs(engine, params)
        data = recommender.read_interactions(engine, cutoff)
    model = recommender.Recommender(method, params, data)
    active = np.flatnonzero((data.last_at.reindex(data.user_ids) >= cutoff - timedelta(days=7)).to_numpy())[:3000]
    items, _ = model.top(active, params.top_n)
    got = model.reasons(active, items)
    assert got.tolist() == _reasons_by_loop(model, active, items)
    kinds = {text.split(" ")[0] for text in got.ravel()}
    assert {"bought", "popular"} <= kinds  # both kinds of reason occur, so both paths are compared


def _synthetic_week(seed: int = 3, products: int = 60):
    """Events of 300 users over `products` products in 6 categories before a cutoff, and the purchases after it."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = 6_000
    product = rng.integers(1, products + 1, n)
    events = pd.DataFrame({
        "user_id": rng.integers(1, 301, n), "product_id": product,
        "event_type": rng.choice(["view", "cart", "purchase"], n, p=[0.7, 0.2, 0.1]),
        "event_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 20 * 86400, n), unit="s"),
        "category_id": product % 6, "category_code": [f"cat.{p % 6}" for p in product], "brand": product % 4})
    purchases = pd.DataFrame({"user_id": rng.integers(1, 301, 400), "product_id": rng.integers(1, 61, 400)})
    return recommender.interactions_from_events(events), purchases.drop_duplicates()



def _similar_by_loop(model: recommender.Recommender, items: np.ndarray, n: int):
    """Similar products as contract §9.3 states them, one product at a time (the oracle)."""
    data = model.data
    n = min(n, data.n_items - 1)
    out_items, out_scores = np.full((len(items), n), -1), np.full((len(items), n), -np.inf)
    reasons = []
    by_popularity = sorted(range(data.n_items), key=lambda i: (data.category[i], -model.popularity[i], i))
    for k, item in enumerate(items.tolist()):
        row = model.similarity[item]
        cosine = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
        cat = data.category[item]
        fallback = [i for i in by_popularity if data.category[i] == cat][:n + 1]
        scores: dict[int, float] = {}
        for other, base in [*cosine.items(), *((i, 0.0) for i in fallback)]:
            if other != item and other not in scores:  # listed twice: the first (co-occurrence) score
                scores[other] = np.float64(base) + 1e-3 * model.pop_norm[other]
        best = sorted(scores, key=lambda other: (-scores[other], other))[:n]
        out_items[k, :len(best)] = best
        out_scores[k, :len(best)] = [scores[other] for other in best]
        texts = []
        for other in best:
            users = int(model.copurchase[item, other])
            if users > 0:
                texts.append(f"bought together by {users} user{'' if users == 1 else 's'}")
            elif cosine.get(other, 0) > 0:
                texts.append("carted or bought by the same users")
            else:
                texts.append(f"popular in {data.category_names[cat]}")
        reasons.append(texts + [""] * (n - len(texts)))
    return out_items, out_scores, reasons


def _compare_similar(seed: int, products: int, n: int) -> set[str]:
    """`Recommender.similar` against the oracle on every product of a synthetic week; the kinds of reason seen."""
    from shoplake.ml.params import RecommenderParams

    data, _ = _synthetic_week(seed, products)
    model = recommender.Recommender("affinity", RecommenderParams(), data)
    items = np.arange(data.n_items)
    got_items, got_scores, got_reasons = model.similar(items, n)
    want_items, want_scores, want_reasons = _similar_by_loop(model, items, n)
    np.testing.assert_array_equal(got_items, want_items)
    np.testing.assert_array_equal(got_scores, want_scores)
    assert got_reasons.tolist() == want_reasons
    return {text.split(" ")[0] for text in got_reasons.ravel()}


@pytest.mark.parametrize(("seed", "products", "n"), [(3, 60, 10), (4, 60, 20), (5, 3000, 10), (6, 3000, 3)])
def test_similar_products_equal_a_product_by_product_computation(seed, products, n):
    # 60 products in 6 categories: every product co-occurs with many, and n = 10 or 20 runs past a category's
    # products; 3,000 products: few co-occur, most lists end in the category's most popular products (with
    # popularity ties among products nobody touched); n = 3 cuts the co-occurring ones
    _compare_similar(seed, products, n)


def test_similar_products_compare_every_kind_of_reason():
    assert {"bought", "carted", "popular"} <= _compare_similar(7, 600, 10)

def test_the_champion_refit_is_reused_when_it_is_a_method_this_run_evaluated(monkeypatch):
    # The champion rule compares the new version with the champion refitted on the same events. When the
    # champion is one of this run's methods with the same parameters, the refit is that result: no second fit.
    from datetime import datetime

    from shoplake.ml.params import RecommenderParams
    from shoplake.ml.training import champion_refitted

    data, purchases = _synthetic_week()
    params = RecommenderParams(methods=("popularity", "cooccurrence", "affinity"), bootstrap_resamples=50)
    window = {"cutoff": datetime(2026, 1, 21), "horizon_end": datetime(2026, 1, 28)}
    evaluation = recommender.evaluate(data, purchases, params, **window)
    refit = champion_refitted(evaluation, recommender.params_config("affinity", params), data, purchases, params,
                              **window)
    fitted = recommender.evaluate(data, purchases, params, methods=[("champion", "affinity", params)], **window)
    assert refit is evaluation.results["affinity"]
    for metric, values in fitted.results["champion"].per_user.items():  # what a refit gives
        np.testing.assert_array_equal(refit.per_user[metric], values, err_msg=metric)
    np.testing.assert_array_equal(fitted.resamples, evaluation.resamples)
    # other parameters, or a method this run did not evaluate: fitted
    calls = []
    real = recommender.evaluate

    def counting(*args, **kwargs):
        calls.append(kwargs.get("methods"))
        return real(*args, **kwargs)

    monkeypatch.setattr(recommender, "evaluate", counting)
    other = RecommenderParams(methods=params.methods, bootstrap_resamples=50, affinity_brand_weight=0.9)
    champion_refitted(evaluation, recommender.params_config("affinity", other), data, purchases, params, **window)
    champion_refitted(evaluation, recommender.params_config("category_popularity", params), data, purchases, params,
                      **window)
    assert [m[0][1] for m in calls] == ["affinity", "category_popularity"]
    assert champion_refitted(evaluation, None, data, purchases, params, **window) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_per_row_equals_a_full_sort_of_every_row(seed):
    # Few distinct values, so equal scores straddle the n-th place in most rows (the lower column index must
    # win there too); -inf (bought products) in every row, whole rows of -inf, a NaN in some rows, and n
    # from 1 to every column.
    rng = np.random.default_rng(seed)
    for trial in range(200):
        rows, columns = int(rng.integers(0, 40)), int(rng.integers(1, 300))
        n = int(rng.integers(1, columns + 1)) if trial % 3 else min(10, columns)
        scores = rng.integers(0, int(rng.integers(1, 6)), size=(rows, columns)).astype(np.float32)
        scores[rng.random((rows, columns)) < 0.3] = -np.inf
        if rows and trial % 5 == 0:
            scores[0] = -np.inf
        if rows and trial % 7 == 0:
            scores[-1, int(rng.integers(0, columns))] = np.nan
        want = np.array([np.lexsort((np.arange(columns), -row))[:n] for row in scores], dtype=np.int64)
        want = want.reshape(rows, n)
        got_items, got_scores = recommender.top_per_row(scores, n)
        np.testing.assert_array_equal(got_items, want, err_msg=f"trial {trial}: {rows} x {columns}, n = {n}")
        np.testing.assert_array_equal(got_scores, np.take_along_axis(scores, want, axis=1))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_times_equals_scipys_sparse_product_exactly(seed):
    # The compiled kernel adds each product in the order SciPy's sparse product does, so the float32 sums are
    # equal to the bit (many terms per cell, values of mixed magnitude, where another order rounds
    # differently); rows repeated, out of order, empty, and no row at all.
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    for trial in range(30):
        users, items, columns = int(rng.integers(1, 60)), int(rng.integers(1, 200)), int(rng.integers(1, 150))
        a = sp.random(users, items, density=float(rng.uniform(0.0, 0.3)), format="csr", dtype=np.float32,
                      random_state=rng)
        b = sp.random(items, columns, density=float(rng.uniform(0.0, 0.5)), format="csr", dtype=np.float32,
                      random_state=rng)
        a.data *= np.float32(10.0) ** rng.integers(-3, 4, a.nnz).astype(np.float32)
        rows = rng.integers(0, users, int(rng.integers(0, 2 * users)))
        want = np.asarray((a[rows] @ b).todense(), dtype=np.float32).reshape(len(rows), columns)
        got = recommender.rows_times(a, rows, b)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


@pytest.mark.parametrize(("seed", "products"), [(3, 60), (4, 3000)])
def test_the_fused_affinity_top_equals_the_top_by_blocks_of_scores(seed, products):
    # 60 products: many equal popularity shares, so equal scores straddle the n-th place; 3,000: most users
    # touched few products (rows of zero co-occurrence, whose maximum is the 1e-9 floor). Default weights,
    # and each optional term left out (a zero weight); n from 1 to every candidate.
    from dataclasses import replace

    from shoplake.ml.params import RecommenderParams

    data, _ = _synthetic_week(seed, products)
    rows = np.arange(data.n_users)
    for params in (RecommenderParams(), replace(RecommenderParams(), affinity_brand_weight=0.0),
                   replace(RecommenderParams(), affinity_cooccurrence_weight=0.0)):
        model = recommender.Recommender("affinity", params, data)
        for n in (1, 10, len(model.candidates)):
            got_items, got_scores = model.top(rows, n)
            want_items, want_scores = model.top_by_blocks(rows, n, batch=64)
            np.testing.assert_array_equal(got_items, want_items, err_msg=f"n = {n}, {params}")
            np.testing.assert_array_equal(got_scores, want_scores, err_msg=f"n = {n}, {params}")


def test_a_kernel_is_compiled_also_where_numba_cannot_cache_it():
    # A function without a source file (made by exec) has no cache location: Numba refuses cache=True for
    # it, as it does where no folder is writable; it is compiled without the cache and still runs.
    namespace: dict = {}
    exec("def add(a, b):\n    return a + b\n", namespace)
    kernel = recommender.compiled(namespace["add"])
    assert kernel(2, 3) == 5 and len(kernel.signatures) == 1
