"""How dashboard tables show values: quantities with separators, ids and versions as plain labels."""

from __future__ import annotations

from datetime import datetime

from shoplake.serve.pages import grid


def test_ids_and_versions_are_labels_and_counts_are_quantities():
    rows = [{"user_id": 510054370, "model_version": 12345, "count_users": 2607, "revenue": 735197.456,
             "share": 0.69521, "cutoff_at": datetime(2019, 11, 10), "brand": None}]
    assert grid(rows).rows == [["510054370", "12345", "2,607", "735,197.46", "0.6952", "2019-11-10 00:00:00", ""]]
