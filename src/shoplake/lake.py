"""The lake as a whole: settings, Delta storage, the catalog and the engine, opened once per command."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

from shoplake.catalog import Catalog, default_catalog
from shoplake.config import Settings
from shoplake.engines.delta import DeltaStore
from shoplake.errors import EngineUnavailableError


def new_run_id() -> str:
    """A sortable, unique run id such as `20261122T010203-1a2b3c`."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Lake:
    """Everything a command needs to read and write the lake."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None):
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.store = DeltaStore(settings.lake)

    def engine(self):
        """A fresh engine session for the configured engine."""
        if self.settings.engine == "duckdb":
            from shoplake.engines.duckdb import DuckDBEngine

            return DuckDBEngine(self.settings, self.store)
        if self.settings.engine == "spark":
            from shoplake.engines.spark import SparkEngine

            return SparkEngine(self.settings, self.store)
        raise EngineUnavailableError(f"engine {self.settings.engine!r} is not available; "
                                     f"use --engine duckdb or --engine spark")

    def embedded(self) -> Lake:
        """The same lake on the embedded engine, whatever `engine` is configured.

        Interactive SQL, the dashboard, the SQL API (whose sandbox, time travel and timeouts are DuckDB
        features) and the model inputs (DuckDB SQL audited for leakage) always run embedded; only
        ingestion, Silver/Gold builds and the scoring inference move to Spark with `engine = "spark"`.
        """
        if self.settings.engine == "duckdb":
            return self
        return Lake(replace(self.settings, engine="duckdb"), self.catalog)

    def ensure_operational_tables(self) -> None:
        """Create the (empty) quarantine and ops tables, so they are queryable from the first run."""
        for spec in self.catalog:
            if spec.build == "external":
                self.store.create_empty(spec.name, spec.arrow_schema, description=spec.description)
