"""What PostgreSQL clients ask before the user's query, answered from the shoplake catalog.

BI tools, drivers and psql probe `pg_catalog` and `information_schema` (and call `version()`,
`current_schema()`, `format_type()`, ...) before they run anything. Those names are answered from an
emulated catalog built from the table declarations the caller's role may read: schemas are the layers,
tables and columns are the declared ones with PostgreSQL types, descriptions come from the declarations.
Every `pg_catalog` and `information_schema` relation of PostgreSQL 15 exists with its real columns
(`pg_catalog_columns.json`), empty unless listed here, so a probe for something shoplake does not have
(policies, publications, inheritance, ...) finds no rows instead of failing. DuckDB's own system views are
never reachable: every catalog name is redirected to the emulation, which lives in its own sandboxed session
holding no lake data.

`translate` turns a client's PostgreSQL query (with its `$n` parameters) into the DuckDB query that runs:
sqlglot parses it as PostgreSQL, the parameters become literals of the tree, catalog names and functions are
redirected, and the tree is rendered as DuckDB SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp

from shoplake.catalog.registry import Catalog
from shoplake.catalog.spec import LAYERS
from shoplake.engines.duckdb import DuckDBEngine
from shoplake.errors import QueryError

SERVER_VERSION = "15.0"
VERSION_TEXT = f"PostgreSQL {SERVER_VERSION} (shoplake: Delta Lake tables through DuckDB)"
DATABASE = "shoplake"
OWNER = "shoplake"
# Schemas of the emulated catalog in the catalog session.
_SCHEMAS = {"pg_catalog": "pgc", "information_schema": "pgi"}
CATALOG_SCHEMAS = frozenset(_SCHEMAS.values())


@dataclass(frozen=True)
class PgType:
    oid: int
    name: str  # pg_type.typname
    display: str  # what format_type() and information_schema say
    length: int
    array: int


PG_TYPES = {t.oid: t for t in (
    PgType(16, "bool", "boolean", 1, 1000), PgType(17, "bytea", "bytea", -1, 1001),
    PgType(18, "char", '"char"', 1, 1002), PgType(19, "name", "name", 64, 1003),
    PgType(20, "int8", "bigint", 8, 1016), PgType(21, "int2", "smallint", 2, 1005),
    PgType(23, "int4", "integer", 4, 1007), PgType(25, "text", "text", -1, 1009),
    PgType(26, "oid", "oid", 4, 1028), PgType(114, "json", "json", -1, 199),
    PgType(700, "float4", "real", 4, 1021), PgType(701, "float8", "double precision", 8, 1022),
    PgType(1043, "varchar", "character varying", -1, 1015), PgType(1082, "date", "date", 4, 1182),
    PgType(1083, "time", "time without time zone", 8, 1183),
    PgType(1114, "timestamp", "timestamp without time zone", 8, 1115),
    PgType(1184, "timestamptz", "timestamp with time zone", 8, 1185),
    PgType(1186, "interval", "interval", 16, 1187), PgType(1700, "numeric", "numeric", -1, 1231),
    PgType(2950, "uuid", "uuid", 16, 2951),
)}
# Declared column types (DuckDB SQL types) as PostgreSQL types.
DECLARED_TYPES = {"BIGINT": 20, "INTEGER": 23, "DOUBLE": 701, "VARCHAR": 25, "BOOLEAN": 16, "DATE": 1082,
                  "TIMESTAMPTZ": 1184, "TIMESTAMP": 1114, "BLOB": 17}


def pg_type_of(arrow: pa.DataType) -> int:
    """The PostgreSQL type OID a result column of this Arrow type is sent as (text when nothing closer)."""
    checks = ((pa.types.is_boolean, 16), (pa.types.is_int8, 21), (pa.types.is_int16, 21),
              (pa.types.is_int32, 23), (pa.types.is_uint8, 21), (pa.types.is_uint16, 23),
              (pa.types.is_uint32, 20), (pa.types.is_int64, 20), (pa.types.is_uint64, 1700),
              (pa.types.is_float16, 700), (pa.types.is_float32, 700), (pa.types.is_float64, 701),
              (pa.types.is_decimal, 1700), (pa.types.is_date, 1082), (pa.types.is_time, 1083),
              (pa.types.is_duration, 1186), (pa.types.is_binary, 17), (pa.types.is_large_binary, 17))
    if pa.types.is_timestamp(arrow):
        return 1184 if arrow.tz else 1114
    for check, oid in checks:
        if check(arrow):
            return oid
    return 25


# -- the emulated catalog ---------------------------------------------------------------------------------
@cache
def _relations() -> dict[str, list[tuple[str, str]]]:
    data = json.loads((Path(__file__).with_name("pg_catalog_columns.json")).read_text())
    return {name: [tuple(c) for c in columns] for name, columns in data["relations"].items()}


def _duckdb_type(pg_type: str) -> str:
    """A DuckDB column type for a PostgreSQL catalog column type (as `format_type` names it)."""
    if pg_type.endswith("[]") or pg_type in ("int2vector", "oidvector"):
        element = pg_type.removesuffix("[]")
        return "BIGINT[]" if element in ("oid", "smallint", "integer", "int2vector", "oidvector") else "VARCHAR[]"
    if pg_type in ("oid", "bigint", "integer", "smallint", "xid", "regproc", "regtype",
                   "information_schema.cardinal_number"):
        return "BIGINT"
    if pg_type == "boolean":
        return "BOOLEAN"
    if pg_type in ("real", "double precision", "numeric"):
        return "DOUBLE"
    if pg_type in ("timestamp with time zone", "information_schema.time_stamp"):
        return "TIMESTAMPTZ"
    return "VARCHAR"


_NAMESPACE_OIDS = {"pg_catalog": 11, "public": 2200, "information_schema": 13181}
_FIRST_TABLE_OID = 20000


def _rows(catalog: Catalog, layers: frozenset[str]) -> dict[str, list[dict]]:
    """The rows of the populated catalog relations, for the tables of `layers`."""
    namespaces = dict(_NAMESPACE_OIDS) | {layer: 16384 + i for i, layer in enumerate(LAYERS) if layer in layers}
    rows: dict[str, list[dict]] = {name: [] for name in (
        "pg_namespace", "pg_class", "pg_attribute", "pg_type", "pg_description", "pg_am", "pg_database",
        "pg_roles", "pg_user", "tables", "columns", "schemata", "pg_tables")}
    for name, oid in namespaces.items():
        rows["pg_namespace"].append({"oid": oid, "nspname": name, "nspowner": 10})
        rows["schemata"].append({"catalog_name": DATABASE, "schema_name": name, "schema_owner": OWNER})
    for t in PG_TYPES.values():
        rows["pg_type"].append({"oid": t.oid, "typname": t.name, "typnamespace": 11, "typowner": 10,
                                "typlen": t.length, "typbyval": t.length in (1, 2, 4, 8), "typtype": "b",
                                "typisdefined": True, "typdelim": ",", "typrelid": 0, "typelem": 0,
                                "typarray": t.array, "typnotnull": False, "typbasetype": 0, "typtypmod": -1,
                                "typndims": 0, "typcollation": 100 if t.oid in (25, 1043) else 0,
                                "typcategory": "S" if t.oid in (25, 1043, 19) else "N"})
    rows["pg_am"].append({"oid": 2, "amname": "heap", "amtype": "t"})
    rows["pg_database"].append({"oid": 16383, "datname": DATABASE, "datdba": 10, "encoding": 6,
                                "datcollate": "C.UTF-8", "datctype": "C.UTF-8", "datallowconn": True})
    rows["pg_roles"].append({"oid": 10, "rolname": OWNER, "rolcanlogin": True})
    rows["pg_user"].append({"usename": OWNER, "usesysid": 10})
    for index, spec in enumerate(catalog.ordered()):
        if spec.layer not in layers:
            continue
        oid, short = _FIRST_TABLE_OID + index, spec.name.split(".", 1)[1]
        rows["pg_class"].append({
            "oid": oid, "relname": short, "relnamespace": namespaces[spec.layer], "reltype": 0, "reloftype": 0,
            "relowner": 10, "relam": 2, "relfilenode": oid, "reltablespace": 0, "relpages": 0, "reltuples": -1,
            "relallvisible": 0, "reltoastrelid": 0, "relhasindex": False, "relisshared": False,
            "relpersistence": "p", "relkind": "r", "relnatts": len(spec.columns), "relchecks": 0,
            "relhasrules": False, "relhastriggers": False, "relhassubclass": False, "relrowsecurity": False,
            "relforcerowsecurity": False, "relispopulated": True, "relreplident": "d", "relispartition": False})
        rows["pg_tables"].append({"schemaname": spec.layer, "tablename": short, "tableowner": OWNER,
                                  "hasindexes": False, "hasrules": False, "hastriggers": False,
                                  "rowsecurity": False})
        rows["tables"].append({"table_catalog": DATABASE, "table_schema": spec.layer, "table_name": short,
                               "table_type": "BASE TABLE", "is_insertable_into": "NO", "is_typed": "NO"})
        rows["pg_description"].append({"objoid": oid, "classoid": 1259, "objsubid": 0,
                                       "description": spec.description})
        for number, column in enumerate(spec.columns, start=1):
            pg = PG_TYPES[DECLARED_TYPES[column.type]]
            rows["pg_attribute"].append({
                "attrelid": oid, "attname": column.name, "atttypid": pg.oid, "attlen": pg.length,
                "attnum": number, "attndims": 0, "atttypmod": -1, "attbyval": pg.length in (1, 2, 4, 8),
                "attalign": "i", "attstorage": "p", "attnotnull": False, "atthasdef": False,
                "atthasmissing": False, "attidentity": "", "attgenerated": "", "attisdropped": False,
                "attislocal": True, "attinhcount": 0, "attcollation": 0})
            rows["columns"].append({
                "table_catalog": DATABASE, "table_schema": spec.layer, "table_name": short,
                "column_name": column.name, "ordinal_position": number, "is_nullable": "YES",
                "data_type": pg.display, "udt_catalog": DATABASE, "udt_schema": "pg_catalog", "udt_name": pg.name,
                "is_updatable": "NO", "dtd_identifier": str(number)})
            if column.description:
                rows["pg_description"].append({"objoid": oid, "classoid": 1259, "objsubid": number,
                                               "description": column.description})
    return rows


def _format_type_sql() -> str:
    cases = " ".join(f"WHEN {t.oid} THEN '{t.display}' WHEN {t.array} THEN '{t.display}[]'"
                     for t in PG_TYPES.values())
    return f"CASE t {cases} ELSE '???' END"


_DESCRIPTION = "(SELECT max(description) FROM pgc.pg_description WHERE objoid = o AND objsubid = {n})"
# Functions clients call on the catalog, as DuckDB macros in the catalog schema.
_MACROS = {
    "pg_get_userbyid": [("o", f"'{OWNER}'")],
    "pg_table_is_visible": [("o", "true")],
    "pg_type_is_visible": [("o", "true")],
    "pg_function_is_visible": [("o", "true")],
    "format_type": [("t, m", _format_type_sql())],
    "pg_get_expr": [("e, r", "CAST(NULL AS VARCHAR)"), ("e, r, p", "CAST(NULL AS VARCHAR)")],
    "obj_description": [("o", _DESCRIPTION.format(n="0")), ("o, c", _DESCRIPTION.format(n="0"))],
    "col_description": [("o, n", _DESCRIPTION.format(n="n"))],
    "shobj_description": [("o, c", "CAST(NULL AS VARCHAR)")],
    "pg_relation_is_publishable": [("o", "false")],
    "pg_get_statisticsobjdef_columns": [("o", "CAST(NULL AS VARCHAR)")],
    "pg_get_indexdef": [("o", "CAST(NULL AS VARCHAR)"), ("o, c, p", "CAST(NULL AS VARCHAR)")],
    "pg_get_constraintdef": [("o", "CAST(NULL AS VARCHAR)"), ("o, p", "CAST(NULL AS VARCHAR)")],
    "pg_get_viewdef": [("o", "CAST(NULL AS VARCHAR)"), ("o, p", "CAST(NULL AS VARCHAR)")],
    "has_table_privilege": [("t, p", "true"), ("u, t, p", "true")],
    "has_schema_privilege": [("s, p", "true"), ("u, s, p", "true")],
    "has_database_privilege": [("d, p", "true"), ("u, d, p", "true")],
    "pg_encoding_to_char": [("e", "'UTF8'")],
    "pg_total_relation_size": [("o", "CAST(NULL AS BIGINT)")],
    "pg_relation_size": [("o", "CAST(NULL AS BIGINT)")],
    "pg_table_size": [("o", "CAST(NULL AS BIGINT)")],
    "pg_size_pretty": [("b", "CAST(NULL AS VARCHAR)")],
    "pg_backend_pid": [("", "0")],
    "pg_get_serial_sequence": [("t, c", "CAST(NULL AS VARCHAR)")],
    "pg_collation_is_visible": [("o", "true")],
    "pg_get_function_identity_arguments": [("o", "CAST(NULL AS VARCHAR)")],
    "array_upper": [("a, d", "len(a)")],
    "array_lower": [("a, d", "1")],
    "version": [("", f"'{VERSION_TEXT}'")],
    "current_database": [("", f"'{DATABASE}'")],
    "current_schemas": [("b", "['gold', 'pg_catalog']")],
    "regclass_name": [("o", "(SELECT max(n.nspname || '.' || c.relname) FROM pgc.pg_class c JOIN pgc.pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE c.oid = o)")],
    "regclass_oid": [("s", "(SELECT max(c.oid) FROM pgc.pg_class c JOIN pgc.pg_namespace n ON n.oid = c.relnamespace "
                           "WHERE n.nspname || '.' || c.relname = s OR (c.relname = s AND n.nspname = 'gold'))")],
    "regtype_name": [("o", "pgc.format_type(o, -1)")],
    "to_regtype": [("s", "(SELECT max(oid) FROM pgc.pg_type WHERE typname = s OR typname = ltrim(s, '_'))")],
    "to_regclass": [("s", "pgc.regclass_oid(s)")],
    "to_regnamespace": [("s", "(SELECT max(oid) FROM pgc.pg_namespace WHERE nspname = s)")],
    "regnamespace_name": [("o", "(SELECT max(nspname) FROM pgc.pg_namespace WHERE oid = o)")],
}
CATALOG_FUNCTIONS = frozenset(_MACROS) | {"current_schema", "current_user", "session_user", "array_to_string",
                                          "string_agg", "unnest", "regexp_matches", "generate_series"}


def build_catalog_session(engine: DuckDBEngine, catalog: Catalog, layers: frozenset[str]) -> None:
    """Create the emulated catalog of `layers` in a (sandboxed, empty) session."""
    con = engine.con
    for schema in _SCHEMAS.values():
        con.execute(f"CREATE SCHEMA {schema}")
    for relation, columns in _relations().items():
        namespace, name = relation.split(".", 1)
        cols = ", ".join(f'"{c}" {_duckdb_type(t)}' for c, t in columns)
        con.execute(f'CREATE TABLE {_SCHEMAS[namespace]}."{name}" ({cols})')
    for name, rows in _rows(catalog, layers).items():
        if not rows:
            continue
        schema = "pgi" if name in ("tables", "columns", "schemata") else "pgc"
        data = pa.Table.from_pylist(rows)
        con.register("__catalog_rows", data)
        names = ", ".join(f'"{c}"' for c in data.schema.names)
        con.execute(f'INSERT INTO {schema}."{name}" ({names}) SELECT {names} FROM __catalog_rows')
        con.unregister("__catalog_rows")
    for name, overloads in _MACROS.items():
        bodies = ", ".join(f"({args}) AS {body}" for args, body in overloads)
        con.execute(f"CREATE MACRO pgc.{name} {bodies}")


# -- translating a client's query ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Translated:
    sql: str  # DuckDB SQL
    catalog: bool  # reads the emulated catalog (no lake table)


def _literal(oid: int, value: str | None) -> exp.Expression:
    if value is None:
        return exp.Null()
    if oid in (20, 21, 23, 26, 700, 701, 1700):
        try:
            float(value)
        except ValueError as exc:
            raise QueryError(f"parameter {value!r} is not a number") from exc
        return exp.Literal.number(value)
    if oid == 16:
        return exp.Boolean(this=value.lower() in ("t", "true", "1", "yes", "on"))
    literal = exp.Literal.string(value)
    if oid in (1082, 1114, 1184):
        return exp.Cast(this=literal, to=exp.DataType.build(PG_TYPES[oid].display.upper().replace(
            "TIMESTAMP WITHOUT TIME ZONE", "TIMESTAMP").replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")))
    return literal


def _catalog_table(table: exp.Table, ctes: set[str]) -> bool:
    schema, name = table.db.lower(), table.name.lower()
    if schema in _SCHEMAS:
        return True
    return not schema and name not in ctes and f"pg_catalog.{name}" in _relations()


def _pgc(name: str, *args: exp.Expression) -> exp.Expression:
    """A call of one of the catalog's macros."""
    return exp.Dot(this=exp.to_identifier(_SCHEMAS["pg_catalog"]), expression=exp.Anonymous(this=name,
                                                                                         expressions=list(args)))


def _rewrite(tree: exp.Expression, fn) -> exp.Expression:
    """Apply `fn` to every node, children before their parents (so a parent sees its rewritten children)."""
    for node in reversed(list(tree.walk())):
        new = fn(node)
        if new is not node:
            if node is tree:
                tree = new
            else:
                node.replace(new)
    return tree


def _redirect(node: exp.Expression, ctes: set[str], user: str) -> exp.Expression:
    if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier) and _catalog_table(node, ctes):
        schema = _SCHEMAS[node.db.lower()] if node.db else "pgc"
        return exp.Table(this=exp.to_identifier(node.name.lower()), db=exp.to_identifier(schema),
                         alias=node.args.get("alias"))
    if isinstance(node, exp.Table) and not isinstance(node.this, exp.Identifier):
        if node.db.lower() == "pg_catalog":
            node.set("db", None)  # pg_catalog.generate_series(...): the table function itself
        alias = node.args.get("alias")
        function = node.this.name.lower() if isinstance(node.this, exp.Anonymous) else node.this.key
        if function in ("generate_series", "explodinggenerateseries", "unnest", "explode") and alias is not None \
                and alias.this is not None and not alias.columns:
            # PostgreSQL names the single column of `f(...) s` after its alias; DuckDB would make `s` a row.
            alias.set("columns", [exp.to_identifier(alias.name)])
        return node
    if isinstance(node, exp.Column) and node.text("db").lower() in _SCHEMAS:  # pg_catalog.pg_class.relname
        node.set("db", exp.to_identifier(_SCHEMAS[node.text("db").lower()]))
        return node
    if isinstance(node, exp.Collate):
        return node.this
    if isinstance(node, exp.Operator):  # OPERATOR(pg_catalog.~) and friends
        op = node.text("operator").split(".")[-1].strip()
        left, right = node.this, node.expression
        regex = {"~": exp.RegexpLike(this=left, expression=right),
                 "~*": exp.RegexpILike(this=left, expression=right)}
        if op in regex:
            return regex[op]
        if op.lstrip("!") in regex:
            return exp.Not(this=regex[op.lstrip("!")])
        raise QueryError(f"operator {op} is not supported")
    if isinstance(node, exp.CurrentSchema):
        return exp.Literal.string("gold")
    if isinstance(node, exp.CurrentUser | exp.SessionUser):
        return exp.Literal.string(user)
    if isinstance(node, exp.Cast):
        kind = node.to.sql(dialect="postgres").lower().removeprefix("pg_catalog.")
        if kind in ("regclass", "regtype", "regnamespace", "regproc"):
            value = node.this
            if isinstance(value, exp.Literal) and value.is_string and kind == "regclass" and not value.this.isdigit():
                return _pgc("regclass_oid", value)
            target = {"regclass": "regclass_name", "regtype": "regtype_name", "regnamespace": "regnamespace_name",
                      "regproc": "regtype_name"}[kind]
            return _pgc(target, exp.cast(value, "BIGINT"))
        if kind in ("oid", "xid", "int2vector", "oidvector"):
            return exp.cast(node.this, "BIGINT")
    if isinstance(node, exp.CurrentVersion):
        return _pgc("version")
    if isinstance(node, exp.Anonymous) and node.name.lower() == "json_build_object":
        # Parenthesized: DuckDB's parser reads `json_object(a = b, ...)` as named arguments.
        return exp.Anonymous(this="json_object", expressions=[exp.Paren(this=e) for e in node.expressions])
    if isinstance(node, exp.Anonymous) and node.name.lower() in _MACROS:
        return _pgc(node.name.lower(), *node.expressions)
    if isinstance(node, exp.Dot) and isinstance(node.this, exp.Identifier) and node.this.name.lower() == "pg_catalog":
        return node.expression  # pg_catalog.f(...): the function itself
    return node


def translate(sql: str, params: tuple[tuple[int, str | None], ...] = (), *, user: str = OWNER) -> Translated:
    """A PostgreSQL-dialect query (with `$n` parameters bound to `params`) as the DuckDB query to run.

    Raises:
        QueryError: the query does not parse as PostgreSQL, a parameter is missing, or it mixes catalog
            and lake tables.
    """
    try:
        statements = sqlglot.parse(sql, read="postgres")
    except sqlglot.errors.SqlglotError as exc:
        raise QueryError(f"cannot parse the query: {str(exc).splitlines()[0]}") from exc
    if len(statements) != 1 or statements[0] is None:
        raise QueryError("give exactly one SQL statement")
    tree = statements[0]

    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Parameter | exp.Placeholder):
            index = node.this.this if isinstance(node.this, exp.Literal) else node.name
            if not str(index).isdigit() or not 1 <= int(index) <= len(params):
                raise QueryError(f"the query names parameter ${index} but {len(params)} were bound")
            return _literal(*params[int(index) - 1])
        return node

    tree = _rewrite(tree, bind)
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables = [t for t in tree.find_all(exp.Table) if isinstance(t.this, exp.Identifier)]
    catalog = [t for t in tables if _catalog_table(t, ctes)]
    lake = [t for t in tables if t.db.lower() in LAYERS]
    if catalog and lake:
        raise QueryError("a query reads either catalog tables (pg_catalog, information_schema) or lake tables, "
                         "not both")
    if lake:
        return Translated(tree.sql(dialect="duckdb"), catalog=False)
    tree = _rewrite(tree, lambda node: _redirect(node, ctes, user))
    return Translated(tree.sql(dialect="duckdb"), catalog=True)
