"""The catalog: every table's declaration, lineage and selection syntax."""

from shoplake.catalog.registry import Catalog, catalog_for, default_catalog

__all__ = ["Catalog", "catalog_for", "default_catalog"]
