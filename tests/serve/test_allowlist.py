"""The allow-list lets ordinary analytics through: each query gives over the API exactly what the trusted
`shoplake sql` path gives (so the list is not so tight that the API is useless)."""

from __future__ import annotations

import json

import duckdb
import pytest

from shoplake.errors import QueryError
from shoplake.query import parse_query, run_query
from shoplake.serve.allowlist import (
    AGGREGATE_FUNCTIONS,
    SCALAR_FUNCTIONS,
    TABLE_FUNCTIONS,
    VOLATILE_FUNCTIONS,
    WINDOW_FUNCTIONS,
    check_allowed,
    is_deterministic,
)
from shoplake.serve.worker import _jsonable

ANALYTICS = {
    "window_cte_qualify": "with d as (select event_date, revenue from gold.daily_funnel) select event_date, revenue, "
                          "sum(revenue) over (order by event_date rows between 6 preceding and current row) as r7, "
                          "lag(revenue) over (order by event_date) as prev, row_number() over (order by event_date) "
                          "as rn from d qualify rn < 5 order by event_date",
    "generators": "select * from range(5) r, generate_series(1, 3) g order by 1, 2",
    "unnest_table": "select * from unnest([1, 2, 3]) as t(x)",
    "dates": "select strftime(event_date, '%Y-%m') as m, date_trunc('month', event_date) as d, "
             "extract(year from event_date) as y, event_date + interval 1 day as next from gold.daily_funnel "
             "order by event_date limit 3",
    "casts_and_cases": "select case when revenue > 0 then 'yes' else 'no' end as c, cast(revenue as int) as i, "
                       "coalesce(revenue, 0) as z, round(revenue, 2) as r from gold.daily_funnel order by event_date "
                       "limit 2",
    "aggregates_rollup": "select country, sum(net_revenue) filter (where net_revenue > 0) as pos, "
                         "median(net_revenue) as med, quantile_cont(net_revenue, 0.9) as p90, "
                         "arg_max(invoice_date, net_revenue) as best from gold.daily_sales_by_country "
                         "group by rollup (country) order by 1 nulls last limit 5",
    "set_operations": "select 1 as a union select 2 intersect select 2 except select 3 order by 1",
    "lists_structs_lambdas": "select {'a': 1} as s, [1,2][1] as e, list_transform([1,2], x -> x * 2) as l, "
                             "len('abc') as n, lower('A') || upper('b') as t",
    "json_values": "select json_extract('{\"a\": 1}', '$.a') as w",
    "time_travel": "select count(*) as n from gold.daily_funnel version as of 0",
    "subquery_in": "select event_date from gold.daily_funnel where count_views in "
                   "(select max(count_views) from gold.daily_funnel)",
    "from_first_exclude_columns": "from gold.daily_funnel select * exclude (revenue) order by event_date limit 1",
    "columns_regex": "select columns('count_.*') from gold.daily_funnel order by event_date limit 1",
    "named_window": "select event_date, rank() over w as r, ntile(4) over w as q from gold.daily_funnel "
                    "window w as (order by revenue, event_date) order by event_date",
    "non_finite_numbers": "select 1/0 as x, 'nan'::double as n, '-inf'::double as i",
    # sqlglot wraps DuckDB's any_value in IGNORE NULLS: the function inside is what is checked
    "any_value": "select country, any_value(country) as a from gold.daily_sales_by_country group by 1 order by 1",
}


@pytest.mark.parametrize("sql", ANALYTICS.values(), ids=ANALYTICS.keys())
def test_ordinary_analytics_run_and_match_the_trusted_path(client, served, sql):
    response = client.post("/api/v1/sql", json={"query": sql}, headers=served.headers("analyst"))
    assert response.status_code == 200, response.text
    expected = run_query(served.lake, sql)
    rows = [[_jsonable(v) for v in row.values()] for row in expected.to_pylist()]
    assert response.json()["rows"] == json.loads(json.dumps(rows))
    assert [c["name"] for c in response.json()["columns"]] == expected.column_names


def _duckdb_table_functions() -> list[str]:
    with duckdb.connect() as con:
        rows = con.execute("SELECT DISTINCT function_name FROM duckdb_functions() "
                           "WHERE function_type IN ('table', 'table_macro') ORDER BY 1").fetchall()
    return [name for (name,) in rows if name not in TABLE_FUNCTIONS]


@pytest.mark.parametrize("position", ["SELECT * FROM {f}('x')", "SELECT * FROM range(1) r, LATERAL {f}('x')",
                                      "SELECT (SELECT count(*) FROM {f}('x')) AS n"])
def test_every_duckdb_table_function_but_the_generators_is_refused(position):
    # DuckDB's own list, so a table function added by a DuckDB upgrade is covered without editing this test.
    names = _duckdb_table_functions()
    assert {"read_text", "glob", "enable_logging", "json_execute_serialized_sql", "duckdb_settings"} <= set(names)
    allowed = []
    for name in names:
        try:
            check_allowed(parse_query(position.format(f=name)).statement)
        except QueryError:
            continue
        allowed.append(name)
    assert allowed == []


def test_every_allowed_function_duckdb_calls_volatile_is_listed_as_such():
    allowed = AGGREGATE_FUNCTIONS | WINDOW_FUNCTIONS | SCALAR_FUNCTIONS | TABLE_FUNCTIONS
    volatile = {name for name, stability in duckdb.connect().execute(
        "SELECT DISTINCT function_name, stability FROM duckdb_functions() WHERE stability <> 'CONSISTENT'").fetchall()
        if name in allowed}
    assert volatile <= VOLATILE_FUNCTIONS
    for name in VOLATILE_FUNCTIONS:
        args = "DATE '2020-01-01'" if name == "age" else ""
        assert not is_deterministic(parse_query(f"SELECT {name}({args}) AS v").statement), name
    assert is_deterministic(parse_query("SELECT max(event_date) FROM gold.daily_funnel").statement)
