"""Synthetic UCI Online Retail-style invoice lines with planted customer types.

The shape follows the real file (541,909 lines, 2010-12 to 2011-12): invoices of about 20 lines
(median 10, heavy tail), a quarter of lines without CustomerID, about 90% of lines from the United
Kingdom, about 1.8% cancellation lines (``C`` invoices that negate lines of an earlier invoice of the
same customer), single-line guest invoices at price 0 often without description, a few ``Adjust bad
debt`` lines on ``A`` invoices, about 1% exact duplicate lines, and hardly any trade on Saturdays.
Customers are planted as champions, regulars and hibernating customers, which differ in frequency,
recency and order size; their types go to ``retail_truth_customers.csv``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoplake.synth._common import (
    STREAM_RETAIL,
    STREAM_RETAIL_ITEMS,
    DirtyInjector,
    GenerationResult,
    GzipLineWriter,
    ProgressCallback,
    choose_strings,
    csv_quote,
    epoch_seconds,
    fit_total,
    format_cents,
    format_timestamps,
    join_lines,
    make_rng,
    plain_array,
    replace_field,
    stratified_flags,
    truth_path,
)

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
CUSTOMER_TYPES = ("champion", "regular", "hibernating")
RETAIL_DIRTY_KINDS = ("column_count", "bad_timestamp", "bad_number", "missing_id", "duplicate")
TRUTH_HEADER = "customer_id,customer_type"

_CHUNK_LINES = 500_000
_FIRST_INVOICE = 536365
_FIRST_CUSTOMER = 12346
_LINES_PER_CUSTOMER = 124.0  # 541,909 lines / 4,372 customers in the real file
_GUEST_LINE_SHARE = 0.25
_CANCEL_LINE_SHARE = 0.018
_ZERO_PRICE_SHARE = 0.003
_DUPLICATE_SHARE = 0.01
_FOREIGN_CUSTOMER_SHARE = 0.12
_FOREIGN_GUEST_SHARE = 0.03
_N_ITEMS = 3800
_MAX_LINES = 1000
_SALE, _CANCELLATION, _ADJUSTMENT = 0, 1, 2

# fmt: off
# Lines per country in the real file, United Kingdom excluded.
_FOREIGN_COUNTRIES = (
    ("Germany", 9495), ("France", 8557), ("EIRE", 8196), ("Spain", 2533), ("Netherlands", 2371),
    ("Belgium", 2069), ("Switzerland", 2002), ("Portugal", 1519), ("Australia", 1259),
    ("Norway", 1086), ("Italy", 803), ("Channel Islands", 758), ("Finland", 695), ("Cyprus", 622),
    ("Sweden", 462), ("Unspecified", 446), ("Austria", 401), ("Denmark", 389), ("Japan", 358),
    ("Poland", 341), ("Israel", 297), ("USA", 291), ("Hong Kong", 288), ("Singapore", 229),
    ("Iceland", 182), ("Canada", 151), ("Greece", 146), ("Malta", 127),
    ("United Arab Emirates", 68), ("European Community", 61), ("RSA", 58), ("Lebanon", 45),
    ("Lithuania", 35), ("Brazil", 32), ("Czech Republic", 30), ("Bahrain", 19), ("Saudi Arabia", 10),
)
_COUNTRIES = ("United Kingdom", *(c for c, _ in _FOREIGN_COUNTRIES))
_FOREIGN_WEIGHT = np.array([w for _, w in _FOREIGN_COUNTRIES], dtype=float)

# Invoice hours (UK time) and Monday..Sunday weights of the real file, which has no Saturday trade.
_HOURS = np.arange(7, 21)
_HOUR_WEIGHT = np.array([0.4, 8.9, 34.3, 49.0, 57.7, 78.7, 72.3, 67.5, 77.5, 54.5, 28.5, 8.0, 3.7, 0.9])
_WEEKDAY = np.array([1.0, 1.1, 1.05, 1.25, 0.85, 0.02, 0.7])

# The most frequent quantities of the real file with their frequencies (thousands of lines).
_QUANTITIES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 25, 32, 36, 48, 72, 96, 100, 144])
_QUANTITY_WEIGHT = np.array(
    [148, 82, 37, 38, 12, 41, 13, 22, 61, 4, 5, 24, 5, 1, 4, 6, 2, 2, 2, 1], dtype=float
)

_COLOURS = (
    "WHITE", "RED", "PINK", "BLUE", "GREEN", "IVORY", "CREAM", "BLACK", "SILVER", "GOLD", "PURPLE",
    "ORANGE", "YELLOW", "LIGHT PINK", "DARK GREEN", "ANTIQUE SILVER", "NATURAL", "VINTAGE", "ZINC",
    "GLASS", "WOODEN", "CERAMIC", "ENAMEL", "RUSTIC",
)
_MOTIFS = (
    "HANGING HEART", "RETROSPOT", "POLKADOT", "PAISLEY", "REGENCY", "SPACEBOY", "DOLLY GIRL",
    "CIRCUS PARADE", "WOODLAND", "SKULL", "BIRD ORNAMENT", "HEART OF WICKER", "LOVE BIRD", "ROSE",
    "STRAWBERRY", "CHRISTMAS", "SNOWFLAKE", "UNION JACK", "VINTAGE LEAF", "FLORAL", "BAROQUE",
    "ENGLISH ROSE", "FAIRY CAKE", "JAM MAKING", "PANTRY", "SCANDINAVIAN", "MOROCCAN", "ORIENTAL",
    "CHERRY BLOSSOM", "BUTTERFLY", "DOILY", "GINGHAM", "SWALLOW", "TOADSTOOL", "BILLBOARD",
)
_ITEMS = (
    "T-LIGHT HOLDER", "LANTERN", "COAT HANGER", "LUNCH BAG", "JUMBO BAG", "CHARLOTTE BAG",
    "SHOPPER BAG", "CAKE STAND", "CAKE TINS", "TEA CUP AND SAUCER", "MUG", "NAPKINS", "PAPER CUPS",
    "PARTY BUNTING", "DOORMAT", "CUSHION COVER", "HOT WATER BOTTLE", "HAND WARMER", "NIGHT LIGHT",
    "JIGSAW PUZZLE", "PAINT SET", "TEA TOWELS", "APRON", "OVEN GLOVE", "PHOTO FRAME", "WALL CLOCK",
    "ALARM CLOCK", "CANDLE", "TRINKET BOX", "JEWELLERY BOX", "STORAGE TIN", "BISCUIT TIN",
    "WATER BOTTLE", "GARLAND", "WREATH", "DOOR STOP", "NOTEBOOK", "WRAPPING PAPER", "GIFT BAG",
    "BIRTHDAY CARD", "STICKERS", "PENCILS", "PURSE", "BAG CHARM", "BOWL", "PLATE", "SPOON",
    "PLASTERS IN TIN", "KEY RING", "PLANT POT", "MIRROR", "BELL", "DRAWER KNOB", "CLOTHES PEGS",
    "ICE LOLLY MOULDS", "LUNCH BOX", "BAKING SET", "CAKE CASES", "METAL SIGN", "FRIDGE MAGNET",
)
_PREFIXES = (
    "", "", "", "", "", "", "SET OF 3 ", "SET OF 6 ", "SET OF 4 ", "PACK OF 12 ", "PACK OF 72 ",
    "SET/6 ", "SET 2 ", "SMALL ", "LARGE ", "JUMBO ", "MINI ",
)
# fmt: on

# Special stock codes (negative item numbers in the line arrays).
_POST, _DOT, _BAD_DEBT = -1, -2, -3
_SPECIALS = {_POST: ("POST", "POSTAGE"), _DOT: ("DOT", "DOTCOM POSTAGE"), _BAD_DEBT: ("B", "Adjust bad debt")}


@dataclass(frozen=True)
class _CustomerBehaviour:
    """Frequency, recency and order size of one planted customer type."""

    share: float
    min_invoices: int
    invoices_scale: float  # extra invoices follow a Lomax law (heavy tail)
    invoices_shape: float
    active_until: float  # the customer buys only in this first part of the span (0..1]
    recent_share: float  # one invoice falls in this final part of the span (0 = no constraint)
    quantity_factor: int  # champions order in bulk


_CUSTOMERS = (
    _CustomerBehaviour(0.15, 10, 8.0, 2.2, 1.0, 0.1, 3),  # champion
    _CustomerBehaviour(0.50, 3, 2.0, 3.0, 1.0, 0.5, 1),  # regular
    _CustomerBehaviour(0.35, 1, 0.5, 3.0, 0.35, 0.0, 1),  # hibernating
)


def _per_type(name: str, kind: np.ndarray) -> np.ndarray:
    """The behaviour attribute ``name`` of each customer type in ``kind``."""
    return np.array([getattr(b, name) for b in _CUSTOMERS])[kind]


@dataclass(frozen=True)
class _Items:
    """The stock items of the shop (independent of the clickstream catalog)."""

    stock_code: pa.StringArray
    description: pa.StringArray  # CSV-quoted where needed
    price_cents: np.ndarray
    popularity_cdf: np.ndarray

    def pick(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draws ``n`` items by popularity."""
        cdf = self.popularity_cdf
        return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)


def _description(rng: np.random.Generator) -> str:
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))] + " " if rng.random() < 0.6 else ""
    head = _PREFIXES[int(rng.integers(len(_PREFIXES)))] + colour + _MOTIFS[int(rng.integers(len(_MOTIFS)))]
    item = _ITEMS[int(rng.integers(len(_ITEMS)))]
    roll = rng.random()
    # A comma or an inch mark makes the export quote the field, as in the real file
    # ("AIRLINE LOUNGE,METAL SIGN", "RECORD FRAME 7\" SINGLE SIZE ").
    if roll < 0.008:
        return f"{head},{item}"
    if roll < 0.012:
        return f'{head} {item} 7" '
    if roll < 0.09:
        return f"{head} {item} "  # the real descriptions often end with a space
    return f"{head} {item}"


def _build_items(seed: int) -> _Items:
    """Builds the shop's stock items: codes like ``85123A``, descriptions like the UCI ones."""
    rng = make_rng(seed, STREAM_RETAIL_ITEMS)
    numbers = np.concatenate([np.arange(20600, 23500), np.arange(84000, 85300), np.arange(35000, 35400)])
    numbers = numbers[rng.choice(len(numbers), size=_N_ITEMS, replace=False)]
    suffix = np.where(rng.random(_N_ITEMS) < 0.15, rng.choice(list("ABCDEFGLSW"), size=_N_ITEMS), "")
    codes = sorted({f"{n}{s}" for n, s in zip(numbers.tolist(), suffix.tolist(), strict=True)})
    descriptions: dict[str, None] = {}
    while len(descriptions) < len(codes):
        descriptions.setdefault(_description(rng))
    texts = list(descriptions)
    cents = np.maximum(np.round(rng.lognormal(np.log(2.1), 0.75, len(codes)) * 20.0).astype(np.int64) * 5, 10)
    pence = rng.random(len(codes)) < 0.08  # a few odd prices such as 0.42 or 0.29
    cents[pence] = rng.integers(12, 99, size=int(pence.sum()))
    order = rng.permutation(len(codes))
    return _Items(
        stock_code=plain_array([codes[i] for i in order]),
        description=plain_array([csv_quote(texts[i]) for i in order]),
        price_cents=cents,
        popularity_cdf=np.cumsum((np.arange(len(codes)) + 5.0) ** -0.9),
    )


@dataclass(frozen=True)
class _Calendar:
    """The trading days of the span with their weights (weekday pattern, upward trend, noise)."""

    first_second: int
    days: int
    cumulative: np.ndarray  # days + 1 cumulative day weights, starting at 0

    @property
    def end_second(self) -> int:
        return self.first_second + self.days * 86400

    def times(self, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Draws invoice times (whole minutes) on a day in ``[lo, hi)`` during business hours."""
        n = len(lo)
        cum = self.cumulative
        day = np.searchsorted(cum, cum[lo] + rng.random(n) * (cum[hi] - cum[lo]), side="right") - 1
        day = np.clip(day, lo, hi - 1)
        hour_cdf = np.cumsum(_HOUR_WEIGHT)
        hour = _HOURS[
            np.minimum(np.searchsorted(hour_cdf, rng.random(n) * hour_cdf[-1], side="right"), len(_HOURS) - 1)
        ]
        return self.first_second + day * 86400 + hour * 3600 + rng.integers(0, 60, size=n) * 60

    def anytime(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draws ``n`` invoice times anywhere in the span."""
        return self.times(rng, np.zeros(n, dtype=np.int64), np.full(n, self.days))


def _calendar(start: dt.date, days: int, rng: np.random.Generator) -> _Calendar:
    weekdays = (start.weekday() + np.arange(days)) % 7
    trend = 1.0 + 0.3 * np.arange(days) / days  # the run-up to Christmas in the real file
    weight = _WEEKDAY[weekdays] * trend * rng.lognormal(0.0, 0.08, days)
    return _Calendar(epoch_seconds(start), days, np.concatenate([[0.0], np.cumsum(weight)]))


@dataclass
class _Invoices:
    """One row per invoice; ``customer`` is -1 for guests."""

    customer: np.ndarray
    country: np.ndarray
    time: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return len(self.customer)


@dataclass
class _Lines:
    """Invoice lines before formatting; ``invoice`` indexes the concatenated invoice table."""

    invoice: np.ndarray
    item: np.ndarray  # index into the items, or a special code (_POST, _DOT, _BAD_DEBT)
    quantity: np.ndarray
    price_cents: np.ndarray
    blank_description: np.ndarray

    def take(self, index: np.ndarray | slice) -> _Lines:
        return _Lines(*(getattr(self, f.name)[index] for f in fields(self)))

    def __len__(self) -> int:
        return len(self.invoice)


def _concat(parts: list[Any]) -> Any:
    """Concatenates dataclasses of arrays (_Invoices or _Lines) field by field."""
    kind = type(parts[0])
    return kind(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(kind)))


@dataclass(frozen=True)
class _Customers:
    """Planted customers: type, country and id."""

    kind: np.ndarray
    country: np.ndarray
    ids: np.ndarray


def _plan_customers(rng: np.random.Generator, rows: int) -> tuple[_Customers, np.ndarray, np.ndarray]:
    """Draws customers and their invoices; returns (customers, invoice customer, invoice lines)."""
    n = max(1, int(round(rows / _LINES_PER_CUSTOMER)))
    shares = np.array([b.share for b in _CUSTOMERS])
    kind = rng.choice(len(_CUSTOMERS), size=n, p=shares / shares.sum())
    extra = np.floor(_per_type("invoices_scale", kind) * rng.pareto(_per_type("invoices_shape", kind)))
    n_invoices = np.minimum(_per_type("min_invoices", kind) + extra.astype(np.int64), 300)
    inv_customer = np.repeat(np.arange(n), n_invoices)
    inv_lines = _invoice_sizes(rng, 2.2, len(inv_customer))
    # Foreign customers are stratified over customers ranked by volume so that the line share of
    # the United Kingdom does not hinge on where the few biggest customers happen to live.
    volume = np.bincount(inv_customer, weights=inv_lines, minlength=n)
    foreign = np.zeros(n, dtype=bool)
    foreign[np.argsort(-volume, kind="stable")] = stratified_flags(rng, n, _FOREIGN_CUSTOMER_SHARE)
    country = np.zeros(n, dtype=np.int64)
    country[foreign] = _foreign_countries(rng, int(foreign.sum()))
    ids = _FIRST_CUSTOMER - 1 + np.cumsum(rng.integers(1, 3, size=n))
    return _Customers(kind, country, ids), inv_customer, inv_lines


def _invoice_sizes(rng: np.random.Generator, log_mean: float, n: int) -> np.ndarray:
    """Lines per invoice: lognormal, median about 10 for customers, with a long tail."""
    return np.minimum(1 + np.floor(rng.lognormal(log_mean, 1.15, n)).astype(np.int64), _MAX_LINES)


def _foreign_countries(rng: np.random.Generator, n: int) -> np.ndarray:
    return 1 + rng.choice(len(_FOREIGN_WEIGHT), size=n, p=_FOREIGN_WEIGHT / _FOREIGN_WEIGHT.sum())


def _plan_sales(
    rng: np.random.Generator,
    customers: _Customers,
    inv_customer: np.ndarray,
    inv_lines: np.ndarray,
    n_lines: int,
    calendar: _Calendar,
) -> tuple[_Invoices, np.ndarray]:
    """Adds guest invoices, fits all invoices to ``n_lines`` lines and dates them."""
    guest_lines = inv_lines.sum() * _GUEST_LINE_SHARE / (1.0 - _GUEST_LINE_SHARE)
    guests = _invoice_sizes(rng, 2.6, int(guest_lines / 20) + 1)
    guests = guests[: int(np.searchsorted(np.cumsum(guests), guest_lines)) + 1]
    inv_customer = np.concatenate([inv_customer, np.full(len(guests), -1)])
    inv_lines = np.concatenate([inv_lines, guests])
    if len(inv_lines) > n_lines:  # tiny files: keep as many invoices as there are lines
        keep = np.sort(rng.choice(len(inv_lines), size=n_lines, replace=False))
        inv_customer, inv_lines = inv_customer[keep], inv_lines[keep]
    inv_lines = fit_total(inv_lines, np.ones_like(inv_lines), n_lines, rng)

    guest = inv_customer < 0
    owner = np.maximum(inv_customer, 0)
    country = np.where(guest, 0, customers.country[owner])
    abroad = guest & (rng.random(len(guest)) < _FOREIGN_GUEST_SHARE)
    country[abroad] = _foreign_countries(rng, int(abroad.sum()))

    # Each type buys within its window; one invoice per customer (the first of its contiguous run)
    # is moved into the type's recent window, which makes champions and regulars recent.
    kind = np.where(guest, 1, customers.kind[owner])
    days = calendar.days
    lo = np.zeros(len(kind), dtype=np.int64)
    hi = np.maximum(np.ceil(_per_type("active_until", kind) * days).astype(np.int64), 1)
    recent = _per_type("recent_share", kind)
    first_of_customer = np.concatenate([[True], inv_customer[1:] != inv_customer[:-1]]) & ~guest
    move = first_of_customer & (recent > 0)
    lo[move] = np.minimum(np.floor((1.0 - recent[move]) * days).astype(np.int64), days - 1)
    hi[move] = days
    time = calendar.times(rng, lo, hi)
    return _Invoices(inv_customer, country, time, np.full(len(kind), _SALE)), inv_lines


def _pick_items_per_invoice(rng: np.random.Generator, items: _Items, line_inv: np.ndarray) -> np.ndarray:
    """Draws an item per line by popularity, redrawing repeats within an invoice.

    Real invoices rarely list an item twice; without the redraw, popular items would repeat by
    chance and add accidental exact duplicates on top of the deliberate ones.
    """
    n_items = len(items.price_cents)
    item = items.pick(rng, len(line_inv))
    for _ in range(4):
        key = line_inv * n_items + item
        order = np.argsort(key, kind="stable")
        repeat = np.zeros(len(key), dtype=bool)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        if not repeat.any():
            break
        item[repeat] = items.pick(rng, int(repeat.sum()))
    return item


def _quantities(rng: np.random.Generator, n: int) -> np.ndarray:
    return _QUANTITIES[rng.choice(len(_QUANTITIES), size=n, p=_QUANTITY_WEIGHT / _QUANTITY_WEIGHT.sum())]


def _sale_lines(
    rng: np.random.Generator, items: _Items, invoices: _Invoices, inv_lines: np.ndarray, customers: _Customers
) -> _Lines:
    """The lines of the sale invoices, in invoice order."""
    n_inv = len(invoices)
    line_inv = np.repeat(np.arange(n_inv), inv_lines)
    n = len(line_inv)
    position = np.arange(n) - (np.cumsum(inv_lines) - inv_lines)[line_inv]
    item = _pick_items_per_invoice(rng, items, line_inv)
    guest = invoices.customer[line_inv] < 0
    factor = np.where(
        guest, 1, _per_type("quantity_factor", customers.kind[np.maximum(invoices.customer, 0)])[line_inv]
    )
    quantity = np.where(rng.random(n) < 0.5, _quantities(rng, n) * factor, _quantities(rng, n))
    price = items.price_cents[item]
    # Guests buy a unit or two at the higher retail price, like the real guest lines.
    quantity = np.where(guest, np.minimum(quantity, 1 + rng.poisson(1.0, n)), quantity)
    price = np.where(guest, np.round(price * 1.21).astype(np.int64) + rng.integers(0, 3, n), price)

    # Foreign customers pay postage on the last line; some web orders carry a DOTCOM postage line.
    size = inv_lines[line_inv]
    last = position == size - 1
    post = last & ~guest & (invoices.country[line_inv] > 0) & (size > 1) & (rng.random(n) < 0.6)
    item[post] = _POST
    quantity[post] = rng.integers(1, 4, int(post.sum()))
    price[post] = rng.choice(np.array([1500, 1800, 2800, 4000]), int(post.sum()))
    dot = last & guest & (size > 3) & (rng.random(n) < 0.3)
    item[dot] = _DOT
    quantity[dot] = 1
    price[dot] = np.round(rng.lognormal(np.log(150.0), 0.9, int(dot.sum())) * 100).astype(np.int64)

    # About 1% of lines repeat the previous line of the same invoice verbatim, as in the real file.
    repeat = np.flatnonzero((position > 0) & (rng.random(n) < _DUPLICATE_SHARE))
    for column in (item, quantity, price):
        column[repeat] = column[repeat - 1]
    return _Lines(line_inv, item, quantity, price, np.zeros(n, dtype=bool))


def _zero_price_lines(
    rng: np.random.Generator, items: _Items, n: int, calendar: _Calendar, first_invoice: int
) -> tuple[_Invoices, _Lines]:
    """Damaged or missing stock: single-line guest invoices at price 0, often without description."""
    invoices = _Invoices(np.full(n, -1), np.zeros(n, np.int64), calendar.anytime(rng, n), np.full(n, _SALE))
    sign = np.where(rng.random(n) < 0.4, -1, 1)
    lines = _Lines(
        first_invoice + np.arange(n),
        items.pick(rng, n),
        rng.choice(np.array([1, 2, 4, 10, 12, 24, 56, 100]), n) * sign,
        np.zeros(n, dtype=np.int64),
        rng.random(n) < 0.6,
    )
    return invoices, lines


def _cancellations(
    rng: np.random.Generator,
    sales: _Invoices,
    inv_lines: np.ndarray,
    sale: _Lines,
    n_lines: int,
    calendar: _Calendar,
    first_invoice: int,
) -> tuple[_Invoices, _Lines]:
    """C invoices that negate some lines of an earlier invoice of the same customer.

    Returns at most ``n_lines`` lines (fewer when the chosen invoices are too short).
    """
    candidates = np.flatnonzero((sales.customer >= 0) & (sales.time < calendar.end_second - 7200))
    if n_lines == 0 or len(candidates) == 0:
        empty = np.empty(0, dtype=np.int64)
        return _Invoices(empty, empty, empty, empty), _Lines(empty, empty, empty, empty, empty.astype(bool))
    sizes = 1 + rng.geometric(1.0 / 1.4, size=n_lines)  # 2.4 lines per C invoice as in the real file
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n_lines)) + 1]
    sizes[-1] -= int(sizes.sum()) - n_lines
    sizes = sizes[sizes > 0]
    ref = candidates[rng.integers(0, len(candidates), size=len(sizes))]
    sizes = np.minimum(sizes, inv_lines[ref])
    offset = np.floor(rng.random(len(sizes)) * (inv_lines[ref] - sizes + 1)).astype(np.int64)
    local = np.repeat(np.arange(len(sizes)), sizes)
    position = np.arange(len(local)) - (np.cumsum(sizes) - sizes)[local]
    source = (np.cumsum(inv_lines) - inv_lines)[ref][local] + offset[local] + position
    sold = sale.quantity[source]
    partial = rng.random(len(source)) < 0.25
    quantity = np.where(
        partial, -np.maximum(1, np.floor(sold * rng.random(len(source)))).astype(np.int64), -sold
    )
    lines = _Lines(
        first_invoice + local,
        sale.item[source],
        quantity,
        sale.price_cents[source],
        np.zeros(len(local), bool),
    )
    delay = np.minimum(rng.exponential(2.5 * 86400.0, len(ref)), 20 * 86400.0)
    time = sales.time[ref] + 60 + (delay // 60 * 60).astype(np.int64)
    time = np.minimum(time, np.maximum(calendar.end_second - 60, sales.time[ref] + 60))
    invoices = _Invoices(sales.customer[ref], sales.country[ref], time, np.full(len(ref), _CANCELLATION))
    return invoices, lines


def _extra_sale_lines(rng: np.random.Generator, items: _Items, n_invoices: int, n: int) -> _Lines:
    """Lines appended to random sale invoices, to make up for cancellation lines that did not fit."""
    item = items.pick(rng, n)
    invoice = np.sort(rng.integers(0, n_invoices, size=n))
    return _Lines(invoice, item, _quantities(rng, n), items.price_cents[item], np.zeros(n, dtype=bool))


def _adjustments(
    rng: np.random.Generator, n: int, calendar: _Calendar, first_invoice: int
) -> tuple[_Invoices, _Lines]:
    """Bad-debt adjustments: single-line A invoices a minute apart, one positive then negatives."""
    amount = int(round(float(rng.lognormal(np.log(11000.0), 0.3)) * 100))
    start = calendar.anytime(rng, 1)[0] if n else 0
    invoices = _Invoices(
        np.full(n, -1), np.zeros(n, np.int64), start + 60 * np.arange(n), np.full(n, _ADJUSTMENT)
    )
    lines = _Lines(
        first_invoice + np.arange(n),
        np.full(n, _BAD_DEBT),
        np.ones(n, dtype=np.int64),
        np.where(np.arange(n) == 0, amount, -amount),
        np.zeros(n, dtype=bool),
    )
    return invoices, lines


class _RetailFormatter:
    """Formats invoice lines into the eight UCI fields."""

    def __init__(
        self, items: _Items, invoices: _Invoices, numbers: np.ndarray, customers: _Customers
    ) -> None:
        self._items = items
        self._invoices = invoices
        prefix = pa.array(np.array(["", "C", "A"])[invoices.kind])
        self._invoice_no = pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")
        # Guests (customer -1) map to the trailing empty CustomerID.
        self._guest = len(customers.ids)
        self._customer_id = plain_array([f"{c}.0" for c in customers.ids.tolist()] + [""])
        self._countries = plain_array(_COUNTRIES)
        codes = sorted(_SPECIALS)
        self._special_base = codes[0]
        self._special_code = plain_array([_SPECIALS[c][0] for c in codes])
        self._special_desc = plain_array([_SPECIALS[c][1] for c in codes])

    def fields(self, lines: _Lines) -> list[pa.Array]:
        inv = self._invoices
        special = lines.item < 0
        mask = pa.array(special)
        regular_item = pa.array(np.where(special, 0, lines.item))
        special_item = pa.array(np.where(special, lines.item - self._special_base, 0))
        code = pc.if_else(
            mask, self._special_code.take(special_item), self._items.stock_code.take(regular_item)
        )
        desc = pc.if_else(
            mask, self._special_desc.take(special_item), self._items.description.take(regular_item)
        )
        if lines.blank_description.any():
            desc = pc.if_else(pa.array(lines.blank_description), "", desc)
        customer = inv.customer[lines.invoice]
        return [
            self._invoice_no.take(pa.array(lines.invoice)),
            code,
            desc,
            pc.cast(pa.array(lines.quantity), pa.string()),
            format_timestamps(inv.time[lines.invoice]),
            format_cents(lines.price_cents, style="shortest"),
            self._customer_id.take(pa.array(np.where(customer < 0, self._guest, customer))),
            self._countries.take(pa.array(inv.country[lines.invoice])),
        ]


def _timestamp_breaker(year: int) -> Callable[[list[pa.Array], np.ndarray, np.random.Generator], None]:
    options = (f"{year}-13-45 99:00:00", "not a date")

    def breaker(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
        replace_field(fields, 4, choose_strings(rng, options, len(rows)))

    return breaker


def _break_number(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
    bad = choose_strings(rng, ("abc", "n/a", "1.2.3"), len(rows))
    on_quantity = pa.array(rng.random(len(rows)) < 0.5)
    fields[3] = pc.if_else(on_quantity, bad, fields[3])
    fields[5] = pc.if_else(on_quantity, fields[5], bad)


def _break_missing_id(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
    on_invoice = pa.array(rng.random(len(rows)) < 0.5)
    fields[0] = pc.if_else(on_invoice, "", fields[0])
    fields[1] = pc.if_else(on_invoice, fields[1], "")


def _write_truth(path: Path, invoices: _Invoices, customers: _Customers) -> None:
    """Writes the planted type of every customer that has an invoice in the file."""
    present = np.unique(invoices.customer[invoices.customer >= 0])
    pairs = sorted(zip(customers.ids[present].tolist(), customers.kind[present].tolist(), strict=True))
    path.write_text(TRUTH_HEADER + "\n" + "".join(f"{cid},{CUSTOMER_TYPES[k]}\n" for cid, k in pairs))


def generate_retail(
    out_dir: Path,
    *,
    rows: int,
    seed: int,
    start: dt.date,
    days: int,
    dirty_fraction: float,
    progress: ProgressCallback | None,
) -> GenerationResult:
    """Writes ``retail.csv.gz`` and ``retail_truth_customers.csv``.

    Args:
        out_dir: Existing output folder.
        rows: Exact number of invoice lines.
        seed: The user seed.
        start: First trading day.
        days: Number of days covered.
        dirty_fraction: Share of rows to replace with bad rows.
        progress: Called with the number of rows written since the previous call.

    Returns:
        What was written.
    """
    rng = make_rng(seed, STREAM_RETAIL)
    items = _build_items(seed)
    calendar = _calendar(start, days, rng)
    n_adjust = 3 if rows >= 200_000 else (1 if rows >= 5_000 else 0)
    n_cancel = int(round(_CANCEL_LINE_SHARE * rows)) if rows >= 100 else 0
    n_zero = int(round(_ZERO_PRICE_SHARE * rows))
    n_sale = rows - n_adjust - n_cancel - n_zero

    customers, inv_customer, inv_lines = _plan_customers(rng, rows)
    sales, inv_lines = _plan_sales(rng, customers, inv_customer, inv_lines, n_sale, calendar)
    sale = _sale_lines(rng, items, sales, inv_lines, customers)
    offset = len(sales)
    zero_inv, zero = _zero_price_lines(rng, items, n_zero, calendar, offset)
    offset += n_zero
    cancel_inv, cancel = _cancellations(rng, sales, inv_lines, sale, n_cancel, calendar, offset)
    offset += len(cancel_inv)
    # Cancellation lines that did not fit (invoices too short) become extra sale lines.
    sale = _concat([sale, _extra_sale_lines(rng, items, len(sales), n_cancel - len(cancel))])
    adjust_inv, adjust = _adjustments(rng, n_adjust, calendar, offset)

    # All invoices are numbered in time order from one counter, which C and A invoices share.
    invoices = _concat([sales, zero_inv, cancel_inv, adjust_inv])
    order = np.lexsort((rng.random(len(invoices)), invoices.time))
    numbers = np.empty(len(invoices), dtype=np.int64)
    numbers[order] = _FIRST_INVOICE + np.arange(len(invoices))
    lines = _concat([sale, zero, cancel, adjust])
    lines = lines.take(np.argsort(numbers[lines.invoice], kind="stable"))
    if len(lines) != rows:
        raise RuntimeError(f"internal error: planned {len(lines)} retail lines instead of {rows}")

    formatter = _RetailFormatter(items, invoices, numbers, customers)
    injector = DirtyInjector(
        fraction=dirty_fraction,
        seed=seed,
        kinds=RETAIL_DIRTY_KINDS,
        breakers={
            "bad_timestamp": _timestamp_breaker(start.year),
            "bad_number": _break_number,
            "missing_id": _break_missing_id,
        },
    )
    path = out_dir / "retail.csv.gz"
    written = 0
    with GzipLineWriter(path, RETAIL_HEADER) as writer:
        for first in range(0, len(lines), _CHUNK_LINES):
            columns = formatter.fields(lines.take(slice(first, first + _CHUNK_LINES)))
            def fields_of(pos: np.ndarray, columns: list[pa.Array] = columns) -> list[pa.Array]:
                return [c.take(pa.array(pos)) for c in columns]

            text = injector.apply(join_lines(columns), fields_of)
            writer.write_lines(text)
            written += len(text)
            if progress is not None:
                progress(len(text))

    truth = truth_path(out_dir, "retail_truth_customers.csv")
    _write_truth(truth, invoices, customers)
    return GenerationResult(
        source="retail",
        files=[path],
        rows=written,
        dirty_rows=injector.total,
        truth_file=truth,
        dirty_by_kind=injector.by_kind(),
    )
