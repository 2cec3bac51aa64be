"""The catalog: declarations against the data contract, lineage and the selection syntax."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from shoplake.catalog import Catalog
from shoplake.catalog.spec import TableSpec, col
from shoplake.errors import ConfigError, TableNotFoundError

# Written by the ML subsystem (shoplake.ml, declared in shoplake.layers.ml; its tests are in tests/ml).
NON_CORE = {"gold.user_segments", "gold.customer_segments", "gold.conversion_predictions"}
# gold.prediction_outcomes joins earlier predictions to the events that followed them.
CLICK_ML = {"gold.user_segments", "gold.user_segment_profiles", "gold.conversion_predictions",
            "gold.prediction_outcomes", "gold.user_recommendations", "gold.similar_products"}
RETAIL_ML = {"gold.customer_clv", "gold.customer_segments", "gold.customer_segment_profiles"}

SILVER = ["silver.products", "silver.events", "silver.sales", "silver.returns"]
CLICK_GOLD = {"gold.daily_funnel", "gold.user_features", "gold.product_performance", "gold.cart_abandonment",
              "gold.retention_cohorts", "gold.funnel_view_cart_purchase", "gold.funnel_product_view_to_purchase",
              "gold.funnel_product_view_to_purchase_entries", "gold.funnel_view_cart_purchase_entries"}
RETAIL_GOLD = {"gold.daily_sales_by_country", "gold.customer_rfm", "gold.product_sales", "gold.customer_cohorts"}


def _names(specs: list[TableSpec]) -> list[str]:
    return [s.name for s in specs]


def _assert_dependency_order(catalog: Catalog, names: list[str]) -> None:
    position = {n: i for i, n in enumerate(names)}
    for name in names:
        for parent in catalog.ancestors(name):
            if parent in position:
                assert position[parent] < position[name], f"{parent} must come before {name}"


# -- contract ------------------------------------------------------------------------------------------

def test_catalog_declares_every_core_contract_table_with_its_columns(catalog, contract_required):
    core = {name: cols for name, cols in contract_required.items() if name not in NON_CORE}
    assert len(core) == len(contract_required) - len(NON_CORE)
    missing_tables = [name for name in core if name not in catalog]
    assert missing_tables == []
    missing_columns = {name: [c for c in cols if c not in catalog.get(name).column_names]
                       for name, cols in core.items()}
    assert {k: v for k, v in missing_columns.items() if v} == {}


def test_catalog_contract_column_types_follow_naming_conventions(catalog):
    for spec in catalog:
        for column in spec.columns:
            if column.name.endswith("_at"):
                assert column.type == "TIMESTAMPTZ", (spec.name, column.name)
            elif column.name.endswith("_date"):
                assert column.type == "DATE", (spec.name, column.name)
            elif column.name.startswith("count_"):
                assert column.type == "BIGINT", (spec.name, column.name)
            elif column.name.endswith("_rate"):
                assert column.type == "DOUBLE", (spec.name, column.name)


def test_catalog_descriptions_state_the_grain(catalog):
    for spec in catalog:
        assert spec.description.startswith("One row per"), spec.name
        assert spec.grain, spec.name


def test_catalog_bronze_tables_carry_lineage_columns(catalog):
    for name in ("bronze.clickstream", "bronze.products", "bronze.retail"):
        lineage = {"_source_file", "_source_row", "_batch_id", "_ingested_at"}
        assert lineage <= set(catalog.get(name).column_names)


def test_catalog_quarantine_tables_keep_raw_row_and_reason(catalog):
    for source in ("clickstream", "products", "retail"):
        spec = catalog.get(f"quarantine.{source}")
        bronze = catalog.get(f"bronze.{source}")
        raw = [c for c in bronze.column_names if not c.startswith("_")]
        assert set(raw) <= set(spec.column_names)
        assert {"reason", "_source_file", "_batch_id", "_ingested_at"} <= set(spec.column_names)


def test_catalog_sql_reads_exactly_its_declared_inputs(catalog):
    for spec in catalog:
        if spec.build not in ("incremental", "full"):
            continue
        tree = sqlglot.parse_one(spec.sql(), dialect="duckdb")
        read = {f"{t.db}.{t.name}" for t in tree.find_all(exp.Table) if t.db}
        assert read == set(spec.inputs), spec.name


# -- lineage -------------------------------------------------------------------------------------------

def test_catalog_upstream_is_the_declared_inputs(catalog):
    assert catalog.upstream("gold.daily_funnel") == ["silver.events"]
    assert catalog.upstream("silver.events") == ["bronze.clickstream", "silver.products"]
    assert set(catalog.upstream("gold.customer_rfm")) == {"silver.sales", "silver.returns"}
    assert catalog.upstream("bronze.retail") == []


def test_catalog_downstream_is_who_reads_the_table(catalog):
    assert set(catalog.downstream("silver.events")) == CLICK_GOLD | {
        "gold.conversion_predictions", "gold.prediction_outcomes", "gold.user_recommendations",
        "gold.similar_products"}
    assert set(catalog.downstream("bronze.retail")) == {"silver.sales", "silver.returns"}
    assert set(catalog.downstream("silver.products")) == {"silver.events"}
    assert catalog.downstream("gold.daily_funnel") == []


def test_catalog_ancestors_and_descendants_are_transitive(catalog):
    assert catalog.ancestors("gold.daily_funnel") == {
        "silver.events", "bronze.clickstream", "silver.products", "bronze.products"}
    assert catalog.descendants("bronze.products") == {"silver.products", "silver.events", *CLICK_GOLD, *CLICK_ML}
    assert catalog.descendants("bronze.retail") == {"silver.sales", "silver.returns", *RETAIL_GOLD, *RETAIL_ML}


def test_catalog_lineage_of_unknown_table_suggests_a_name(catalog):
    with pytest.raises(TableNotFoundError, match="did you mean gold.daily_funnel"):
        catalog.upstream("gold.daily_funel")
    with pytest.raises(TableNotFoundError, match="no table named 'gold.nope'"):
        catalog.downstream("gold.nope")


def test_catalog_ordered_puts_inputs_first(catalog):
    names = _names(catalog.ordered())
    assert set(names) == {s.name for s in catalog}
    _assert_dependency_order(catalog, names)


# -- selection -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("selection", [None, "", "   "])
def test_catalog_select_nothing_means_every_derived_table(catalog, selection):
    names = _names(catalog.select(selection))
    assert set(names) == set(SILVER) | CLICK_GOLD | RETAIL_GOLD
    _assert_dependency_order(catalog, names)


@pytest.mark.parametrize(("selection", "expected"), [
    ("silver.events", {"silver.events"}),
    ("gold.daily_funnel+", {"gold.daily_funnel"}),
    ("silver.events+", {"silver.events", *CLICK_GOLD}),
    ("+gold.daily_funnel", {"gold.daily_funnel", "silver.events", "silver.products"}),
    ("+gold.customer_rfm", {"gold.customer_rfm", "silver.sales", "silver.returns"}),
    ("silver", set(SILVER)),
    ("gold", CLICK_GOLD | RETAIL_GOLD),
    ("silver+", set(SILVER) | CLICK_GOLD | RETAIL_GOLD),
    ("+gold", set(SILVER) | CLICK_GOLD | RETAIL_GOLD),  # a layer with its upstream, like a table
    ("+silver.events", {"silver.events", "silver.products"}),
    ("bronze.retail+", {"silver.sales", "silver.returns", *RETAIL_GOLD}),
    ("+bronze.retail", set()),
    ("silver.sales, silver.returns", {"silver.sales", "silver.returns"}),
    ("silver.sales gold.daily_funnel", {"silver.sales", "gold.daily_funnel"}),
    ("silver.products+ gold.product_sales", {"silver.products", "silver.events", *CLICK_GOLD,
                                             "gold.product_sales"}),
])
def test_catalog_select_syntax(catalog, selection, expected):
    names = _names(catalog.select(selection))
    assert set(names) == expected
    assert len(names) == len(set(names))
    _assert_dependency_order(catalog, names)


def test_catalog_select_a_bronze_table_alone_is_a_config_error(catalog):
    with pytest.raises(ConfigError, match=r"bronze.retail is not built by `shoplake build`.*bronze.retail\+"):
        catalog.select("bronze.retail")


def test_catalog_select_unknown_table(catalog):
    with pytest.raises(TableNotFoundError, match="did you mean silver.events"):
        catalog.select("silver.event+")


# -- construction --------------------------------------------------------------------------------------

def _spec(name: str, inputs: tuple[str, ...] = ()) -> TableSpec:
    return TableSpec(name=name, description=f"One row per x in {name}.", grain=("x",),
                     columns=(col("x", "BIGINT"),), inputs=inputs, build="full" if inputs else "ingest",
                     sql_file="t.sql" if inputs else None)


def test_catalog_rejects_duplicates_unknown_inputs_and_cycles():
    with pytest.raises(ValueError, match="declared twice"):
        Catalog([_spec("bronze.a"), _spec("bronze.a")])
    with pytest.raises(ValueError, match="unknown inputs"):
        Catalog([_spec("silver.b", ("bronze.missing",))])
    with pytest.raises(ValueError, match="cycle"):
        Catalog([_spec("silver.b", ("silver.c",)), _spec("silver.c", ("silver.b",))])


def test_catalog_small_graph_selection():
    catalog = Catalog([_spec("bronze.a"), _spec("silver.b", ("bronze.a",)), _spec("gold.c", ("silver.b",)),
                       _spec("gold.d", ("silver.b",))])
    names = _names(catalog.select("silver.b+"))
    assert names[0] == "silver.b" and set(names) == {"silver.b", "gold.c", "gold.d"}
    assert _names(catalog.select("+gold.c")) == ["silver.b", "gold.c"]
    assert _names(catalog.select("bronze.a+"))[0] == "silver.b"


def test_a_shared_relation_is_a_plain_temporary_name_of_a_full_table():
    """Shared relations are materialized under their own name beside the lake's tables, so a name that is a
    table's `layer.name`, or the build's own `candidate`, is refused, as is one on a table that is not full."""
    from dataclasses import replace

    table = _spec("gold.t", inputs=("bronze.a",))
    latest = ("latest", "SELECT max(x) AS latest FROM bronze.a")
    assert replace(table, shared_relations=(latest,)).shared_relations == (latest,)
    for name in ("silver.events", "candidate", "Latest", "1st", "a b"):
        with pytest.raises(ValueError, match="shared relation names"):
            replace(table, shared_relations=((name, latest[1]),))
    with pytest.raises(ValueError, match="only full tables read shared relations"):
        replace(table, build="incremental", source="s", shared_relations=(latest,))
