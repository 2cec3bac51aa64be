"""Next-best products: recommenders fitted on `silver.events` as of a cutoff, and their offline evaluation.

Implicit feedback: each (user, product) pair weighs its events (view 1, cart 3, purchase 5; a removal from
the cart adds nothing). Five methods are compared (`METHODS`):

- `popularity`: the products bought by most users, the same list for everyone;
- `category_popularity`: the most bought products of the user's main category (most weight), then the
  store's;
- `cooccurrence`: item-to-item, products carted or bought by the same users as the user's products
  (cosine of the co-occurrence counts), summed over the user's history weighted by log(1 + weight);
- `affinity`: the user's category and brand shares times the product's popularity within its category,
  plus the item-to-item score and a little global popularity;
- `als`: matrix factorisation (implicit ALS, `implicit` 0.7.3, CPU) on the log-weighted matrix.

Products the user bought before the cutoff are never recommended (purchases of new products are what is
measured). A model is its method and parameters: what it learns from the data (popularity, co-occurrence,
factors) is refitted on the events before each cutoff, so scoring uses the events up to the scoring cutoff.

Evaluation (`evaluate`), time-split like propensity: fit on the events before the validation cutoff, then,
for every user with history before it who bought in [cutoff, cutoff + horizon) a product not bought before,
compare the top k with those products: recall@k, precision@k, NDCG@k and MAP@k (averaged over users),
catalog coverage (share of the products known at the cutoff that appear in some top k) and popularity bias
(mean popularity percentile of the recommended products, 1 = the most bought). Every figure carries a
bootstrap 95 % interval over users, the same resamples for every method (paired differences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoplake.errors import InsufficientDataError
from shoplake.ml import features
from shoplake.ml.evaluation import Estimate, estimate_from
from shoplake.ml.params import RECOMMENDER_METHODS as METHODS
from shoplake.ml.params import RecommenderParams

# Event weights of a pair (a removal from the cart signals nothing to recommend from).
EVENT_WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 5.0}
# Users scored at once: a batch x candidates float32 block (9.4 MB at the demo's 9,163 candidates), passed
# over about ten times, so it should stay in the cache: all the demo's 62,500 users' top 10 took 8.6 / 8.6 s
# in batches of 256 against 9.8 / 9.3 s in batches of 512 (the same lists and scores).
_BATCH_USERS = 256

# The only reads of events: everything strictly before the cutoff ($1), one row per pair / per product.
_PAIRS_SQL = """
    SELECT user_id, product_id,
           sum(CASE event_type WHEN 'view' THEN 1.0 WHEN 'cart' THEN 3.0 WHEN 'purchase' THEN 5.0
               ELSE 0.0 END) AS weight,
           bool_or(event_type = 'purchase') AS bought,
           bool_or(event_type IN ('cart', 'purchase')) AS acted,
           max(event_at) AS last_at
    FROM silver.events
    WHERE event_at < $1 AND user_id IS NOT NULL AND product_id IS NOT NULL
    GROUP BY user_id, product_id
"""
_PRODUCTS_SQL = """
    SELECT product_id,
           arg_max(coalesce(CAST(category_id AS VARCHAR), ''), event_at) AS category_id,
           arg_max(coalesce(category_code, ''), event_at) AS category_code,
           arg_max(coalesce(brand, ''), event_at) AS brand
    FROM silver.events
    WHERE event_at < $1 AND product_id IS NOT NULL
    GROUP BY product_id
"""
_PURCHASES_SQL = """
    SELECT DISTINCT user_id, product_id FROM silver.events
    WHERE event_type = 'purchase' AND event_at >= $1 AND event_at < $2
      AND user_id IS NOT NULL AND product_id IS NOT NULL
"""


def top_per_row(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The column indices and values of the `n` largest values of each row of `scores` (n <= columns), best
    first, equal values by the lower column index, so lists are reproducible.

    Exact without partitioning every row: the columns are cut into at least `n` blocks, and the n-th largest
    of a row's block maxima is a lower bound of the row's n-th largest value (those n maxima are n of its
    values). Only the values at or above that bound are sorted; they are a few dozen of a row's thousands
    (scoring the demo's 62,500 users x 9,163 products: 6.3 s of partitioning, bench/RESULTS.md). A row
    where fewer than `n` values pass (NaN in it) is partitioned whole, as before.
    """
    rows, columns = scores.shape
    idx = np.empty((rows, n), dtype=np.int64)
    sel = np.empty((rows, n), dtype=scores.dtype)
    if rows == 0 or n == 0:
        return idx, sel
    width = columns // max(n, min(64, columns // n))  # at least n blocks of `width` columns (the last shorter)
    maxima = np.maximum.reduceat(scores, np.arange(0, columns, width), axis=1)
    bound = np.partition(maxima, maxima.shape[1] - n, axis=1)[:, maxima.shape[1] - n]
    row, col = np.nonzero(scores >= bound[:, None])
    value = scores[row, col]
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row, side="left")
    passed = np.bincount(row, minlength=rows) >= n
    listed = (rank < n) & passed[row]
    idx[row[listed], rank[listed]] = col[listed]
    sel[row[listed], rank[listed]] = value[listed]
    for r in np.flatnonzero(~passed):
        order = np.lexsort((np.arange(columns), -scores[r]))[:n]
        idx[r], sel[r] = order, scores[r, order]
    return idx, sel


def compiled(function):
    """`function` compiled by Numba (no GIL held), its machine code cached next to this file (or in the
    user's cache folder) so a new process loads it instead of compiling it again; compiled at each start
    where no folder can hold the cache (Numba refuses to cache then)."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@compiled
def _add_row_times(a_indptr, a_indices, a_data, r, b_indptr, b_indices, b_data, out):  # pragma: no cover
    """out += A[r] @ B for CSR matrices A and B, into a dense row (compiled by Numba).

    Each product is added in the order SciPy's sparse product adds it (A's entries of the row in stored
    order, then B's of each), so the float32 sums are the same; but nothing sparse is built: the product
    of the demo's 61,453 users' histories with the item similarities has 101M nonzeros (22 % of the block),
    which SciPy builds as a sparse matrix and then spreads into the block."""
    for p in range(a_indptr[r], a_indptr[r + 1]):
        i = a_indices[p]
        v = a_data[p]
        for q in range(b_indptr[i], b_indptr[i + 1]):
            out[b_indices[q]] += v * b_data[q]


@compiled
def _add_rows_times(a_indptr, a_indices, a_data, rows, b_indptr, b_indices, b_data, out):  # pragma: no cover
    """out[k] += A[rows[k]] @ B for every k (`_add_row_times` row by row)."""
    for k in range(rows.shape[0]):
        _add_row_times(a_indptr, a_indices, a_data, rows[k], b_indptr, b_indices, b_data, out[k])


@compiled
def _row_max(x):  # pragma: no cover
    """NumPy's max of a float32 row: NaN if any value is NaN."""
    top = x[0]
    for j in range(1, x.shape[0]):
        if x[j] != x[j]:
            return x[j]
        if x[j] > top:
            top = x[j]
    return top


@compiled
def _affinity_top(rows, n, cs, ci, bs, bi, brand_weight, popularity_term, hist, sim, co_weight, bought,
                  items, values):  # pragma: no cover
    """The affinity method's top `n` per user row, fused (compiled by Numba): `Recommender.scores` and
    `top_per_row` of one row at a time, without a users x candidates block. Each sparse matrix is a CSR
    tuple (indptr, indices, data); every operation is the float32 one of the NumPy path in its order (the
    weights are float32 scalars; a zero weight leaves its term out, as the NumPy path does), so the lists
    and scores are the same (tested against it)."""
    columns = popularity_term.shape[0]
    score = np.empty(columns, dtype=np.float32)
    part = np.empty(columns, dtype=np.float32)
    tiny = np.float32(1e-9)
    for k in range(rows.shape[0]):
        r = rows[k]
        score[:] = 0
        _add_row_times(cs[0], cs[1], cs[2], r, ci[0], ci[1], ci[2], score)
        if brand_weight != 0:
            part[:] = 0
            _add_row_times(bs[0], bs[1], bs[2], r, bi[0], bi[1], bi[2], part)
            for j in range(columns):
                score[j] += part[j] * brand_weight
        for j in range(columns):
            score[j] += popularity_term[j]
        if co_weight != 0:
            part[:] = 0
            _add_row_times(hist[0], hist[1], hist[2], r, sim[0], sim[1], sim[2], part)
            top_co, top_score = _row_max(part), _row_max(score)
            denominator = top_co if (top_co > tiny or top_co != top_co) else tiny  # np.maximum(max, 1e-9)
            for j in range(columns):
                score[j] += part[j] / denominator * co_weight * top_score
        for p in range(bought[0][r], bought[0][r + 1]):
            score[bought[1][p]] = -np.inf
        # The n best, best first: a value goes after every kept value it does not beat (ties: the lower
        # column first; NaN after every number, where a sort of the row puts it).
        count = 0
        for j in range(columns):
            v = score[j]
            at = count
            while at > 0 and v == v and (values[k, at - 1] != values[k, at - 1] or v > values[k, at - 1]):
                at -= 1
            if at >= n:
                continue
            for m in range(min(count, n - 1), at, -1):
                values[k, m] = values[k, m - 1]
                items[k, m] = items[k, m - 1]
            values[k, at] = v
            items[k, at] = j
            count = min(count + 1, n)


def rows_times(a: sp.csr_matrix, rows: np.ndarray, b: sp.csr_matrix) -> np.ndarray:
    """`(a[rows] @ b).toarray()` for float32 CSR matrices, without the sparse intermediate."""
    out = np.zeros((len(rows), b.shape[1]), dtype=np.float32)
    if len(rows):
        _add_rows_times(a.indptr, a.indices, a.data.astype(np.float32, copy=False), np.asarray(rows, dtype=np.int64),
                        b.indptr, b.indices, b.data.astype(np.float32, copy=False), out)
    return out


@dataclass
class Interactions:
    """Events before a cutoff as sparse users x products matrices, with product attributes by index."""

    user_ids: np.ndarray
    product_ids: np.ndarray
    weight: sp.csr_matrix  # summed event weights
    bought: sp.csr_matrix  # 1 where the user bought the product
    acted: sp.csr_matrix  # 1 where the user carted or bought it
    last_at: pd.Series  # per user id: the last event before the cutoff
    category: np.ndarray  # per product: index into category_names
    category_names: np.ndarray  # category code, or "category <id>" when the category has no code
    brand: np.ndarray  # per product: index into brand_names, -1 without brand
    brand_names: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.product_ids)

    def user_rows(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row index of each user id (-1 for users without events)."""
        ids = np.asarray(user_ids, dtype=np.int64)
        pos = np.searchsorted(self.user_ids, ids)
        pos = np.minimum(pos, max(self.n_users - 1, 0))
        found = (self.n_users > 0) & (self.user_ids[pos] == ids) if self.n_users else np.zeros(len(ids), bool)
        return np.where(found, pos, -1)


def interactions_from(pairs: pd.DataFrame, products: pd.DataFrame) -> Interactions:
    """Build the matrices from one row per (user_id, product_id) pair and one row per product."""
    if pairs.empty:
        raise InsufficientDataError("no events before the cutoff: a recommender needs clickstream history")
    user_ids = np.unique(pairs["user_id"].to_numpy(np.int64))
    products = products.sort_values("product_id", kind="stable").reset_index(drop=True)
    product_ids = products["product_id"].to_numpy(np.int64)
    rows = np.searchsorted(user_ids, pairs["user_id"].to_numpy(np.int64))
    cols = np.searchsorted(product_ids, pairs["product_id"].to_numpy(np.int64))
    shape = (len(user_ids), len(product_ids))

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
        m.eliminate_zeros()
        return m

    codes = products["category_code"].fillna("").astype(str)
    ids = products["category_id"].fillna("").astype(str)
    label = np.where(codes != "", codes, np.where(ids != "", "category " + ids, "unknown category"))
    category_names, category = np.unique(label, return_inverse=True)
    brands = products["brand"].fillna("").astype(str).to_numpy()
    brand_names, brand = np.unique(brands, return_inverse=True)
    brand = np.where(brands == "", -1, brand)
    last_at = pairs.groupby("user_id")["last_at"].max()
    return Interactions(user_ids, product_ids, matrix(pairs["weight"].to_numpy(np.float64)),
                        matrix(pairs["bought"].to_numpy(np.float64)), matrix(pairs["acted"].to_numpy(np.float64)),
                        last_at, category.astype(np.int64), category_names, brand.astype(np.int64), brand_names)


def read_interactions(engine, cutoff: datetime) -> Interactions:
    """The events strictly before `cutoff` of `silver.events` (bound in `engine`)."""
    pairs = engine.table(_PAIRS_SQL, [cutoff]).to_pandas()
    products = engine.table(_PRODUCTS_SQL, [cutoff]).to_pandas()
    return interactions_from(pairs, products)


def read_purchases(engine, start: datetime, end: datetime) -> pd.DataFrame:
    """Distinct (user_id, product_id) bought in [start, end)."""
    return engine.table(_PURCHASES_SQL, [start, end]).to_pandas()


INPUT = "silver.events"
KEY = "recall_at_10"
MODEL_CODE = Path(__file__).with_name("recommender_model.py")  # the MLflow "model from code"


def cutoffs(engine, params: RecommenderParams) -> tuple[datetime, datetime]:
    """(validation cutoff, scoring cutoff): the scoring cutoff is the midnight after the last event."""
    _, last = features.event_span(engine)
    scoring = features.scoring_cutoff(last)
    return scoring - timedelta(days=params.horizon_days), scoring


EVENT_COLUMNS = ("user_id", "product_id", "event_type", "event_at", "category_id", "category_code", "brand")


def interactions_from_events(events: pd.DataFrame) -> Interactions:
    """`Interactions` from raw events (`EVENT_COLUMNS`), as the SQL above computes them."""
    frame = events.assign(weight=events["event_type"].map(EVENT_WEIGHTS).fillna(0.0),
                          bought=events["event_type"] == "purchase",
                          acted=events["event_type"].isin(["cart", "purchase"]), last_at=events["event_at"])
    pairs = frame.groupby(["user_id", "product_id"], as_index=False).agg(
        weight=("weight", "sum"), bought=("bought", "max"), acted=("acted", "max"), last_at=("last_at", "max"))
    latest = frame.sort_values("event_at", kind="stable").groupby("product_id").tail(1)
    products = latest.loc[:, ["product_id", "category_id", "category_code", "brand"]].astype(
        {"category_id": "string"})
    return interactions_from(pairs, products)


def params_config(method: str, params: RecommenderParams) -> dict[str, Any]:
    """The registered model's configuration: its method and parameters (plain JSON)."""
    from dataclasses import asdict

    return {"method": method, "params": {k: list(v) if isinstance(v, tuple) else v
                                         for k, v in asdict(params).items()}}


def params_from_config(config: dict[str, Any]) -> tuple[str, RecommenderParams]:
    """Inverse of `params_config` (parameters unknown to this version are ignored)."""
    from dataclasses import fields

    known = {f.name for f in fields(RecommenderParams)}
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in config.get("params", {}).items() if k in known}
    return str(config["method"]), RecommenderParams(**values)


def recommend_events(events: pd.DataFrame, config: dict[str, Any]) -> pd.DataFrame:
    """Top N products (the config's `top_n`) of every user of `events` (the pyfunc model's predict)."""
    method, params = params_from_config(config)
    data = interactions_from_events(events)
    model = Recommender(method, params, data)
    rows = np.arange(data.n_users)
    return model.user_frame(rows, params.top_n)


# -- models -------------------------------------------------------------------------------------------

def _row_normalized(m: sp.csr_matrix) -> sp.csr_matrix:
    sums = np.asarray(m.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ m)


class Recommender:
    """One method fitted on `Interactions`: scores per user, top-N lists with reasons, similar products."""

    def __init__(self, method: str, params: RecommenderParams, data: Interactions):
        if method not in METHODS:
            raise ValueError(f"unknown recommender method {method!r}: expected one of {', '.join(METHODS)}")
        self.method, self.params, self.data = method, params, data
        n_items = data.n_items
        # Popularity: users who bought the product, ties broken by all interaction weight.
        buyers = np.asarray(data.bought.sum(axis=0)).ravel()
        weight = np.asarray(data.weight.sum(axis=0)).ravel()
        self.popularity = buyers + weight / (weight.max() + 1.0)
        self.pop_norm = (self.popularity / self.popularity.max()).astype(np.float32)
        top_in_category = np.zeros(int(data.category.max()) + 1)
        np.maximum.at(top_in_category, data.category, self.popularity)
        self.pop_in_category = (self.popularity / top_in_category[data.category]).astype(np.float32)
        category_total = np.bincount(data.category, weights=self.popularity, minlength=len(top_in_category))
        self.share_in_category = (self.popularity / category_total[data.category]).astype(np.float32)
        self.pop_share = (self.popularity / self.popularity.sum()).astype(np.float32)
        # Co-occurrence of carts and purchases (cosine), and co-purchase counts for "bought with X".
        acted = data.acted.astype(np.float32)
        co = sp.csr_matrix(acted.T @ acted)
        counts = np.sqrt(np.maximum(co.diagonal(), 1.0))
        co.setdiag(0.0)
        co.eliminate_zeros()
        inv = sp.diags((1.0 / counts).astype(np.float32))
        self.similarity = sp.csr_matrix(inv @ co @ inv)
        bought = data.bought.astype(np.float32)
        self.copurchase = sp.csr_matrix(bought.T @ bought)
        self.copurchase.setdiag(0.0)
        self.copurchase.eliminate_zeros()
        self.history = data.weight.copy()
        self.history.data = np.log1p(self.history.data)
        n_cats = len(data.category_names)
        cat_onehot = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), data.category)),
                                   shape=(n_items, n_cats))
        self.category_share = _row_normalized(sp.csr_matrix(data.weight @ cat_onehot))
        has_brand = data.brand >= 0
        brand_onehot = sp.csr_matrix((np.ones(int(has_brand.sum()), np.float32),
                                      (np.flatnonzero(has_brand), data.brand[has_brand])),
                                     shape=(n_items, max(len(data.brand_names), 1)))
        self.brand_share = _row_normalized(sp.csr_matrix(data.weight @ brand_onehot))
        # Candidates: products bought at least once before the cutoff (all products when none was).
        self.candidates = np.flatnonzero(buyers > 0) if buyers.any() else np.arange(n_items)
        self.similarity_candidates = sp.csr_matrix(self.similarity[:, self.candidates])
        self.bought_candidates = sp.csr_matrix(data.bought[:, self.candidates])
        # category -> candidate and brand -> candidate, valued by the candidate's share of its category
        share = self.share_in_category[self.candidates]
        positions = np.arange(len(self.candidates))
        self.category_items = sp.csr_matrix((share, (data.category[self.candidates], positions)),
                                            shape=(n_cats, len(self.candidates)))
        branded = data.brand[self.candidates] >= 0
        self.brand_items = sp.csr_matrix((share[branded], (data.brand[self.candidates][branded], positions[branded])),
                                         shape=(max(len(data.brand_names), 1), len(self.candidates)))
        self.item_factors: np.ndarray | None = None
        self.user_factors: np.ndarray | None = None
        if method == "als":
            self._fit_als()

    def _fit_als(self) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        p = self.params
        # implicit's own threads are the parallelism; it warns (when built) if BLAS would add more
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=p.als_factors, regularization=p.als_regularization,
                                            alpha=p.als_alpha, iterations=p.als_iterations,
                                            random_state=p.random_state, num_threads=p.threads)
            model.fit(sp.csr_matrix(self.history, dtype=np.float32), show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    # -- scores ---------------------------------------------------------------------------------------
    def _cooccurrence(self, rows: np.ndarray) -> np.ndarray:
        return rows_times(self.history, rows, self.similarity_candidates)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Scores of the candidate products (`self.candidates`) for the users at `rows` (higher first)."""
        n = len(rows)
        data, method, cols = self.data, self.method, self.candidates
        category = data.category[cols]
        if method == "popularity":
            return np.tile(self.pop_norm[cols], (n, 1))
        if method == "category_popularity":
            shares = self.category_share[rows]
            top = np.asarray(shares.argmax(axis=1)).ravel()
            has = np.asarray(shares.max(axis=1).todense()).ravel() > 0
            in_top = (category[None, :] == top[:, None]) & has[:, None]
            return in_top.astype(np.float32) + self.pop_norm[cols][None, :]
        if method == "cooccurrence":
            return self._cooccurrence(rows) + 1e-4 * self.pop_norm[cols][None, :]
        if method == "affinity":
            p = self.params
            # P(product | user) as a mixture: the user's category (and brand) shares times the product's
            # share of its category's popularity, and its share of the store's.
            # (a user's few categories and brands times their products' shares, added straight into dense
            # float32 blocks by `rows_times`; every operation below is in float32, in the formula's order)
            score = rows_times(self.category_share, rows, self.category_items)
            if p.affinity_brand_weight:
                brand = rows_times(self.brand_share, rows, self.brand_items)
                brand *= p.affinity_brand_weight
                score += brand
            score += p.affinity_popularity_weight * self.pop_share[cols][None, :]
            if p.affinity_cooccurrence_weight:
                co = self._cooccurrence(rows)
                co /= np.maximum(co.max(axis=1, keepdims=True), 1e-9)
                co *= p.affinity_cooccurrence_weight
                co *= score.max(axis=1, keepdims=True)
                score += co
            return score
        assert self.user_factors is not None and self.item_factors is not None
        return self.user_factors[rows] @ self.item_factors[cols].T

    def top(self, rows: np.ndarray, n: int, *, batch: int = _BATCH_USERS) -> tuple[np.ndarray, np.ndarray]:
        """Top `n` product indices and scores per user row, best first, the user's purchases excluded
        (fewer than `n` only when the candidates run out: the index is then -1, the score -inf).

        The affinity method runs fused (`_affinity_top`: no users x candidates block is written and read
        again); the others by blocks of `scores` (`top_by_blocks`)."""
        cols = self.candidates
        n = min(n, len(cols))
        if self.method != "affinity" or n == 0 or len(rows) == 0:
            return self.top_by_blocks(rows, n, batch=batch)
        p = self.params

        def csr(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            return m.indptr, m.indices, m.data.astype(np.float32, copy=False)

        idx = np.zeros((len(rows), n), dtype=np.int64)
        sel = np.zeros((len(rows), n), dtype=np.float32)
        popularity_term = (p.affinity_popularity_weight * self.pop_share[cols]).astype(np.float32, copy=False)
        _affinity_top(np.asarray(rows, dtype=np.int64), n, csr(self.category_share), csr(self.category_items),
                      csr(self.brand_share), csr(self.brand_items), np.float32(p.affinity_brand_weight),
                      popularity_term, csr(self.history), csr(self.similarity_candidates),
                      np.float32(p.affinity_cooccurrence_weight), csr(self.bought_candidates), idx, sel)
        return np.where(np.isfinite(sel), cols[idx], -1), sel.astype(np.float64)

    def top_by_blocks(self, rows: np.ndarray, n: int, *, batch: int = _BATCH_USERS) -> tuple[np.ndarray, np.ndarray]:
        """`top` from blocks of `scores` (any method)."""
        cols = self.candidates
        n = min(n, len(cols))
        items = np.full((len(rows), n), -1, dtype=np.int64)
        values = np.full((len(rows), n), -np.inf, dtype=np.float64)
        for start in range(0, len(rows), batch):
            part = rows[start:start + batch]
            s = self.scores(part).astype(np.float32, copy=False)
            bought = self.bought_candidates[part].tocoo()
            s[bought.row, bought.col] = -np.inf
            idx, sel = top_per_row(s, n)
            items[start:start + len(part)] = np.where(np.isfinite(sel), cols[idx], -1)
            values[start:start + len(part)] = sel
        return items, values

    def user_frame(self, rows: np.ndarray, n: int) -> pd.DataFrame:
        """user_id, rank, product_id, score, reason: the top `n` of the users at `rows`."""
        items, values = self.top(rows, n)
        return self._ranked(("user_id", self.data.user_ids[rows]), "product_id", items, values,
                            self.reasons(rows, items))

    def similar_frame(self, items: np.ndarray, n: int) -> pd.DataFrame:
        """product_id, rank, similar_product_id, score, reason for the products at `items`."""
        similar, values, reasons = self.similar(items, n)
        return self._ranked(("product_id", self.data.product_ids[items]), "similar_product_id", similar, values,
                            np.array(reasons, dtype=object).reshape(similar.shape))

    def _ranked(self, key: tuple[str, np.ndarray], listed: str, items: np.ndarray, values: np.ndarray,
                reasons: np.ndarray) -> pd.DataFrame:
        """One row per listed product (index >= 0) of each key's list, ranked 1..n in list order."""
        keep = items >= 0
        return pd.DataFrame({
            key[0]: np.repeat(key[1], keep.sum(axis=1)),
            "rank": np.cumsum(keep, axis=1)[keep].astype(np.int32),
            listed: self.data.product_ids[items[keep]],
            "score": values[keep],
            "reason": reasons[keep],
        })

    # -- reasons --------------------------------------------------------------------------------------
    @staticmethod
    def _row(m: sp.csr_matrix, r: int) -> tuple[np.ndarray, np.ndarray]:
        return m.indices[m.indptr[r]:m.indptr[r + 1]], m.data[m.indptr[r]:m.indptr[r + 1]]

    def reasons(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Why each recommended product (an array shaped like `items`, "" where no product): "bought with
        <product>" when other users bought it with one of the user's purchases (the most often; on a tie
        the first of the user's purchases in index order), else "popular in <category>" when the user
        browsed that category, else "popular overall" (the explanation, not the method: ALS scores have no
        reason of their own; popularity lists are always "popular overall")."""
        data = self.data
        out = np.full(items.shape, "", dtype=object)
        listed = items >= 0
        if self.method == "popularity":
            out[listed] = "popular overall"
            return out
        user, slot = np.nonzero(listed)
        item = items[user, slot]
        # (user, recommended item, the user's purchase x) triples: co-purchase count of x with the item
        own = data.bought[rows]
        own_count = np.diff(own.indptr)
        per_pair = own_count[user]
        pair = np.repeat(np.arange(len(user)), per_pair)
        first = np.repeat(own.indptr[user], per_pair)
        position = np.arange(len(pair)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        purchase = own.indices[first + position]
        counts = (np.asarray(self.copurchase[purchase, item[pair]]).ravel() if len(pair)
                  else np.zeros(0))
        hit = counts > 0
        pair, purchase, counts, position = pair[hit], purchase[hit], counts[hit], position[hit]
        # per pair: the highest count, then the earliest purchase (as a scan keeping the first maximum)
        order = np.lexsort((position, -counts, pair))
        pair, purchase = pair[order], purchase[order]
        best = np.ones(len(pair), dtype=bool)
        best[1:] = pair[1:] != pair[:-1]
        with_product = np.full(len(user), -1, dtype=np.int64)
        with_product[pair[best]] = purchase[best]
        # categories the user has events in
        shares = self.category_share[rows]
        n_cats = len(data.category_names)
        browsed = np.repeat(np.arange(len(rows)), np.diff(shares.indptr)) * n_cats + shares.indices
        in_browsed = np.isin(user * n_cats + data.category[item], browsed)
        popular_in = np.array([f"popular in {name}" for name in data.category_names], dtype=object)
        text = np.where(in_browsed, popular_in[data.category[item]], "popular overall").astype(object)
        bought = with_product >= 0
        text[bought] = [f"bought with {pid}" for pid in data.product_ids[with_product[bought]].tolist()]
        out[user, slot] = text
        return out

    # -- similar products -----------------------------------------------------------------------------
    def similar(self, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top `n` similar products per product index: carted or bought by the same users (cosine), then
        the most bought products of the same category; with the reason ("" where the list runs out).

        All products at once, as (product, candidate) pairs: the co-occurring ones first, then the fallback,
        a candidate listed twice kept with its first score, each product's best `n` by score (ties: the
        lower index)."""
        data = self.data
        n = min(n, data.n_items - 1)
        k = len(items)
        out_items = np.full((k, n), -1, dtype=np.int64)
        out_scores = np.full((k, n), -np.inf)
        reasons = np.full((k, n), "", dtype=object)
        if k == 0 or n <= 0:
            return out_items, out_scores, reasons
        # Per category, its most popular products: the fallback candidates (n + 1: the product itself).
        order = np.lexsort((np.arange(data.n_items), -self.popularity, data.category))
        starts = np.searchsorted(data.category[order], np.arange(len(data.category_names)))
        cat = data.category[items]
        at = starts[cat][:, None] + np.arange(n + 1)[None, :]
        fallback = order[np.minimum(at, data.n_items - 1)]
        owner, slot = np.nonzero((at < data.n_items) & (data.category[fallback] == cat[:, None]))
        rows = self.similarity[items]
        co_owner = np.repeat(np.arange(k), np.diff(rows.indptr))
        owner = np.concatenate([co_owner, owner])
        cand = np.concatenate([rows.indices.astype(np.int64), fallback[owner[len(co_owner):], slot]])
        cosine = np.concatenate([rows.data, np.zeros(len(cand) - len(co_owner), dtype=rows.data.dtype)])
        score = cosine.astype(np.float64)
        score += 1e-3 * self.pop_norm[cand]
        from_fallback = np.arange(len(cand)) >= len(co_owner)
        keep = cand != items[owner]
        owner, cand, cosine, score, from_fallback = (a[keep] for a in (owner, cand, cosine, score, from_fallback))
        # a candidate both co-occurring and in the fallback: its co-occurrence entry (listed first) stays
        by_pair = np.lexsort((from_fallback, cand, owner))
        first = np.r_[True, (np.diff(owner[by_pair]) != 0) | (np.diff(cand[by_pair]) != 0)]
        kept = by_pair[first]
        owner, cand, cosine, score = owner[kept], cand[kept], cosine[kept], score[kept]
        ranked = np.lexsort((cand, -score, owner))
        owner, cand, cosine, score = owner[ranked], cand[ranked], cosine[ranked], score[ranked]
        rank = np.arange(len(owner)) - np.searchsorted(owner, owner, side="left")
        top = rank < n
        owner, rank, cand, cosine, score = owner[top], rank[top], cand[top], cosine[top], score[top]
        out_items[owner, rank], out_scores[owner, rank] = cand, score
        together = np.asarray(self.copurchase[items[owner], cand]).ravel() if len(owner) else np.zeros(0)
        popular_in = np.array([f"popular in {name}" for name in data.category_names], dtype=object)
        text = np.where(cosine > 0, "carted or bought by the same users", popular_in[cat[owner]]).astype(object)
        bought = together > 0
        users = together[bought].astype(np.int64)
        text[bought] = [f"bought together by {u} user{'' if u == 1 else 's'}" for u in users.tolist()]
        reasons[owner, rank] = text
        return out_items, out_scores, reasons


# -- evaluation ---------------------------------------------------------------------------------------

@dataclass
class MethodResult:
    """One method on the validation users: per-user metrics, their means with intervals, the lists."""

    method: str
    per_user: dict[str, np.ndarray]
    estimates: dict[str, Estimate]
    top: np.ndarray  # users x max k product ids (-1 padding)
    seconds: float = 0.0


@dataclass
class Evaluation:
    """Every method on the same validation users and the same bootstrap resamples."""

    cutoff: datetime
    horizon_end: datetime
    user_ids: np.ndarray
    relevant: list[set[int]]
    ks: tuple[int, ...]
    results: dict[str, MethodResult] = field(default_factory=dict)
    resamples: np.ndarray | None = None  # resamples x users: indices of the users drawn
    catalog_size: int = 0
    history_users: int = 0
    buyers: int = 0

    def difference(self, a: str, b: str, metric: str) -> Estimate:
        """Mean per-user `metric` of `a` minus `b`, with the paired bootstrap interval over users."""
        assert self.resamples is not None
        diff = self.results[a].per_user[metric] - self.results[b].per_user[metric]
        return estimate_from(float(diff.mean()), diff[self.resamples].mean(axis=1))

    def as_dict(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff.isoformat(), "horizon_end": self.horizon_end.isoformat(),
                "users": len(self.user_ids), "history_users": self.history_users, "buyers": self.buyers,
                "catalog_size": self.catalog_size, "ks": list(self.ks),
                "methods": {name: {m: {"value": e.value, "low": e.low, "high": e.high}
                                   for m, e in r.estimates.items()} | {"seconds": r.seconds}
                            for name, r in self.results.items()}}


def _user_metrics(top: np.ndarray, relevant: list[set[int]], ks: Sequence[int]) -> dict[str, np.ndarray]:
    hits = np.array([[int(p) in rel for p in row] for row, rel in zip(top.tolist(), relevant, strict=True)],
                    dtype=np.float64).reshape(top.shape)
    n_rel = np.array([len(r) for r in relevant], dtype=np.float64)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    out: dict[str, np.ndarray] = {}
    for k in ks:
        h = hits[:, :k]
        found = h.sum(axis=1)
        out[f"recall_at_{k}"] = found / n_rel
        out[f"precision_at_{k}"] = found / k
        ideal = np.array([discount[:int(min(r, k))].sum() for r in n_rel])
        out[f"ndcg_at_{k}"] = (h * discount[:k]).sum(axis=1) / ideal
        precision_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        out[f"map_at_{k}"] = (precision_at * h).sum(axis=1) / np.minimum(n_rel, k)
    return out


def evaluate(train: Interactions, purchases: pd.DataFrame, params: RecommenderParams, *, cutoff: datetime,
             horizon_end: datetime, methods: Sequence[tuple[str, str, Any]] | None = None) -> Evaluation:
    """Fit each method on `train` (events before `cutoff`) and measure it on `purchases` (bought in
    [cutoff, horizon_end)). `methods` is (name, method, its params) triples (default: every method of
    `params.methods` with `params`); the users, ks and resamples come from `params`.

    Raises `InsufficientDataError` when no user with history bought a product new to them in the window.
    """
    import time

    known = train.user_rows(purchases["user_id"].to_numpy(np.int64)) >= 0
    bought_before = set()
    if known.any():
        coo = train.bought.tocoo()
        bought_before = set(zip(train.user_ids[coo.row].tolist(), train.product_ids[coo.col].tolist(), strict=True))
    relevant_by_user: dict[int, set[int]] = {}
    for user, product in zip(purchases["user_id"][known].tolist(), purchases["product_id"][known].tolist(),
                             strict=True):
        if (user, product) not in bought_before:
            relevant_by_user.setdefault(int(user), set()).add(int(product))
    if not relevant_by_user:
        raise InsufficientDataError(
            f"no user with events before {cutoff.isoformat()} bought a product new to them in "
            f"[{cutoff.isoformat()}, {horizon_end.isoformat()}) ({purchases['user_id'].nunique()} buyer(s) in "
            f"the window, none with history): a recommender cannot be evaluated on these events")
    user_ids = np.array(sorted(relevant_by_user), dtype=np.int64)
    relevant = [relevant_by_user[int(u)] for u in user_ids]
    rows = train.user_rows(user_ids)
    ks = tuple(sorted(params.eval_ks))
    rng = np.random.default_rng(params.random_state)
    resamples = rng.integers(0, len(user_ids), size=(params.bootstrap_resamples, len(user_ids)))
    result = Evaluation(cutoff, horizon_end, user_ids, relevant, ks, resamples=resamples,
                        catalog_size=train.n_items, history_users=train.n_users,
                        buyers=int(purchases["user_id"].nunique()))
    # popularity percentile of each product (1 = the most bought), for the popularity bias
    fitted_pop = None
    percentile = None
    for name, method, own_params in (methods or [(m, m, params) for m in params.methods]):
        started = time.perf_counter()
        model = Recommender(method, own_params, train)
        if fitted_pop is None:
            fitted_pop = model.popularity
            percentile = (np.argsort(np.argsort(fitted_pop, kind="stable"), kind="stable") + 1) / len(fitted_pop)
        items, _ = model.top(rows, max(ks))
        # fewer candidates than k: the missing places are misses
        items = np.pad(items, ((0, 0), (0, max(ks) - items.shape[1])), constant_values=-1)
        top = np.where(items >= 0, train.product_ids[np.maximum(items, 0)], -1)
        per_user = _user_metrics(top, relevant, ks)
        assert percentile is not None
        per_user["popularity_bias"] = np.array([percentile[row[row >= 0][:10]].mean() if (row >= 0).any()
                                                else np.nan for row in items])
        estimates = {m: estimate_from(float(np.nanmean(v)), np.nanmean(v[resamples], axis=1))
                     for m, v in per_user.items()}
        k_cov = 10 if 10 in ks else max(ks)
        listed = items[:, :k_cov]

        def coverage(index: np.ndarray, listed: np.ndarray = listed) -> float:
            chosen = listed[index]
            return len(np.unique(chosen[chosen >= 0])) / train.n_items

        # A count of distinct products: a resample repeats users, so its coverage is biased low and gives
        # no honest interval; the value alone is reported.
        estimates[f"coverage_at_{k_cov}"] = Estimate(coverage(np.arange(len(user_ids))), float("nan"),
                                                     float("nan"))
        result.results[name] = MethodResult(name, per_user, estimates, top, time.perf_counter() - started)
    return result
