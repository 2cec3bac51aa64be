"""Maintenance removes the staging folders of writes that never finished (Spark writes into a `_` folder
inside the table's, which Delta's vacuum does not look into), once they are older than the retention."""

from __future__ import annotations

import os
import time

from shoplake.engines.delta import WRITER_STAGING_PREFIX
from shoplake.maintenance import maintain

from .shop import PRODUCTS_HEADER, Shop

TABLE = "bronze.products"


def _left_staging(shop: Shop, name: str, *, hours_ago: float):
    folder = shop.lake.store.path(TABLE) / f"{WRITER_STAGING_PREFIX}{name}"
    folder.mkdir()
    part = folder / "part-00000-x-c000.zstd.parquet"
    part.write_bytes(b"PAR1 left by a killed writer")
    then = time.time() - hours_ago * 3600
    os.utime(part, (then, then))
    return folder


def test_maintenance_removes_staging_folders_older_than_the_retention_and_keeps_newer_ones(tmp_path):
    shop = Shop(tmp_path)
    shop.ingest("products", PRODUCTS_HEADER, "1,10,a.b,x", "2,10,a.b,y")
    old = _left_staging(shop, "old", hours_ago=3)
    fresh = _left_staging(shop, "fresh", hours_ago=0)

    dry = maintain(shop.lake, TABLE, compact=False, retain_hours=2, allow_short_retention=True, dry_run=True)
    assert dry.files_vacuumed == 1 and old.exists()  # a dry run counts and removes nothing

    done = maintain(shop.lake, TABLE, compact=False, retain_hours=2, allow_short_retention=True)
    assert done.files_vacuumed == 1
    assert not old.exists()
    assert fresh.exists()  # a write may still be running in it
    assert shop.count(TABLE) == 2
