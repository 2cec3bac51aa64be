"""Realistic synthetic sources for shoplake: clickstream, products and retail.

Files follow the source schemas of ``DATA_CONTRACT.md`` (REES46 clickstream, its product catalog and
UCI Online Retail) with their statistical shape: funnel shares, heavy-tailed popularity and
activity, seasonality, cancellations, guests and duplicates. Latent customer classes are planted and
written to truth side files so that segmentation models can be checked, and an optional share of
realistic bad rows exercises quarantine and the row ledger.

Example:
    >>> from pathlib import Path
    >>> from shoplake.synth import generate
    >>> result = generate("clickstream", Path("data/raw"), rows=100_000, seed=7)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from shoplake.sources import schemas
from shoplake.synth._common import DIRTY_KINDS, GenerationResult, ProgressCallback
from shoplake.synth.clickstream import generate_clickstream
from shoplake.synth.products import UNIVERSE_SIZE, generate_products
from shoplake.synth.retail import generate_retail

__all__ = ["DEFAULT_ROWS", "DIRTY_KINDS", "SOURCES", "GenerationResult", "generate"]

SOURCES = tuple(schemas.SOURCES)
DEFAULT_ROWS = {"clickstream": 2_000_000, "products": UNIVERSE_SIZE, "retail": 540_000}


def _is_positive_int(value: object) -> bool:
    return bool(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0)


def generate(
    source: str,
    out_dir: Path,
    *,
    rows: int | None = None,
    seed: int = 42,
    start: dt.date = dt.date(2019, 10, 1),
    days: int = 31,
    dirty_fraction: float = 0.0,
    progress: ProgressCallback | None = None,
) -> GenerationResult:
    """Generates one synthetic source as a single gzip CSV in ``out_dir``.

    The same arguments always give byte-identical files. A clickstream and a products file made
    with the same ``seed`` share the product catalog.

    Args:
        source: ``clickstream``, ``products`` or ``retail``.
        out_dir: Output folder, created if missing. Files: ``<source>.csv.gz``, plus
            ``_truth/clickstream_truth_users.csv`` or ``_truth/retail_truth_customers.csv`` (in a
            ``_``-prefixed folder, so ingesting ``out_dir`` reads the data file only).
        rows: Data rows to write. Defaults: clickstream 2,000,000; retail 540,000; products the
            whole universe (50,000 distinct products; the ~1% listed twice come on top).
        seed: Seed of every random draw.
        start: First day (UTC) of events or invoices.
        days: Number of days covered.
        dirty_fraction: Share of rows replaced by bad rows (wrong column count, bad timestamp,
            non-numeric number, missing id, unknown event type, exact duplicate), in [0, 0.5).
        progress: Called with the number of rows written since the previous call.

    Returns:
        The files written, row counts and dirty-row counts by kind.

    Raises:
        ValueError: If the source is unknown or an argument is out of range.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    if rows is not None and not _is_positive_int(rows):
        raise ValueError(f"rows must be a positive integer, got {rows!r}")
    if not _is_positive_int(days):
        raise ValueError(f"days must be a positive integer, got {days!r}")
    if not 0.0 <= dirty_fraction < 0.5:
        raise ValueError(f"dirty_fraction must be in [0, 0.5), got {dirty_fraction!r}")
    if not isinstance(start, dt.date):
        raise ValueError(f"start must be a datetime.date, got {start!r}")
    if isinstance(start, dt.datetime):
        start = start.date()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(seed)
    days = int(days)
    dirty_fraction = float(dirty_fraction)
    if source == "products":
        return generate_products(
            out_dir,
            rows=None if rows is None else int(rows),
            seed=seed,
            dirty_fraction=dirty_fraction,
            progress=progress,
        )
    n_rows = DEFAULT_ROWS[source] if rows is None else int(rows)
    generator = generate_clickstream if source == "clickstream" else generate_retail
    return generator(
        out_dir,
        rows=n_rows,
        seed=seed,
        start=start,
        days=days,
        dirty_fraction=dirty_fraction,
        progress=progress,
    )
