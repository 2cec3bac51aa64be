"""The registry of all declared tables, lineage derived from their inputs, and table selection."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

from shoplake.catalog.spec import TableSpec
from shoplake.errors import ConfigError, TableNotFoundError


class Catalog:
    """All table declarations, with lineage and dependency order."""

    def __init__(self, specs: Iterable[TableSpec]):
        self._specs: dict[str, TableSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"table {spec.name} declared twice")
            self._specs[spec.name] = spec
        for spec in self._specs.values():
            unknown = [i for i in spec.inputs if i not in self._specs]
            if unknown:
                raise ValueError(f"{spec.name}: unknown inputs {unknown}")
        try:
            self._order = list(TopologicalSorter({s.name: s.inputs for s in self._specs.values()}).static_order())
        except CycleError as exc:
            raise ValueError(f"table inputs form a cycle: {exc.args[1]}") from exc

    def __iter__(self):
        return iter(self._specs.values())

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def get(self, name: str) -> TableSpec:
        try:
            return self._specs[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._specs, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see `shoplake tables`"
            raise TableNotFoundError(f"no table named {name!r} in the catalog{hint}") from None

    def upstream(self, name: str) -> list[str]:
        """Direct inputs of a table."""
        return list(self.get(name).inputs)

    def downstream(self, name: str) -> list[str]:
        """Tables that read this table directly."""
        self.get(name)
        return [s.name for s in self._specs.values() if name in s.inputs]

    def descendants(self, name: str) -> set[str]:
        found: set[str] = set()
        frontier = [name]
        while frontier:
            for child in self.downstream(frontier.pop()):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
        return found

    def ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        frontier = [name]
        while frontier:
            for parent in self.upstream(frontier.pop()):
                if parent not in found:
                    found.add(parent)
                    frontier.append(parent)
        return found

    def ordered(self, names: Iterable[str] | None = None) -> list[TableSpec]:
        """Specs in dependency order (inputs first), optionally restricted to `names`."""
        wanted = set(self._specs) if names is None else set(names)
        return [self._specs[n] for n in self._order if n in wanted]

    def select(self, selection: str | None) -> list[TableSpec]:
        """Derived tables (Silver/Gold) picked by a selection, in build order.

        Syntax (space or comma separated terms): `silver.events` (one table), `gold.daily_funnel+`
        (the table and everything downstream), `+gold.daily_funnel` (the table and everything upstream),
        `silver` or `gold` (a whole layer; `+` works on a layer as on a table). No selection means every
        derived table.
        """
        derived = {s.name for s in self._specs.values() if s.build in ("incremental", "full")}
        if not selection or not selection.strip():
            return self.ordered(derived)
        picked: set[str] = set()
        for term in selection.replace(",", " ").split():
            down, up = term.endswith("+"), term.startswith("+")
            name = term.strip("+")
            if name in ("silver", "gold"):
                layer = {n for n in derived if n.startswith(name + ".")}
                picked |= layer
                for member in layer:
                    if down:
                        picked |= self.descendants(member)
                    if up:
                        picked |= self.ancestors(member)
                continue
            spec = self.get(name)
            if spec.name not in derived and not (down or up):
                raise ConfigError(f"{name} is not built by `shoplake build` (it is a {spec.build} table); "
                                  f"use {name}+ to build what depends on it")
            picked.add(spec.name)
            if down:
                picked |= self.descendants(spec.name)
            if up:
                picked |= self.ancestors(spec.name)
        return self.ordered(picked & derived)


def _catalog(user_funnels: Path | None) -> Catalog:
    from shoplake.catalog.funnels import funnel_specs, load_funnels
    from shoplake.layers import bronze, gold, ml, ops, silver

    funnels = funnel_specs(load_funnels(user_funnels))
    return Catalog((*bronze.TABLES, *silver.TABLES, *gold.TABLES, *funnels, *ml.TABLES, *ops.TABLES))


@cache
def default_catalog() -> Catalog:
    """The catalog of every table shoplake publishes (with the funnels shipped with shoplake)."""
    return _catalog(None)


def catalog_for(funnels_file: Path | None = None, *, cwd: Path | None = None) -> Catalog:
    """The catalog of a project: the default one, plus the funnels of its funnel file (the `funnels_file`
    setting, else `shoplake-funnels.yaml` in the working directory when present)."""
    from shoplake.catalog.funnels import user_funnels_file

    user = user_funnels_file(funnels_file, cwd)
    return default_catalog() if user is None else _catalog(user)
