"""The hostile-query corpus: every way found to make the SQL API read, list or write what a role may not.

`{lake}` stands for the lake folder, `{escape}` for a file path outside the lake that must never be created.
Each query is refused for an analyst token (400 or 403), and nothing is written anywhere.
"""

from __future__ import annotations

BRONZE_GLOB = "{lake}/bronze/clickstream/*.parquet"
TOKENS = "{lake}/_serve/tokens.toml"
MLFLOW = "{lake}/_mlflow/mlflow.db"

# The probes of the issue, as sent.
ISSUE_PROBES = {
    "lateral_serialized_sql_bronze": "select * from range(1) r, lateral json_execute_serialized_sql(json_serialize_sql("
                                     "'select count(*) from read_parquet(''" + BRONZE_GLOB + "'')'))",
    "lateral_serialized_sql_tokens": "select * from range(1) r, lateral json_execute_serialized_sql(json_serialize_sql("
                                     "'select * from read_text(''" + TOKENS + "'')'))",
    "lateral_serialized_sql_glob": "select * from range(1) r, lateral json_execute_serialized_sql(json_serialize_sql("
                                   "'select * from glob(''{lake}/**'')'))",
    "enable_logging_into_delta_log": "select * from range(1) r, lateral enable_logging(storage='file', "
                                     "storage_path='{lake}/ops/query_log/_delta_log/00000000000000000047.json')",
    "enable_logging_into_gold_log": "select * from range(1) r, lateral enable_logging(storage='file', "
                                    "storage_path='{lake}/gold/daily_funnel/_delta_log/00000000000000000099.json')",
    "nested_over_a_trillion": "select * from range(1000000000000) r, lateral json_execute_serialized_sql("
                              "json_serialize_sql('select count(*) from range(1000000000000)'))",
    "cte_inside_subquery_smuggles_system_view": "select * from (with duckdb_views as (select 1) select 1) s, "
                                                "duckdb_views",
}

# File functions, with every path spelling.
FILE_FUNCTIONS = {
    "read_text_tokens": "select * from read_text('" + TOKENS + "')",
    "read_blob_tokens": "select * from read_blob('" + TOKENS + "')",
    "read_csv_tokens": "select * from read_csv('" + TOKENS + "')",
    "read_csv_auto_tokens": "select * from read_csv_auto('" + TOKENS + "')",
    "read_json_tokens": "select * from read_json('" + TOKENS + "')",
    "read_ndjson_tokens": "select * from read_ndjson_objects('" + TOKENS + "')",
    "read_parquet_bronze": "select * from read_parquet('" + BRONZE_GLOB + "')",
    "read_parquet_list": "select * from read_parquet(['" + BRONZE_GLOB + "'])",
    "parquet_scan_bronze": "select * from parquet_scan('" + BRONZE_GLOB + "')",
    "parquet_metadata_bronze": "select * from parquet_metadata('" + BRONZE_GLOB + "')",
    "parquet_schema_bronze": "select * from parquet_schema('" + BRONZE_GLOB + "')",
    "delta_scan_bronze": "select * from delta_scan('{lake}/bronze/clickstream')",
    "sqlite_scan_mlflow": "select * from sqlite_scan('" + MLFLOW + "', 'registered_models')",
    "read_blob_mlflow": "select * from read_blob('" + MLFLOW + "')",
    "sniff_csv_tokens": "select * from sniff_csv('" + TOKENS + "')",
    "glob_lake": "select * from glob('{lake}/**')",
    "glob_relative": "select * from glob('**/*.toml')",
    "quoted_path_as_table": "select * from '" + BRONZE_GLOB + "'",
    "double_quoted_path_as_table": 'select * from "' + TOKENS + '"',
    "file_uri": "select * from read_text('file://" + TOKENS + "')",
    "dot_dot_path": "select * from read_text('{lake}/gold/../_serve/tokens.toml')",
    "double_slash_path": "select * from read_text('{lake}//_serve//tokens.toml')",
    "relative_path": "select * from read_text('_serve/tokens.toml')",
    "home_path": "select * from read_text('~/.bash_history')",
    "etc_passwd": "select * from read_text('/etc/passwd')",
    "uppercase_function": "SELECT * FROM READ_TEXT('" + TOKENS + "')",
    "quoted_function_name": "select * from \"read_text\"('" + TOKENS + "')",
    "schema_qualified_function": "select * from main.read_text('" + TOKENS + "')",
    "scalar_subquery_read": "select (select content from read_text('" + TOKENS + "')) as c",
    "exists_read": "select 1 where exists (select 1 from read_blob('" + TOKENS + "'))",
    "in_subquery_read": "select 1 where 'x' in (select content from read_text('" + TOKENS + "'))",
    "union_read": "select 'x' as c union all select content from read_text('" + TOKENS + "')",
    "cte_read": "with t as (select * from read_text('" + TOKENS + "')) select * from t",
    "join_read": "select * from gold.daily_funnel f join read_text('" + TOKENS + "') t on true",
    "lateral_read": "select * from gold.daily_funnel f, lateral read_csv('" + TOKENS + "')",
    "lambda_read": "select list_transform([1], x -> (select content from read_text('" + TOKENS + "')))",
    "unnest_of_read": "select * from unnest((select list(content) from read_text('" + TOKENS + "')))",
    "range_of_read": "select * from range((select count(*) from read_text('" + TOKENS + "')))",
    "query_function": "select * from query('select * from read_text(''" + TOKENS + "'')')",
    "query_table_function": "select * from query_table('bronze.clickstream')",
    "http_read": "select * from read_csv('http://127.0.0.1:9/x.csv')",
    "st_read": "select * from st_read('" + TOKENS + "')",
    "iceberg_scan": "select * from iceberg_scan('{lake}/bronze/clickstream')",
    "from_first_read": "from read_text('" + TOKENS + "')",
    "from_first_quoted_path": "from '" + BRONZE_GLOB + "'",
}

# DuckDB's own catalog and settings, in every position.
SYSTEM_VIEWS = {
    "duckdb_views": "select * from duckdb_views",
    "duckdb_views_function": "select * from duckdb_views()",
    "duckdb_tables": "select * from duckdb_tables()",
    "duckdb_settings": "select * from duckdb_settings()",
    "duckdb_secrets": "select * from duckdb_secrets()",
    "duckdb_extensions": "select * from duckdb_extensions()",
    "duckdb_functions": "select * from duckdb_functions()",
    "duckdb_temporary_files": "select * from duckdb_temporary_files()",
    "information_schema_tables": "select * from information_schema.tables",
    "information_schema_columns": "select * from information_schema.columns",
    "pg_catalog": "select * from pg_catalog.pg_class",
    "sqlite_master": "select * from sqlite_master",
    "system_catalog_view": "select * from system.main.duckdb_views",
    "memory_catalog_table": "select * from memory.gold.daily_funnel",
    "temp_catalog": "select * from temp.main.duckdb_views",
    "pragma_table_info": "select * from pragma_table_info('gold.daily_funnel')",
    "pragma_database_list": "select * from pragma_database_list",
    "pragma_version_scalar": "select (select library_version from pragma_version())",
    "system_view_in_cte": "with v as (select * from duckdb_views()) select * from v",
    "system_view_in_union": "select 1 as x union all select count(*) from duckdb_tables()",
    "system_view_in_exists": "select 1 where exists (select * from duckdb_settings())",
    "system_view_in_join": "select * from gold.daily_funnel join duckdb_views v on true",
    "system_view_lateral": "select * from gold.daily_funnel, lateral duckdb_settings()",
    "current_setting": "select current_setting('temp_directory')",
    "getvariable": "select getvariable('x')",
    "version_function": "select version()",
    "test_all_types": "select * from test_all_types()",
}

# CTE scope tricks and roles.
SCOPE_AND_ROLES = {
    "cte_inner_name_used_outside": "select * from (with gold_copy as (select 1) select * from gold_copy) s, gold_copy",
    "cte_in_union_branch_used_in_other": "select * from (with v as (select 1) select * from v) union all "
                                         "select * from v",
    "cte_in_scalar_subquery": "select (with duckdb_settings as (select 1) select 1), * from duckdb_settings",
    "recursive_cte_over_system_view": "with recursive r as (select 1 as n union all select n + 1 from r "
                                      "where n < 3) select * from r, duckdb_views",
    "cte_reading_bronze": "with g as (select * from bronze.clickstream) select * from g",
    "bronze_direct": "select * from bronze.clickstream",
    "bronze_quoted": 'select * from "bronze"."clickstream"',
    "bronze_uppercase": "select * from BRONZE.CLICKSTREAM",
    "bronze_spaced": "select * from bronze . clickstream",
    "silver_events": "select count(*) from silver.events",
    "silver_time_travel": "select count(*) from silver.events version as of 0",
    "quarantine_retail": "select * from quarantine.retail",
    "silver_in_scalar_subquery": "select (select count(*) from silver.sales) as n",
    "silver_in_exists": "select 1 from gold.daily_funnel where exists (select 1 from silver.events)",
    "silver_in_join": "select * from gold.daily_funnel f join silver.events e on f.event_date = e.event_date",
    "bronze_in_range": "select * from range((select count(*) from bronze.clickstream))",
    "bare_unknown_table": "select * from daily_funnel",
}

# Statements other than a query, settings, logging, multi-statements and spelling tricks.
STATEMENTS_AND_TRICKS = {
    "attach": "attach '{escape}' as escape",
    "copy_to": "copy (select 1) to '{escape}'",
    "export_database": "export database '{escape}'",
    "install": "install httpfs",
    "load": "load httpfs",
    "set_external_access": "set enable_external_access = true",
    "set_variable": "set variable x = 1",
    "reset": "reset memory_limit",
    "pragma": "pragma enable_profiling",
    "call": "call enable_logging()",
    "checkpoint": "checkpoint",
    "create_macro": "create macro m(x) as x",
    "create_secret": "create secret s (type s3, key_id 'k', secret 'v')",
    "create_view": "create view v as select 1",
    "insert": "insert into gold.daily_funnel select * from gold.daily_funnel",
    "delete": "delete from gold.daily_funnel",
    "drop": "drop table gold.daily_funnel",
    "use": "use memory",
    "describe": "describe gold.daily_funnel",
    "summarize": "summarize gold.daily_funnel",
    "show_tables": "show tables",
    "explain_analyze": "explain analyze select 1",
    "prepare": "prepare p as select 1",
    "select_into": "select 1 into escape_table",
    "two_statements": "select 1; select * from read_text('" + TOKENS + "')",
    "comment_hides_semicolon": "select 1 /* ; */; attach '{escape}' as e",
    "line_comment_then_statement": "select 1 --\n; copy (select 1) to '{escape}'",
    "comment_inside_function_name": "select * from read/**/_text('" + TOKENS + "')",
    "mixed_case_keywords": "sElEcT * fRoM rEaD_tExT('" + TOKENS + "')",
    "fullwidth_function_name": "select * from ｒｅａｄ_text('" + TOKENS + "')",
    "zero_width_in_name": "select * from read\u200b_text('" + TOKENS + "')",
    "nul_byte": "select 1\x00; attach '{escape}' as e",
    "tab_and_newline_separated": "select\t*\nfrom\tread_text('" + TOKENS + "')",
    "enable_logging_scalar": "select enable_logging()",
    "disable_logging": "select * from disable_logging()",
    "truncate_logs": "select * from truncate_duckdb_logs()",
    "list_aggregate_by_name": "select list_aggregate([1, 2], 'string_agg', ',')",
    "json_serialize_sql": "select json_serialize_sql('select 1')",
    "getenv": "select getenv('HOME')",
    "sql_auto_complete": "select * from sql_auto_complete('sel')",
    "which_secret": "select * from which_secret('s3://b/x', 's3')",
    "pivot_statement": "pivot gold.daily_funnel on event_date using sum(revenue)",
    "table_function_by_table_name": "select * from histogram('bronze.clickstream', event_type)",
    "lateral_table_function_by_table_name": "select * from range(1) r, lateral histogram('bronze.clickstream', "
                                            "event_type)",
    "summary_of_a_table": "select * from summary((select * from gold.daily_funnel))",
}

CORPUS: dict[str, str] = {**ISSUE_PROBES, **FILE_FUNCTIONS, **SYSTEM_VIEWS, **SCOPE_AND_ROLES, **STATEMENTS_AND_TRICKS}

# The probes that aim at the tokens file: refused for an engineer too.
TOKEN_FILE_PROBES = {key: sql for key, sql in CORPUS.items() if "tokens.toml" in sql}
