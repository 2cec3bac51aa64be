"""What SQL an API caller may send: an allow-list of syntax and functions, checked on sqlglot's tree.

Anything not listed here is refused with a message naming the construct, so a DuckDB function or statement
that did not exist when this list was written is refused too (a deny-list would let it through). The
query that runs is the checked tree rendered back to SQL, never the caller's text.

The checks are the first of two walls: the engine session behind them can open no file at all (see
`DuckDBEngine.sandbox`), so a gap in this list cannot become a read of data the role may not see.
"""

from __future__ import annotations

from functools import cache

import sqlglot
from sqlglot import exp

from shoplake.errors import QueryError

# Functions by the name a DuckDB user writes. Pure computations on values only: nothing that reads files,
# runs SQL text, reads or changes settings, variables, secrets or the environment, or calls a function by
# its name (list_aggregate, query, json_execute_serialized_sql, ...).
AGGREGATE_FUNCTIONS = frozenset({
    "count", "sum", "avg", "mean", "min", "max", "median", "mode", "stddev", "stddev_pop", "stddev_samp",
    "variance", "var_pop", "var_samp", "corr", "covar_pop", "covar_samp", "regr_slope", "regr_intercept",
    "regr_r2", "approx_count_distinct", "approx_quantile", "quantile_cont", "quantile_disc", "percentile_cont",
    "percentile_disc", "arg_max", "arg_min", "max_by", "min_by", "first", "last", "any_value", "bool_and",
    "bool_or", "string_agg", "group_concat", "listagg", "list", "array_agg", "histogram", "count_if",
    "product", "entropy", "kurtosis", "skewness", "fsum", "favg", "bit_and", "bit_or",
})
WINDOW_FUNCTIONS = frozenset({
    "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag", "lead", "first_value",
    "last_value", "nth_value",
})
SCALAR_FUNCTIONS = frozenset({
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "trunc", "sign", "sqrt", "cbrt", "exp", "ln", "log", "log2",
    "log10", "pow", "power", "mod", "greatest", "least", "pi", "degrees", "radians", "sin", "cos", "tan",
    "asin", "acos", "atan", "atan2", "isnan", "isinf", "isfinite", "even", "gcd", "lcm", "random",
    # conditionals
    "coalesce", "ifnull", "nullif", "if",
    # text
    "lower", "upper", "lcase", "ucase", "length", "len", "strlen", "char_length", "trim", "ltrim", "rtrim",
    "substring", "substr", "left", "right", "concat", "concat_ws", "replace", "reverse", "repeat", "lpad",
    "rpad", "split_part", "string_split", "str_split", "starts_with", "ends_with", "contains", "position",
    "strpos", "instr", "regexp_matches", "regexp_replace", "regexp_extract", "regexp_extract_all",
    "regexp_full_match", "format", "printf", "md5", "sha256", "sha1", "hash", "ascii", "chr", "levenshtein",
    "jaro_winkler_similarity", "damerau_levenshtein", "hamming", "jaccard", "to_base64", "from_base64",
    # dates and times
    "date_trunc", "datetrunc", "date_part", "datepart", "date_diff", "datediff", "date_sub", "datesub",
    "date_add", "strftime", "strptime", "try_strptime", "to_timestamp", "epoch", "epoch_ms", "make_date",
    "make_timestamp", "make_time", "year", "month", "day", "dayofweek", "dayofyear", "dayofmonth", "week",
    "weekofyear", "quarter", "hour", "minute", "second", "isodow", "isoyear", "yearweek", "last_day",
    "monthname", "dayname", "age", "now", "today", "current_date", "current_timestamp", "get_current_timestamp",
    "to_days", "to_hours", "to_minutes", "to_seconds", "to_months", "to_years", "time_bucket", "century",
    "decade", "millisecond",
    # lists, structs, JSON values
    "list_value", "list_extract", "list_element", "array_length", "list_contains", "array_contains",
    "list_has", "list_sort", "list_reverse_sort", "list_distinct", "list_unique", "list_transform",
    "list_filter", "list_slice", "array_slice", "flatten", "struct_pack", "struct_extract", "cardinality",
    "list_concat", "array_concat", "list_position", "array_to_string", "json_extract", "json_extract_string",
    "json_valid", "json_array_length", "json_keys", "json_type", "to_json", "json_object", "json_array",
    "typeof", "columns",
})
# Allowed functions whose value is not a function of their arguments: the clock or chance. DuckDB marks all but
# `age` as not CONSISTENT (`duckdb_functions().stability`, checked by a test); `age(x)` counts from today.
VOLATILE_FUNCTIONS = frozenset({"random", "now", "today", "current_date", "current_timestamp",
                                "get_current_timestamp", "age"})
# Table functions that make rows from their arguments alone.
TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

# Syntax that sqlglot models as a function although the user writes no function name.
_SYNTAX_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Cast, exp.TryCast, exp.Case, exp.If, exp.Extract, exp.Array, exp.Struct, exp.JSONExtract,
    exp.JSONExtractScalar, exp.Interval, exp.Unnest,
)
# Every other node of the tree must be one of these (values, operators and the clauses of a SELECT).
_ALLOWED_NODES: tuple[type[exp.Expression], ...] = (
    exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.With, exp.CTE, exp.From, exp.Join,
    exp.Where, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Ordered, exp.Limit, exp.Offset,
    exp.Distinct, exp.Column, exp.Identifier, exp.Literal, exp.Star, exp.Alias, exp.TableAlias, exp.Table,
    exp.Window, exp.WindowSpec, exp.Binary, exp.Unary, exp.Predicate, exp.Paren, exp.Boolean, exp.Null,
    exp.DataType, exp.DataTypeParam, exp.Var, exp.Tuple, exp.PropertyEQ, exp.Bracket, exp.Slice, exp.Lambda,
    exp.Lateral, exp.Values, exp.Filter, exp.WithinGroup, exp.IgnoreNulls, exp.RespectNulls, exp.Cube,
    exp.Rollup, exp.GroupingSets, exp.Unnest, exp.JSONPath, exp.JSONPathPart, exp.HexString,
    exp.ByteString, exp.BitString, exp.Kwarg, exp.ColumnDef, exp.Pivot, exp.PivotAlias, exp.TableSample,
    exp.Dot, exp.Columns, exp.Interval,
)


def _identity(func: exp.Func) -> str:
    """What a function node is, independent of spelling: the name of an unknown function, else its class."""
    return f"fn:{func.name.lower()}" if isinstance(func, exp.Anonymous) else f"class:{type(func).__name__}"


def _identities(names: frozenset[str]) -> frozenset[str]:
    """The identities sqlglot gives the DuckDB functions `names` (with any number of arguments)."""
    found = set()
    for name in names:
        found.add(f"fn:{name}")
        for args in ("", "a", "a, b", "a, b, c"):
            try:
                select = sqlglot.parse_one(f"SELECT {name}({args})", read="duckdb")
            except sqlglot.errors.ParseError:
                continue
            # The function itself, also where sqlglot wraps it (DuckDB's any_value is IGNORE NULLS(AnyValue)).
            node = select.expressions[0].find(exp.Func) if isinstance(select, exp.Select) and select.expressions \
                else None
            if isinstance(node, exp.Func):
                found.add(_identity(node))
    return frozenset(found)


_ALLOWED_FUNCTIONS = _identities(AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS | SCALAR_FUNCTIONS | TABLE_FUNCTIONS) \
    | frozenset(f"class:{cls.__name__}" for cls in _SYNTAX_FUNCTIONS)
_ALLOWED_TABLE_FUNCTIONS = _identities(TABLE_FUNCTIONS) | {f"class:{exp.Unnest.__name__}"}
_VOLATILE_FUNCTIONS = _identities(VOLATILE_FUNCTIONS)


def is_deterministic(statement: exp.Expression) -> bool:
    """Whether an allowed statement's answer depends only on the tables it reads (and their versions).

    Not when it reads the clock or chance (`VOLATILE_FUNCTIONS`, any `CURRENT_*` value) or samples rows.
    """
    return not any(isinstance(node, exp.TableSample)
                   or (isinstance(node, exp.Func) and (_identity(node) in _VOLATILE_FUNCTIONS
                                                       or type(node).__name__.startswith("Current")))
                   for node in statement.walk())


def _spelled(node: exp.Expression) -> str:
    """How the user would name a refused node in a message."""
    if isinstance(node, exp.Anonymous):
        return f"{node.name}()"
    if isinstance(node, exp.Func):
        return f"{node.sql_name().lower()}()"
    return node.key.upper()


# What a query over the PostgreSQL endpoint's emulated catalog may use besides the list above (the catalog
# session holds metadata only; see `shoplake.serve.pgcatalog`).
CATALOG_NODES: tuple[type[exp.Expression], ...] = (exp.Any, exp.All, exp.JSONKeyValue)


@cache
def _catalog_functions() -> frozenset[str]:
    from shoplake.serve.pgcatalog import CATALOG_FUNCTIONS

    return _ALLOWED_FUNCTIONS | _identities(CATALOG_FUNCTIONS)


def check_allowed(statement: exp.Expression, *, catalog: bool = False) -> None:
    """Refuse the statement unless every node and every function of it is on the allow-list.

    Args:
        catalog: the statement reads the PostgreSQL endpoint's emulated catalog: its functions are allowed too.

    Raises:
        QueryError: naming the first construct that is not allowed.
    """
    functions = _catalog_functions() if catalog else _ALLOWED_FUNCTIONS
    nodes = _ALLOWED_NODES + CATALOG_NODES if catalog else _ALLOWED_NODES
    for node in statement.walk():
        if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Unary | exp.Predicate):
            if _identity(node) not in functions:
                raise QueryError(f"function {_spelled(node)} is not allowed in the SQL API; allowed are the "
                                 f"usual scalar, aggregate and window functions (see docs/SERVING.md)")
            # In a table position a name can mean a different function: `LATERAL histogram('t', c)` is the
            # table function that reads table 't', not the aggregate.
            in_table_position = isinstance(node.parent, exp.Table | exp.Lateral) and node.arg_key == "this"
            if in_table_position and _identity(node) not in _ALLOWED_TABLE_FUNCTIONS:
                raise QueryError(f"table function {_spelled(node)} is not allowed; only catalog tables and "
                                 f"{', '.join(sorted(TABLE_FUNCTIONS))}() can be read")
            continue
        if not isinstance(node, nodes):
            raise QueryError(f"{_spelled(node)} is not allowed in the SQL API: only SELECT queries over "
                             f"catalog tables (with WITH, UNION, joins, window functions) run")
