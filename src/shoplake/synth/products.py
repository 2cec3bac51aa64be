"""The product universe shared by the clickstream and products generators.

The catalog depends on the seed only, so a clickstream and a products file generated with the same
seed agree on every product's category and brand (``products`` wins on the "latest" brand of the
few products listed twice). Products are indexed by popularity rank: index 0 is the most viewed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shoplake.synth._common import (
    STREAM_CATALOG,
    DirtyInjector,
    GenerationResult,
    GzipLineWriter,
    ProgressCallback,
    choose_strings,
    join_lines,
    make_rng,
    plain_array,
    replace_field,
    stratified_flags,
)

UNIVERSE_SIZE = 50_000
PRODUCTS_HEADER = "product_id,category_id,category_code,brand"
PRODUCTS_DIRTY_KINDS = ("column_count", "bad_number", "missing_id", "duplicate")

# Shares of the REES46 October 2019 sample: about a third of events have no category_code and
# about a seventh no brand. Products are drawn at 33% because high-value users, who lean towards
# the pricier coded categories, pull the event-level share down to about 32%.
_EMPTY_CODE_SHARE = 0.33
_EMPTY_BRAND_SHARE = 0.14
_REPEATED_SHARE = 0.01

# (category_code, relative weight, median price, brands by popularity). Codes and brands follow
# the REES46 multi-category store; weights are a rounded version of its event shares.
_CODED_CATEGORIES: tuple[tuple[str, float, float, tuple[str, ...]], ...] = (
    (
        "electronics.smartphone",
        24.0,
        260.0,
        ("samsung", "apple", "xiaomi", "huawei", "oppo", "vivo", "meizu", "nokia", "honor", "realme"),
    ),
    (
        "electronics.clocks",
        3.0,
        130.0,
        ("apple", "samsung", "casio", "garmin", "xiaomi", "amazfit", "huawei"),
    ),
    ("computers.notebook", 3.0, 620.0, ("acer", "lenovo", "asus", "hp", "apple", "dell", "msi")),
    (
        "electronics.audio.headphone",
        2.6,
        55.0,
        ("samsung", "apple", "sony", "jbl", "xiaomi", "huawei", "sennheiser"),
    ),
    (
        "appliances.kitchen.refrigerators",
        2.0,
        480.0,
        ("lg", "samsung", "bosch", "indesit", "beko", "atlant", "haier"),
    ),
    (
        "appliances.environment.vacuum",
        1.8,
        150.0,
        ("samsung", "lg", "philips", "bosch", "vitek", "dyson", "redmond"),
    ),
    ("appliances.environment.air_heater", 1.5, 45.0, ("ballu", "polaris", "timberk", "scarlett", "vitek")),
    ("electronics.video.tv", 1.5, 400.0, ("samsung", "lg", "sony", "artel", "xiaomi", "philips", "haier")),
    ("auto.accessories.player", 1.4, 40.0, ("pioneer", "prology", "kenwood", "sony", "alpine")),
    ("apparel.shoes", 1.4, 70.0, ("nike", "adidas", "respect", "baden", "rieker", "puma")),
    ("appliances.kitchen.washer", 1.3, 350.0, ("lg", "samsung", "indesit", "beko", "bosch", "artel")),
    ("apparel.shoes.keds", 1.1, 60.0, ("nike", "adidas", "puma", "reebok", "skechers")),
    ("electronics.telephone", 1.0, 25.0, ("nokia", "panasonic", "texet", "philips", "alcatel")),
    ("furniture.living_room.cabinet", 0.9, 150.0, ("brw", "ikea", "mebelson", "shatura")),
    ("auto.accessories.alarm", 0.8, 150.0, ("starline", "pandora", "scher-khan", "tomahawk")),
    ("appliances.kitchen.meat_grinder", 0.8, 90.0, ("redmond", "bosch", "moulinex", "polaris", "kenwood")),
    ("furniture.living_room.sofa", 0.8, 550.0, ("brw", "mebelson", "divanby", "ikea")),
    ("computers.desktop", 0.7, 600.0, ("hp", "lenovo", "acer", "dell", "asus")),
    ("furniture.bedroom.bed", 0.7, 350.0, ("brw", "askona", "ikea", "ormatek")),
    ("accessories.bag", 0.6, 50.0, ("samsonite", "nike", "adidas", "wenger", "puma")),
    ("appliances.kitchen.microwave", 0.6, 90.0, ("samsung", "lg", "midea", "bosch", "panasonic")),
    (
        "appliances.environment.water_heater",
        0.55,
        140.0,
        ("aqua", "ariston", "thermex", "electrolux", "polaris"),
    ),
    ("electronics.audio.subwoofer", 0.5, 90.0, ("pioneer", "kenwood", "alpine", "jbl", "sony")),
    ("appliances.iron", 0.5, 40.0, ("philips", "tefal", "bosch", "braun", "polaris")),
    ("appliances.kitchen.blender", 0.5, 55.0, ("bosch", "philips", "redmond", "moulinex", "braun")),
    ("sport.bicycle", 0.5, 280.0, ("stels", "stark", "forward", "trek", "merida")),
    ("kids.carriage", 0.45, 250.0, ("tutis", "peg-perego", "chicco", "cybex")),
    ("construction.tools.drill", 0.45, 80.0, ("makita", "bosch", "dewalt", "metabo", "interskol")),
    ("auto.accessories.videoregister", 0.45, 70.0, ("xiaomi", "mio", "neoline", "playme")),
    ("electronics.tablet", 0.4, 280.0, ("apple", "samsung", "lenovo", "huawei", "xiaomi")),
    ("appliances.environment.air_conditioner", 0.4, 420.0, ("lg", "samsung", "midea", "artel", "gree")),
    ("construction.tools.saw", 0.4, 110.0, ("makita", "bosch", "dewalt", "interskol")),
    ("appliances.kitchen.oven", 0.35, 280.0, ("bosch", "electrolux", "gorenje", "hansa")),
    ("computers.components.videocards", 0.35, 350.0, ("msi", "gigabyte", "asus", "palit", "zotac")),
    ("appliances.sewing_machine", 0.35, 190.0, ("janome", "brother", "singer", "juki")),
    ("appliances.kitchen.kettle", 0.35, 30.0, ("tefal", "philips", "bosch", "redmond", "vitek")),
    ("appliances.kitchen.hood", 0.3, 160.0, ("elikor", "krona", "bosch", "gorenje")),
    ("appliances.kitchen.mixer", 0.3, 45.0, ("bosch", "philips", "kenwood", "braun")),
    ("furniture.kitchen.table", 0.3, 120.0, ("brw", "ikea", "mebelson")),
    ("electronics.camera.photo", 0.3, 450.0, ("canon", "nikon", "sony", "fujifilm")),
    ("computers.peripherals.printer", 0.3, 180.0, ("hp", "canon", "epson", "brother")),
    ("computers.peripherals.monitor", 0.3, 190.0, ("samsung", "lg", "acer", "asus", "aoc")),
    ("kids.toys", 0.3, 25.0, ("lego", "hasbro", "mattel", "playmobil")),
    ("apparel.costume", 0.25, 55.0, ("adidas", "nike", "puma", "reebok")),
    ("appliances.personal.hair_cutter", 0.25, 35.0, ("philips", "braun", "panasonic", "moser")),
    ("appliances.kitchen.coffee_machine", 0.25, 250.0, ("delonghi", "philips", "krups", "bosch")),
    ("accessories.wallet", 0.2, 30.0, ("tommy", "wenger", "piquadro")),
    ("sport.trainer", 0.2, 300.0, ("torneo", "oxygen", "carbon")),
    ("electronics.audio.acoustic", 0.2, 110.0, ("jbl", "sony", "edifier", "sven")),
    ("construction.components.faucet", 0.2, 60.0, ("grohe", "hansgrohe", "lemark", "ideal")),
    ("country_yard.cultivator", 0.15, 300.0, ("huter", "patriot", "champion")),
    ("medicine.tools.tonometer", 0.15, 35.0, ("omron", "and", "microlife")),
    ("stationery.cartrige", 0.15, 40.0, ("hp", "canon", "epson")),
    ("auto.accessories.compressor", 0.15, 45.0, ("berkut", "airline", "autoprofi")),
    ("electronics.video.projector", 0.1, 380.0, ("epson", "benq", "acer", "optoma")),
    ("appliances.personal.massager", 0.1, 60.0, ("gezatone", "beurer", "medisana")),
)

# fmt: off
# Brands of products whose category has no code in REES46 (tyres, jewellery, cosmetics, ...).
_UNCODED_BRANDS = (
    "shiseido", "lucente", "cordiant", "triangle", "sokolov", "yokohama", "nokian", "creed",
    "dauscher", "oasis", "luminarc", "elenberg", "respect", "vitek", "sv", "casio", "karcher",
    "tefal", "pulsar", "michelin", "bridgestone", "continental", "estel", "loreal", "garnier",
    "nivea", "lancome", "dior", "chanel", "gucci", "versace", "guess", "fossil", "swarovski",
    "pandora", "kapous", "runail", "irisk", "masura", "grattol", "cnd", "ingarden", "uno",
    "polarus", "barum", "toyo", "matador", "kama", "amtel", "viatti",
)
# fmt: on
_N_UNCODED_CATEGORIES = 40
_PREMIUM_BRANDS = {"apple": 1.8, "dyson": 1.8, "sennheiser": 1.5, "dior": 1.6, "chanel": 1.7, "gucci": 1.7}


@dataclass(frozen=True)
class Catalog:
    """The product universe for one seed, indexed by popularity rank.

    Attributes:
        product_id: Product ids (int64).
        category: Index into ``category_ids`` / ``category_codes`` per product.
        category_ids: 19-digit category ids per category.
        category_codes: Category codes per category ("" when the category has none).
        brand: Current brand per product ("" when unknown).
        old_brand: The brand listed first in the products file for repeated products.
        repeated: Whether the products file lists the product twice.
        price_cents: Base price in cents.
        popularity: Relative view weight (Zipf-like in the rank).
        segment: Pre-formatted ``product_id,category_id,category_code,brand,price`` per product.
    """

    product_id: np.ndarray
    category: np.ndarray
    category_ids: np.ndarray
    category_codes: tuple[str, ...]
    brand: tuple[str, ...]
    old_brand: tuple[str, ...]
    repeated: np.ndarray
    price_cents: np.ndarray
    popularity: np.ndarray
    segment: pa.StringArray

    def __len__(self) -> int:
        return len(self.product_id)


@functools.lru_cache(maxsize=4)
def build_catalog(seed: int) -> Catalog:
    """Builds the product universe for ``seed`` (independent of any row count or date).

    Args:
        seed: The user seed.

    Returns:
        The catalog of ``UNIVERSE_SIZE`` products.
    """
    rng = make_rng(seed, STREAM_CATALOG)
    n = UNIVERSE_SIZE
    ranks = np.arange(n)
    popularity = (ranks + 10.0) ** -1.05

    # Categories: the coded ones from the table plus anonymous ones (REES46 ships category ids
    # without a code for about a third of its traffic).
    n_coded_cats = len(_CODED_CATEGORIES)
    codes = [c[0] for c in _CODED_CATEGORIES] + [""] * _N_UNCODED_CATEGORIES
    n_cats = len(codes)
    coded_weights = np.array([c[1] for c in _CODED_CATEGORIES])
    medians = np.concatenate(
        [np.array([c[2] for c in _CODED_CATEGORIES]), rng.lognormal(np.log(80.0), 0.9, _N_UNCODED_CATEGORIES)]
    )
    pools: list[tuple[str, ...]] = [c[3] for c in _CODED_CATEGORIES]
    for _ in range(_N_UNCODED_CATEGORIES):
        size = int(rng.integers(3, 9))
        pools.append(tuple(np.array(_UNCODED_BRANDS)[rng.choice(len(_UNCODED_BRANDS), size, replace=False)]))
    category_ids = 2053013552000000000 + np.cumsum(rng.integers(10**7, 4 * 10**8, size=n_cats))
    category_ids = category_ids[rng.permutation(n_cats)]
    prefixes = 10 + rng.choice(490, size=n_cats, replace=False)

    uncoded = stratified_flags(rng, n, _EMPTY_CODE_SHARE)
    category = np.empty(n, dtype=np.int64)
    category[~uncoded] = rng.choice(
        n_coded_cats, size=int((~uncoded).sum()), p=coded_weights / coded_weights.sum()
    )
    uncoded_weights = 1.0 / (np.arange(_N_UNCODED_CATEGORIES) + 2.0)
    category[uncoded] = n_coded_cats + rng.choice(
        _N_UNCODED_CATEGORIES, size=int(uncoded.sum()), p=uncoded_weights / uncoded_weights.sum()
    )

    # Brands: skewed towards the first brands of each category's pool.
    pool_pos = rng.random(n) ** 1.8
    empty_brand = stratified_flags(rng, n, _EMPTY_BRAND_SHARE)
    brand_vocab = sorted({b for pool in pools for b in pool})
    brand_factor = dict(zip(brand_vocab, rng.lognormal(0.0, 0.25, len(brand_vocab)), strict=True))
    brand_factor.update(_PREMIUM_BRANDS)
    brands = np.empty(n, dtype=object)
    for cat in range(n_cats):
        members = np.flatnonzero(category == cat)
        pool = np.array(pools[cat], dtype=object)
        brands[members] = pool[(pool_pos[members] * len(pool)).astype(np.int64)]
    factors = np.array([brand_factor[b] for b in brands])
    brands[empty_brand] = ""

    price = medians[category] * factors * rng.lognormal(0.0, 0.5, n)
    price_cents = np.maximum(np.round(price * 100.0), 50).astype(np.int64)

    # Ids like REES46: a category prefix followed by five digits (1004237, 17200506).
    product_id = np.empty(n, dtype=np.int64)
    for cat in range(n_cats):
        members = np.flatnonzero(category == cat)
        members = members[rng.permutation(len(members))]
        max_gap = max(1, min(5, 99_000 // max(len(members), 1)))
        seq = np.cumsum(rng.integers(1, max_gap + 1, size=len(members)))
        product_id[members] = prefixes[cat] * 100_000 + seq

    repeated = rng.random(n) < _REPEATED_SHARE
    old_brand = brands.copy()
    for i in np.flatnonzero(repeated):
        pool = pools[category[i]]
        candidates = [b for b in pool if b != brands[i]]
        if brands[i] and (rng.random() < 0.4 or not candidates):
            old_brand[i] = ""
        else:
            old_brand[i] = candidates[int(rng.integers(0, len(candidates)))]

    segment = plain_array(
        [
            f"{pid},{category_ids[cat]},{codes[cat]},{brand},{cents // 100}.{cents % 100:02d}"
            for pid, cat, brand, cents in zip(
                product_id.tolist(), category.tolist(), brands.tolist(), price_cents.tolist(), strict=True
            )
        ]
    )
    return Catalog(
        product_id=product_id,
        category=category,
        category_ids=category_ids,
        category_codes=tuple(codes),
        brand=tuple(brands.tolist()),
        old_brand=tuple(old_brand.tolist()),
        repeated=repeated,
        price_cents=price_cents,
        popularity=popularity,
        segment=segment,
    )


def _product_fields(catalog: Catalog, index: np.ndarray, use_old_brand: np.ndarray) -> list[pa.Array]:
    """The four formatted fields of the given products."""
    brand = [
        catalog.old_brand[i] if old else catalog.brand[i]
        for i, old in zip(index.tolist(), use_old_brand.tolist(), strict=True)
    ]
    category = catalog.category[index]
    return [
        plain_array([str(v) for v in catalog.product_id[index].tolist()]),
        plain_array([str(v) for v in catalog.category_ids[category].tolist()]),
        plain_array([catalog.category_codes[c] for c in category.tolist()]),
        plain_array(brand),
    ]


def _break_number(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
    bad = choose_strings(rng, ("abc", "1.2.3", "n/a"), len(rows))
    on_product = pa.array(rng.random(len(rows)) < 0.5)
    fields[0] = pc.if_else(on_product, bad, fields[0])
    fields[1] = pc.if_else(on_product, fields[1], bad)


def _break_missing_id(fields: list[pa.Array], rows: np.ndarray, rng: np.random.Generator) -> None:
    replace_field(fields, 0, "")


def generate_products(
    out_dir: Path,
    *,
    rows: int | None,
    seed: int,
    dirty_fraction: float,
    progress: ProgressCallback | None,
) -> GenerationResult:
    """Writes ``products.csv.gz``: the first ``rows`` products of the universe for ``seed``.

    Products flagged as repeated are listed twice: first with an older brand in their rank
    position, then again at the end of the file with the current brand (the latest row wins).

    Args:
        out_dir: Existing output folder.
        rows: Distinct products to list (default: the whole universe).
        seed: The user seed; the same seed gives the catalog the clickstream uses.
        dirty_fraction: Share of rows to replace with bad rows.
        progress: Called with the number of rows written.

    Returns:
        What was written; ``rows`` counts the repeated rows too.
    """
    n = UNIVERSE_SIZE if rows is None else rows
    if n > UNIVERSE_SIZE:
        raise ValueError(
            f"products rows must be at most {UNIVERSE_SIZE} (the product universe the clickstream "
            f"draws from), got {n}; omit rows to list the whole universe"
        )
    catalog = build_catalog(seed)
    first = np.arange(n)
    repeats = first[catalog.repeated[:n]]
    index = np.concatenate([first, repeats])
    use_old = np.concatenate([catalog.repeated[:n], np.zeros(len(repeats), dtype=bool)])
    fields = _product_fields(catalog, index, use_old)
    lines = join_lines(fields)

    injector = DirtyInjector(
        fraction=dirty_fraction,
        seed=seed,
        kinds=PRODUCTS_DIRTY_KINDS,
        breakers={"bad_number": _break_number, "missing_id": _break_missing_id},
    )
    lines = injector.apply(lines, lambda pos: [f.take(pa.array(pos)) for f in fields])

    path = out_dir / "products.csv.gz"
    with GzipLineWriter(path, PRODUCTS_HEADER) as writer:
        writer.write_lines(lines)
    if progress is not None:
        progress(len(lines))
    return GenerationResult(
        source="products",
        files=[path],
        rows=len(lines),
        dirty_rows=injector.total,
        truth_file=None,
        dirty_by_kind=injector.by_kind(),
    )
