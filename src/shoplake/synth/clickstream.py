"""Synthetic REES46-style clickstream with planted user types.

The generator first plans every session (user, start, how many views, carts, removals and
purchases), fits the plan to exactly ``rows`` events, then expands sessions into events chunk by
chunk in start-time order. Events of a session can end after the next chunk's first session
starts, so each chunk writes only the events earlier than that start and carries the rest, which
keeps the file globally sorted by ``event_time`` with bounded memory.

Users are planted as ``browser`` (70%: many sessions and views, almost never a cart or purchase),
``engaged`` (22%: fewer views, carts in at least two sessions, rarely buys) and ``high_value`` (8%:
buys in at least two sessions, prefers expensive products), each with a per-session purchase
propensity; ``clickstream_truth_users.csv`` records both. K-means on log-scaled per-user views,
carts, purchases and revenue recovers the types (adjusted Rand index about 0.98 at 200k to 2M
events), while the funnel stays REES46-like: about 95.8% views, 2.2% carts, 1.8% purchases and
0.1% removals.

Recommendations have planted structure too, drawn from their own random stream (the counts above do not
move): every user has an affine category, where the first view of 80 % of the user's sessions falls
(the session's later views mostly stay there, so carts and purchases follow), and every product has a
companion in another category, bought second in a session whose first purchase is the product.
``clickstream_truth_affinities.csv`` (user_id, category_id) and ``clickstream_truth_companions.csv``
(product_id, companion_product_id) record both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoplake.synth._common import (
    STREAM_CLICKSTREAM,
    STREAM_CLICKSTREAM_AFFINITY,
    STREAM_CLICKSTREAM_EVENTS,
    DirtyInjector,
    GenerationResult,
    GzipLineWriter,
    ProgressCallback,
    choose_strings,
    epoch_seconds,
    fit_total,
    format_timestamps,
    format_uuids,
    join_lines,
    make_rng,
    plain_array,
    random_uuid_bytes,
    replace_field,
    truth_path,
)
from shoplake.synth.products import Catalog, build_catalog

CLICKSTREAM_HEADER = (
    "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
)
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
USER_TYPES = ("browser", "engaged", "high_value")
CLICKSTREAM_DIRTY_KINDS = (
    "column_count",
    "bad_timestamp",
    "bad_number",
    "missing_id",
    "bad_event_type",
    "duplicate",
)
TRUTH_HEADER = "user_id,user_type,purchase_propensity"
AFFINITY_HEADER = "user_id,category_id"
COMPANION_HEADER = "product_id,companion_product_id"

_VIEW, _CART, _REMOVE, _PURCHASE = range(4)
_CHUNK_EVENTS = 500_000
# The behaviour table below yields about this many events per user (more than REES46's 14: a
# heavier browser class keeps the types apart while cart and purchase shares stay realistic);
# fit_total() absorbs the random difference.
_EVENTS_PER_USER = 32.0
_MAX_SESSIONS_PER_USER = 60
_MAX_VIEWS_PER_SESSION = 200
_MAX_VIEW_SPAN_SECONDS = 3 * 3600
# Carts, removals and purchases of a viewed product happen within this many seconds after the
# view and before the session's next view, so events of one session never collide.
_ACTION_SPAN_SECONDS = 900
# Share of views after the first that stay in the category of the session's first product.
_CATEGORY_FOCUS = 0.6
_REMOVE_RATE = 0.07
# Share of sessions whose first view is in the user's affine category (the rest draw it store-wide).
_AFFINITY_SESSION_SHARE = 0.8

# UTC hour profile (the REES46 store is in UTC+3: evening peak, a deep trough around 01:00 UTC)
# and Monday..Sunday factors.
# fmt: off
_HOURLY = np.array([
    0.30, 0.12, 0.08, 0.10, 0.22, 0.45, 0.70, 0.85, 0.92, 0.95, 0.97, 0.98,
    0.98, 1.00, 1.03, 1.10, 1.22, 1.35, 1.40, 1.30, 1.05, 0.80, 0.60, 0.45,
])
# fmt: on
_WEEKDAY = np.array([1.00, 0.98, 0.96, 0.97, 1.02, 1.10, 1.12])


@dataclass(frozen=True)
class _Behaviour:
    """How one latent user type behaves; the types differ enough to be recovered by clustering."""

    share: float
    min_sessions: int
    sessions_scale: float  # extra sessions follow a Lomax (Pareto II) law: a heavy upper tail
    sessions_shape: float
    views_per_session: float  # mean of 1 + negative binomial
    views_shape: float  # negative binomial shape: lower is more dispersed
    view_gap_seconds: float
    cart_session_rate: float  # chance that a session carts something
    second_cart_rate: float
    min_cart_sessions: int  # every user of the type carts in at least this many sessions
    propensity_a: float  # Beta prior of the per-session purchase probability
    propensity_b: float
    min_purchase_sessions: int
    extra_purchases: float  # Poisson mean of further products bought in a purchase session
    carted_purchase_rate: float  # share of purchase sessions with cart events before buying
    price_tilt: float  # exponent on relative price when picking products to view


_BEHAVIOURS = (
    # browser: returns again and again for many views, hardly ever a cart, almost never buys
    _Behaviour(0.70, 3, 2.5, 2.2, 8.5, 4.0, 35.0, 0.002, 0.0, 0, 1.0, 2000.0, 0, 0.0, 0.3, 0.0),
    # engaged: fewer views, carts in most sessions, seldom buys
    _Behaviour(0.22, 2, 2.0, 2.5, 3.5, 4.0, 55.0, 0.37, 0.15, 2, 1.0, 40.0, 0, 0.0, 0.8, 0.2),
    # high_value: buys several products in most sessions, expensive ones, mostly without a cart
    _Behaviour(0.08, 2, 2.0, 2.5, 3.5, 4.0, 70.0, 0.03, 0.2, 0, 12.0, 2.0, 2, 1.4, 0.2, 1.0),
)


@dataclass(frozen=True)
class _Plan:
    """Every session of the file, sorted by start time, plus the users they belong to."""

    user_id: np.ndarray  # per user
    user_type: np.ndarray  # per user
    propensity: np.ndarray  # per user
    s_user: np.ndarray  # per session: index into the user arrays
    s_start: np.ndarray  # per session: Unix seconds
    s_views: np.ndarray
    s_carts: np.ndarray
    s_removes: np.ndarray
    s_purchases: np.ndarray
    s_view_span: np.ndarray  # seconds spread over the gaps between views
    s_uuid: np.ndarray  # (sessions, 16) uint8
    affinity: np.ndarray  # per user: index of the affine category
    affine_session: np.ndarray  # per session: whether its first view is in the user's affine category
    companion: np.ndarray  # per product (catalog index): its companion's catalog index

    @property
    def events(self) -> np.ndarray:
        """Events per session."""
        return self.s_views + self.s_carts + self.s_removes + self.s_purchases


class _ProductSampler:
    """Draws products by popularity, tilted by price per user type, globally or within a category."""

    def __init__(self, catalog: Catalog) -> None:
        self._n = len(catalog)
        self._category = catalog.category
        relative_price = catalog.price_cents / np.median(catalog.price_cents)
        self._order = np.argsort(catalog.category, kind="stable")
        sorted_cat = catalog.category[self._order]
        n_cats = len(catalog.category_codes)
        self._lo = np.searchsorted(sorted_cat, np.arange(n_cats), side="left")
        self._hi = np.searchsorted(sorted_cat, np.arange(n_cats), side="right")
        self._cdf: list[np.ndarray] = []
        self._cat_cdf: list[np.ndarray] = []
        for behaviour in _BEHAVIOURS:
            weight = catalog.popularity * relative_price**behaviour.price_tilt
            self._cdf.append(np.cumsum(weight))
            self._cat_cdf.append(np.cumsum(weight[self._order]))

    def pick(self, user_type: int, u: np.ndarray) -> np.ndarray:
        cdf = self._cdf[user_type]
        return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), self._n - 1)

    def pick_in_category(self, user_type: int, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        cdf = self._cat_cdf[user_type]
        lo, hi = self._lo[category], self._hi[category]
        base = np.where(lo > 0, cdf[np.maximum(lo - 1, 0)], 0.0)
        top = cdf[hi - 1]
        pos = np.searchsorted(cdf, base + u * (top - base), side="right")
        return self._order[np.clip(pos, lo, hi - 1)]


def _session_starts(
    rng: np.random.Generator, n: int, start: dt.date, days: int, budget: np.ndarray
) -> np.ndarray:
    """Session start times with weekly and hourly seasonality, ending before the span ends."""
    first = epoch_seconds(start)
    end = first + days * 86400
    weekdays = (start.weekday() + np.arange(days)) % 7
    day_weight = _WEEKDAY[weekdays] * rng.lognormal(0.0, 0.06, days)
    cell_weight = (day_weight[:, None] * _HOURLY[None, :]).reshape(-1)
    cdf = np.cumsum(cell_weight)
    cell = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)
    starts = first + cell * 3600 + rng.integers(0, 3600, size=n)
    return np.maximum(first, np.minimum(starts, end - budget - 1))


def _per_type(name: str, user_type: np.ndarray) -> np.ndarray:
    """The behaviour attribute ``name`` for each entry of ``user_type``."""
    return np.array([getattr(x, name) for x in _BEHAVIOURS])[user_type]


@dataclass
class _Sessions:
    """Per-session counts before timing (in user order)."""

    user: np.ndarray
    user_type: np.ndarray
    views: np.ndarray
    carts: np.ndarray
    removes: np.ndarray
    purchases: np.ndarray

    @property
    def min_views(self) -> np.ndarray:
        """Each cart or purchase needs its own view of the product in the session."""
        return np.maximum(1, np.maximum(self.carts, self.purchases))

    @property
    def actions(self) -> np.ndarray:
        return self.carts + self.removes + self.purchases

    def take(self, index: np.ndarray) -> _Sessions:
        return _Sessions(*(getattr(self, f.name)[index] for f in fields(self)))


def _draw_sessions(rng: np.random.Generator, user_type: np.ndarray, propensity: np.ndarray) -> _Sessions:
    """Draws each user's sessions and what happens in them, by user type."""
    extra = np.floor(
        _per_type("sessions_scale", user_type) * rng.pareto(_per_type("sessions_shape", user_type))
    )
    n_sessions = np.minimum(
        _per_type("min_sessions", user_type) + extra.astype(np.int64), _MAX_SESSIONS_PER_USER
    )
    first_session = np.cumsum(n_sessions) - n_sessions
    user = np.repeat(np.arange(len(user_type)), n_sessions)
    s_type = user_type[user]
    n = len(user)

    shape = _per_type("views_shape", s_type)
    mean_extra = _per_type("views_per_session", s_type) - 1.0
    views = np.minimum(1 + rng.negative_binomial(shape, shape / (shape + mean_extra)), _MAX_VIEWS_PER_SESSION)

    # A random order of each user's sessions: the first few carry the "at least" guarantees of
    # the user's type (every engaged user carts, every high-value user buys more than once).
    order = np.argsort(user + rng.random(n), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first_session[user[order]]
    cart_session = (rng.random(n) < _per_type("cart_session_rate", s_type)) | (
        rank < _per_type("min_cart_sessions", s_type)
    )
    carts = cart_session * (1 + (rng.random(n) < _per_type("second_cart_rate", s_type)))
    purchase_session = (rng.random(n) < propensity[user]) | (
        rank < _per_type("min_purchase_sessions", s_type)
    )
    purchases = purchase_session * (1 + rng.poisson(_per_type("extra_purchases", s_type)))
    carted = purchase_session & (rng.random(n) < _per_type("carted_purchase_rate", s_type))
    carts = np.where(carted, np.maximum(carts, purchases), carts)
    removes = rng.binomial(np.maximum(carts - purchases, 0), _REMOVE_RATE)
    sessions = _Sessions(user, s_type, views, carts, removes, purchases)
    sessions.views = np.maximum(views, sessions.min_views)
    return sessions


def _fit_sessions(rng: np.random.Generator, sessions: _Sessions, rows: int) -> _Sessions:
    """Adjusts view counts so that the sessions hold exactly ``rows`` events."""
    required = sessions.min_views + sessions.actions
    if int(required.sum()) > rows:
        # Only for tiny files: keep a random subset of sessions that fits.
        perm = rng.permutation(len(required))
        keep = np.sort(perm[np.cumsum(required[perm]) <= rows])
        if len(keep) == 0:
            keep = perm[:1]
            sessions.carts[keep] = sessions.purchases[keep] = sessions.removes[keep] = 0
        sessions = sessions.take(keep)
    target = rows - int(sessions.actions.sum())
    sessions.views = fit_total(sessions.views, sessions.min_views, target, rng)
    return sessions


def _plant_preferences(
    seed: int, catalog: Catalog, n_users: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Affine category per user (by category popularity) and companion per product (another category).

    Drawn from their own stream, so the planted user types and session counts do not change.
    """
    rng = make_rng(seed, STREAM_CLICKSTREAM_AFFINITY)
    n_cats = int(catalog.category.max()) + 1
    weight = np.bincount(catalog.category, weights=catalog.popularity, minlength=n_cats)
    affinity = rng.choice(n_cats, size=n_users, p=weight / weight.sum())
    cdf = np.cumsum(catalog.popularity)
    n = len(catalog)
    companion = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), n - 1)
    # A companion in the product's own category is redrawn (a few rounds leave almost none).
    for _ in range(8):
        same = np.flatnonzero(catalog.category[companion] == catalog.category)
        if len(same) == 0:
            break
        companion[same] = np.minimum(np.searchsorted(cdf, rng.random(len(same)) * cdf[-1], side="right"), n - 1)
    return rng, affinity, companion


def _plan_sessions(rows: int, seed: int, start: dt.date, days: int, catalog: Catalog) -> _Plan:
    """Plans users and sessions so that they add up to exactly ``rows`` events."""
    rng = make_rng(seed, STREAM_CLICKSTREAM)
    n_users = max(1, int(round(rows / _EVENTS_PER_USER)))
    shares = np.array([x.share for x in _BEHAVIOURS])
    user_type = rng.choice(len(shares), size=n_users, p=shares / shares.sum())
    propensity = rng.beta(_per_type("propensity_a", user_type), _per_type("propensity_b", user_type))
    sessions = _fit_sessions(rng, _draw_sessions(rng, user_type, propensity), rows)

    views = sessions.views
    mean_gap = _per_type("view_gap_seconds", sessions.user_type)
    view_span = np.where(views > 1, rng.gamma(np.maximum(views - 1, 1), mean_gap), 0.0)
    view_span = np.minimum(view_span, _MAX_VIEW_SPAN_SECONDS)
    # An upper bound of the session's duration, so that sessions end inside the span.
    action_views = np.maximum(sessions.carts, sessions.purchases)
    budget = (view_span + (views - 1) + _ACTION_SPAN_SECONDS * action_views + 1).astype(np.int64)
    s_start = _session_starts(rng, len(views), start, days, budget)
    order = np.argsort(s_start, kind="stable")
    preferences, affinity, companion = _plant_preferences(seed, catalog, n_users)
    return _Plan(
        user_id=510_000_000 + np.cumsum(rng.integers(1, 40, size=n_users)),
        user_type=user_type,
        propensity=propensity,
        s_user=sessions.user[order],
        s_start=s_start[order],
        s_views=views[order],
        s_carts=sessions.carts[order],
        s_removes=sessions.removes[order],
        s_purchases=sessions.purchases[order],
        s_view_span=view_span[order],
        s_uuid=random_uuid_bytes(rng, len(views)),
        affinity=affinity,
        affine_session=preferences.random(len(views)) < _AFFINITY_SESSION_SHARE,
        companion=companion,
    )


@dataclass
class _Events:
    """Columns of a batch of events (not yet formatted)."""

    time: np.ndarray
    kind: np.ndarray
    product: np.ndarray
    session: np.ndarray

    @staticmethod
    def concat(parts: list[_Events]) -> _Events:
        return _Events(
            time=np.concatenate([p.time for p in parts]),
            kind=np.concatenate([p.kind for p in parts]),
            product=np.concatenate([p.product for p in parts]),
            session=np.concatenate([p.session for p in parts]),
        )

    def take(self, index: np.ndarray | slice) -> _Events:
        return _Events(self.time[index], self.kind[index], self.product[index], self.session[index])

    def __len__(self) -> int:
        return len(self.time)


def _expand_sessions(
    plan: _Plan, first: int, last: int, rng: np.random.Generator, sampler: _ProductSampler, catalog: Catalog
) -> _Events:
    """Expands sessions ``first:last`` of the plan into events (unsorted)."""
    views = plan.s_views[first:last]
    n_views = int(views.sum())
    local = np.repeat(np.arange(last - first), views)
    first_pos = np.cumsum(views) - views
    position = np.arange(n_views) - first_pos[local]
    is_first = position == 0
    view_type = plan.user_type[plan.s_user[first:last]][local]

    # Products: the first view sets the session's category; later views mostly stay in it.
    u = rng.random(n_views)
    focus = ~is_first & (rng.random(n_views) < _CATEGORY_FOCUS)
    product = np.empty(n_views, dtype=np.int64)
    for t in range(len(_BEHAVIOURS)):
        mask = ~focus & (view_type == t)
        product[mask] = sampler.pick(t, u[mask])
    affine = is_first & plan.affine_session[first:last][local]
    affine_category = plan.affinity[plan.s_user[first:last]][local]
    for t in range(len(_BEHAVIOURS)):
        mask = affine & (view_type == t)
        product[mask] = sampler.pick_in_category(t, affine_category[mask], u[mask])
    focus_category = catalog.category[product[first_pos]][local]
    for t in range(len(_BEHAVIOURS)):
        mask = focus & (view_type == t)
        product[mask] = sampler.pick_in_category(t, focus_category[mask], u[mask])

    # A random order of the views inside each session decides which views lead to actions; the
    # sets are nested, so bought products were usually carted and removed ones never bought.
    order = np.argsort(local + rng.random(n_views), kind="stable")
    rank = np.empty(n_views, dtype=np.int64)
    rank[order] = np.arange(n_views) - first_pos[local[order]]
    carts = plan.s_carts[first:last][local]
    purchases = plan.s_purchases[first:last][local]
    # Co-purchases: the second product bought in a session is the companion of the first.
    leader = order[first_pos]  # per session: its view of rank 0 (bought first)
    second = (rank == 1) & (purchases >= 2)
    product[second] = plan.companion[product[leader[local[second]]]]
    removes = plan.s_removes[first:last][local]
    has_cart = rank < carts
    has_purchase = rank < purchases
    has_remove = (rank >= carts - removes) & (rank < carts)
    has_action = has_cart | has_purchase

    # View times: the session's view span is split into random gaps of at least one second, and
    # a view followed by actions gets an extra window for them before the next view.
    weight = rng.exponential(1.0, n_views)
    weight[is_first] = 0.0
    weight_sum = np.bincount(local, weights=weight, minlength=last - first)
    span = plan.s_view_span[first:last]
    share = np.divide(weight, weight_sum[local], out=np.zeros(n_views), where=weight_sum[local] > 0)
    gap = 1 + np.floor(span[local] * share).astype(np.int64)
    action_span = np.where(
        has_action, 3 + np.minimum(np.floor(rng.exponential(90.0, n_views)), _ACTION_SPAN_SECONDS - 4), 0
    ).astype(np.int64)
    previous_span = np.concatenate([[0], action_span[:-1]])
    increment = np.where(is_first, 0, gap + previous_span)
    cumulative = np.cumsum(increment)
    offset = cumulative - cumulative[first_pos][local]
    view_time = plan.s_start[first:last][local] + offset

    half = action_span // 2
    first_action = view_time + 1 + np.floor(rng.random(n_views) * np.maximum(half, 1)).astype(np.int64)
    second_action = (
        view_time
        + half
        + 1
        + np.floor(rng.random(n_views) * np.maximum(action_span - 1 - half, 1)).astype(np.int64)
    )

    session = first + local
    parts = [
        _Events(view_time, np.full(n_views, _VIEW, dtype=np.int8), product, session),
        _Events(
            first_action[has_cart],
            np.full(int(has_cart.sum()), _CART, dtype=np.int8),
            product[has_cart],
            session[has_cart],
        ),
        _Events(
            second_action[has_remove],
            np.full(int(has_remove.sum()), _REMOVE, dtype=np.int8),
            product[has_remove],
            session[has_remove],
        ),
        _Events(
            second_action[has_purchase],
            np.full(int(has_purchase.sum()), _PURCHASE, dtype=np.int8),
            product[has_purchase],
            session[has_purchase],
        ),
    ]
    return _Events.concat(parts)


class _Formatter:
    """Turns event columns into CSV lines, and into separate fields for dirty rows."""

    def __init__(self, plan: _Plan, catalog: Catalog) -> None:
        self._catalog = catalog
        self._event_types = plain_array(EVENT_TYPES)
        # Formatting per session once and taking per event is several times faster than
        # formatting a UUID and a user id for every event.
        self._session_ids = format_uuids(plan.s_uuid)
        self._session_users = pc.cast(pa.array(plan.user_id[plan.s_user]), pa.string())
        category = catalog.category
        self._product_fields = [
            pc.cast(pa.array(catalog.product_id), pa.string()),
            pc.cast(pa.array(catalog.category_ids[category]), pa.string()),
            plain_array([catalog.category_codes[c] for c in category.tolist()]),
            plain_array(list(catalog.brand)),
            plain_array([f"{c // 100}.{c % 100:02d}" for c in catalog.price_cents.tolist()]),
        ]

    def fields(self, events: _Events, product_fields: bool) -> list[pa.Array]:
        """The CSV fields of ``events``: product fields joined into one unless asked separately."""
        time = format_timestamps(events.time, suffix=" UTC")
        kind = self._event_types.take(pa.array(events.kind))
        session = pa.array(events.session)
        user = self._session_users.take(session)
        session_id = self._session_ids.take(session)
        product = pa.array(events.product)
        if product_fields:
            return [time, kind, *(f.take(product) for f in self._product_fields), user, session_id]
        return [time, kind, self._catalog.segment.take(product), user, session_id]


_Breaker = Callable[[list[pa.Array], np.ndarray, np.random.Generator], None]


def _clickstream_breakers(year: int) -> dict[str, _Breaker]:
    """How each kind of dirty row is made from the separate fields of clean rows."""
    bad_times = (f"{year}-13-45 99:00:00 UTC", "not a date")

    def bad_timestamp(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
        replace_field(fields, 0, choose_strings(rng, bad_times, len(rows)))

    def bad_number(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
        replace_field(fields, 6, choose_strings(rng, ("abc", "n/a", "12.3.4"), len(rows)))

    def missing_id(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
        which = rng.random(len(rows)) < 0.5
        fields[7] = pc.if_else(pa.array(which), "", fields[7])
        fields[2] = pc.if_else(pa.array(~which), "", fields[2])

    def bad_event_type(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
        replace_field(fields, 1, choose_strings(rng, ("click", "add_to_wishlist"), len(rows)))

    return {
        "bad_timestamp": bad_timestamp,
        "bad_number": bad_number,
        "missing_id": missing_id,
        "bad_event_type": bad_event_type,
    }


def _write_truth(path: Path, plan: _Plan) -> None:
    """Writes the planted type and propensity of every user that has events."""
    users = np.unique(plan.s_user)
    users = users[np.argsort(plan.user_id[users], kind="stable")]
    propensity = np.minimum(np.round(plan.propensity[users] * 10_000), 9_999).astype(np.int64)
    lines = join_lines(
        [
            pc.cast(pa.array(plan.user_id[users]), pa.string()),
            plain_array(USER_TYPES).take(pa.array(plan.user_type[users])),
            pc.binary_join_element_wise(
                "0.", pc.utf8_lpad(pc.cast(pa.array(propensity), pa.string()), 4, "0"), ""
            ),
        ]
    )
    text = TRUTH_HEADER + "\n" + "\n".join(lines.to_pylist()) + "\n"
    path.write_bytes(text.encode())


def _write_preferences(out_dir: Path, plan: _Plan, catalog: Catalog) -> None:
    """Writes the planted affine category of every user with events and every product's companion."""
    users = np.unique(plan.s_user)
    users = users[np.argsort(plan.user_id[users], kind="stable")]
    rows = zip(plan.user_id[users].tolist(), catalog.category_ids[plan.affinity[users]].tolist(), strict=True)
    text = AFFINITY_HEADER + "\n" + "".join(f"{u},{c}\n" for u, c in rows)
    truth_path(out_dir, "clickstream_truth_affinities.csv").write_bytes(text.encode())
    pairs = zip(catalog.product_id.tolist(), catalog.product_id[plan.companion].tolist(), strict=True)
    text = COMPANION_HEADER + "\n" + "".join(f"{p},{c}\n" for p, c in pairs)
    truth_path(out_dir, "clickstream_truth_companions.csv").write_bytes(text.encode())


def generate_clickstream(
    out_dir: Path,
    *,
    rows: int,
    seed: int,
    start: dt.date,
    days: int,
    dirty_fraction: float,
    progress: ProgressCallback | None,
) -> GenerationResult:
    """Writes ``clickstream.csv.gz`` and the truth files (user types, affinities, companions).

    Args:
        out_dir: Existing output folder.
        rows: Exact number of events.
        seed: The user seed (the product catalog depends on it only).
        start: First day of events (UTC).
        days: Number of days covered.
        dirty_fraction: Share of rows to replace with bad rows.
        progress: Called with the number of rows written since the previous call.

    Returns:
        What was written.
    """
    catalog = build_catalog(seed)
    sampler = _ProductSampler(catalog)
    plan = _plan_sessions(rows, seed, start, days, catalog)
    rng = make_rng(seed, STREAM_CLICKSTREAM_EVENTS)
    formatter = _Formatter(plan, catalog)
    injector = DirtyInjector(
        fraction=dirty_fraction,
        seed=seed,
        kinds=CLICKSTREAM_DIRTY_KINDS,
        breakers=_clickstream_breakers(start.year),
    )

    n_sessions = len(plan.s_user)
    cumulative = np.cumsum(plan.events)
    cuts = np.searchsorted(
        cumulative, np.arange(_CHUNK_EVENTS, int(cumulative[-1]), _CHUNK_EVENTS), side="right"
    )
    bounds = np.unique(np.concatenate([[0], cuts, [n_sessions]]))

    path = out_dir / "clickstream.csv.gz"
    written = 0
    carry = _Events(np.empty(0, np.int64), np.empty(0, np.int8), np.empty(0, np.int64), np.empty(0, np.int64))
    with GzipLineWriter(path, CLICKSTREAM_HEADER) as writer:
        for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            batch = _Events.concat([carry, _expand_sessions(plan, first, last, rng, sampler, catalog)])
            batch = batch.take(np.argsort(batch.time, kind="stable"))
            # Later sessions start at or after this time, so everything before it is final.
            cut = (
                len(batch)
                if last == n_sessions
                else int(np.searchsorted(batch.time, plan.s_start[last], side="left"))
            )
            ready, carry = batch.take(slice(0, cut)), batch.take(slice(cut, None))
            if len(ready) == 0:
                continue
            lines = join_lines(formatter.fields(ready, product_fields=False))
            def fields_of(pos: np.ndarray, ready: pa.Table = ready) -> list[pa.Array]:
                return formatter.fields(ready.take(pos), product_fields=True)

            lines = injector.apply(lines, fields_of)
            writer.write_lines(lines)
            written += len(lines)
            if progress is not None:
                progress(len(lines))

    truth = truth_path(out_dir, "clickstream_truth_users.csv")
    _write_truth(truth, plan)
    _write_preferences(out_dir, plan, catalog)
    return GenerationResult(
        source="clickstream",
        files=[path],
        rows=written,
        dirty_rows=injector.total,
        truth_file=truth,
        dirty_by_kind=injector.by_kind(),
    )
