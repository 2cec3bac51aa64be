"""Helpers for the per-table tests: a lake in a temp folder fed literal CSV rows, read back as dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shoplake.build import BuildResult, build_tables
from shoplake.catalog import Catalog
from shoplake.config import load_settings
from shoplake.ingest import IngestResult, ingest_files
from shoplake.lake import Lake
from shoplake.query import run_query

CLICKSTREAM_HEADER = ("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,"
                      "user_session")
COSMETICS_HEADER = "event_time,event_type,product_id,price,user_id,user_session"
PRODUCTS_HEADER = "product_id,category_id,category_code,brand"
RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
RETAIL_II_HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"


class Shop:
    """A lake in a temp folder plus helpers to feed it CSV rows and read tables back."""

    def __init__(self, root: Path, catalog: Catalog | None = None):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.lake = Lake(load_settings(env={}, lake=root / "lake"), catalog)
        self._files = 0

    def csv(self, header: str, *lines: str, name: str | None = None) -> Path:
        """Write a CSV file with `header` and `lines` (one source row each)."""
        self._files += 1
        path = self.root / (name or f"input_{self._files}.csv")
        path.write_text("\n".join((header, *lines)) + "\n")
        return path

    def ingest(self, source: str, header: str, *lines: str, run_id: str = "ingest") -> IngestResult:
        """Write one file and ingest it; returns that file's result."""
        return self.ingest_path(source, self.csv(header, *lines), run_id=run_id)

    def ingest_path(self, source: str, path: Path, *, run_id: str = "ingest") -> IngestResult:
        (result,) = ingest_files(self.lake, source, [str(path)], run_id=run_id)
        return result

    def build(self, selection: str | None = None, *, run_id: str = "build") -> dict[str, BuildResult]:
        """Build and return the results by table name (in build order)."""
        return {r.table: r for r in build_tables(self.lake, selection, run_id=run_id)}

    def query(self, sql: str) -> list[dict[str, Any]]:
        return run_query(self.lake, sql).to_pylist()

    def count(self, table: str) -> int:
        return self.query(f"SELECT count(*) AS n FROM {table}")[0]["n"]

    def ledger(self, table: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """ops.ledger rows of one table (optionally one run), oldest first, `diverted` decoded."""
        rows = [r for r in self.query("SELECT * FROM ops.ledger ORDER BY recorded_at")
                if r["table_name"] == table and (run_id is None or r["run_id"] == run_id)]
        for r in rows:
            r["diverted"] = json.loads(r["diverted"])
        return rows

    def balance(self, table: str) -> tuple[int, int, int, bool]:
        """(rows_in, rows_out, rows_written, is_balanced) of a table's only ledger entry."""
        (entry,) = self.ledger(table)
        return entry["rows_in"], entry["rows_out"], entry["rows_written"], entry["is_balanced"]

    def versions(self) -> dict[str, int | None]:
        """The Delta version of every table in the catalog (None: not written)."""
        return {spec.name: self.lake.store.version(spec.name) for spec in self.lake.catalog}


def by(rows: list[dict[str, Any]], key: str) -> dict[Any, dict[str, Any]]:
    """Index rows by one column (which must be unique)."""
    indexed = {r[key]: r for r in rows}
    assert len(indexed) == len(rows), f"{key} is not unique in {rows}"
    return indexed
