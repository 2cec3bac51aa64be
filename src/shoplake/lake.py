"""The lake as a whole: settings, Delta storage, the catalog and the engine, opened once per command."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from importlib import import_module

from shoplake import locks
from shoplake.catalog import Catalog, catalog_for
from shoplake.config import Settings
from shoplake.engines.base import EMBEDDED, ENGINES, Capability, Engine
from shoplake.engines.delta import DeltaStore
from shoplake.errors import EngineUnavailableError, LakeNotWritableError


def _engine_class(name: str) -> type[Engine]:
    if name not in ENGINES:
        raise EngineUnavailableError(f"engine {name!r} is not available; use --engine duckdb or --engine spark")
    module, _, attribute = ENGINES[name].partition(":")
    return getattr(import_module(module), attribute)


def new_run_id() -> str:
    """A sortable, unique run id such as `20261122T010203-1a2b3c`."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Lake:
    """Everything a command needs to read and write the lake."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None):
        self.settings = settings
        self.catalog = catalog or catalog_for(settings.funnels_file)
        self.store = DeltaStore(settings.lake)

    def engine(self, *needs: Capability) -> Engine:
        """A fresh engine session: the configured engine, or the embedded one when the configured engine
        lacks a capability the caller `needs`.

        Ingestion and Silver/Gold builds run on the configured engine; interactive SQL, the dashboard and
        the model inputs need `Capability.EMBEDDED_SQL` and so run embedded whatever is configured.
        """
        engine_class = self.engine_class()
        if not set(needs) <= engine_class.capabilities:
            engine_class = _engine_class(EMBEDDED)
        missing = set(needs) - engine_class.capabilities
        if missing:
            raise EngineUnavailableError(f"no engine offers {', '.join(sorted(missing))}")
        return engine_class(self.settings, self.store)

    def engine_class(self) -> type[Engine]:
        """The configured engine's class (its `capabilities`), without starting a session."""
        return _engine_class(self.settings.engine)

    def ensure_operational_tables(self) -> None:
        """Create the (empty) quarantine and ops tables, so they are queryable from the first run."""
        for spec in self.catalog:
            if spec.build == "external" and not self.store.exists(spec.name):
                with locks.writing(self.store.lake, [spec.name]):
                    self.store.create_empty(spec.name, spec.arrow_schema, description=spec.description)

    def ledgered_tables(self) -> list[str]:
        """Tables whose commits carry ledger entries (`TableSpec.is_ledgered`: every table but the ops tables,
        except the ML logs derived from other rows)."""
        return [spec.name for spec in self.catalog.ordered() if spec.is_ledgered]

    def sync_ledger(self, names: list[str] | None = None):
        """Copy into `ops.ledger` the entries that commits of `names` (default all) carry and it lacks."""
        from shoplake.quality.ledger import sync_ledger

        return sync_ledger(self.store, self.ledgered_tables() if names is None else names)

    def repair(self):
        """Finish the bookkeeping a killed process left undone: run by every writing command first.

        Returns the ledger entries that were missing (recorded now).
        """
        self.check_writable()
        return self.sync_ledger()

    def check_writable(self) -> None:
        """A one-line error, before any work, when the lake folder cannot be written."""
        lake = self.store.lake
        probe = lake if lake.exists() else next((p for p in lake.parents if p.exists()), lake)
        if not os.access(probe, os.W_OK | os.X_OK):
            kind = "lake" if probe == lake else "folder for the new lake"
            why = "read-only file system" if os.statvfs(probe).f_flag & os.ST_RDONLY else "permission denied"
            raise LakeNotWritableError(f"cannot write to the {kind} {probe.resolve()}: {why} "
                                       f"(the lake folder must be writable by this user; use --lake to choose "
                                       f"another)")
