"""The catalog: every table's declaration, lineage and selection syntax."""

from shoplake.catalog.registry import Catalog, default_catalog

__all__ = ["Catalog", "default_catalog"]
