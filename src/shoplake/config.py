"""Settings, loaded once at the entry point and passed down.

Precedence (later wins): defaults, `shoplake.toml` in the working directory (or the file named by
`SHOPLAKE_CONFIG`), `SHOPLAKE_*` environment variables, explicit overrides (CLI flags).
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from shoplake.errors import ConfigError

ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know about where things are and how to run them.

    Attributes:
        lake: folder holding every Delta table (`<lake>/<layer>/<name>`).
        engine: `duckdb` (embedded, default) or `spark`.
        threads: engine worker threads; None lets the engine decide.
        memory_limit: engine memory cap such as `"4GB"`. Work beyond it spills to `spill_dir`, so a
            file larger than memory never needs that much RAM. The default keeps a full pipeline on
            10M events under 3 GiB of RSS; raise it on a big machine for speed.
        s3_endpoint: S3-compatible endpoint URL for `s3://` inputs (None: AWS).
        s3_region: region for `s3://` inputs.
        spool_dir: where remote inputs are downloaded before parsing (None: the system temp folder).
        mlflow_tracking_uri: MLflow tracking and model registry store (None: a SQLite file inside the
            lake, `<lake>/_mlflow/mlflow.db`, with artifacts in `<lake>/_mlflow/artifacts`).
        spill_dir: where the engine spills work that exceeds `memory_limit` (None: a folder in the
            system temp folder).
        jobs_file: a job file whose jobs override and extend the shipped ones by name (None:
            `shoplake-jobs.yaml` in the working directory, when present).
        landing: landing root of the jobs' ingest tasks: a folder or an `s3://` prefix holding one
            folder per source (None: `landing/` in the working directory).
        spark_master: Spark master URL for `engine = "spark"` (`local[*]`, `spark://host:7077`, `yarn`).
        spark_remote: a Spark Connect URL (`sc://host:15002`); when set it replaces `spark_master`.
        spark_driver_memory: driver heap for a local Spark session (local mode runs all work in it).
        spark_delta_jars: True when the delta-spark jars are on Spark's classpath (a cluster or
            Databricks): Spark then reads and writes `format("delta")` itself. False (default) reads the
            files of a snapshot listed by `deltalake` and commits Spark's Parquet files through
            `deltalake`, which needs no jars.
        serve_tokens_file: the SQL API's bearer tokens (name, role, SHA-256 of the secret), written by
            `shoplake serve-token add` (None: `<lake>/_serve/tokens.toml`).
        serve_row_cap: the most rows one SQL API response returns (a response says when it was cut).
        serve_query_timeout: seconds an SQL API query may take from arrival to its serialized answer
            (waiting for a worker, parsing, running, serializing); its worker process is killed then.
        serve_byte_cap: the most bytes of rows one SQL API response carries (cut like the row cap).
        serve_body_limit: the largest request body the server reads, in bytes (larger: 413, not read).
        serve_workers: query worker processes (queries running at once); more wait for a free one.
        serve_query_memory: DuckDB memory limit of each query worker (work beyond it spills or fails).
        serve_worker_niceness: CPU niceness of the query workers (0-19): higher keeps the dashboard faster
            while queries run, lower lets queries progress while other programs (a build) use the CPU.
        serve_token_concurrency: queries one token may have waiting or running at once (more: 429).
        serve_token_rate: queries one token may send per second (more: 429 with Retry-After).
        serve_max_pending: queries waiting or running over all tokens (more: 503), so a crowd of
            clients cannot queue work the server would never finish in time.
    """

    lake: Path = Path("lakehouse")
    engine: str = "duckdb"
    threads: int | None = None
    memory_limit: str | None = "2GB"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    spool_dir: Path | None = None
    mlflow_tracking_uri: str | None = None
    spill_dir: Path | None = None
    jobs_file: Path | None = None
    landing: str | None = None
    spark_master: str = "local[*]"
    spark_remote: str | None = None
    spark_driver_memory: str = "4g"
    spark_delta_jars: bool = False
    serve_tokens_file: Path | None = None
    serve_row_cap: int = 10_000
    serve_query_timeout: int = 30
    serve_byte_cap: int = 16 * 2**20
    serve_body_limit: int = 2**20
    serve_workers: int = 2
    serve_query_memory: str = "1GB"
    serve_worker_niceness: int = 10
    serve_token_concurrency: int = 4
    serve_token_rate: int = 20
    serve_max_pending: int = 64

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        serve_limits = ("serve_row_cap", "serve_query_timeout", "serve_byte_cap", "serve_body_limit", "serve_workers",
                        "serve_token_concurrency", "serve_token_rate", "serve_max_pending")
        too_small = [name for name in serve_limits if getattr(self, name) < 1]
        if too_small:
            raise ConfigError(f"{', '.join(too_small)} must be at least 1")
        if not 0 <= self.serve_worker_niceness <= 19:
            raise ConfigError(f"serve_worker_niceness must be 0 to 19, got {self.serve_worker_niceness}")


_PATH_FIELDS = {"lake", "spool_dir", "jobs_file", "serve_tokens_file"}
_INT_FIELDS = {"threads", "serve_row_cap", "serve_query_timeout", "serve_byte_cap", "serve_body_limit", "serve_workers",
               "serve_token_concurrency", "serve_token_rate", "serve_max_pending", "serve_worker_niceness"}
_BOOL_FIELDS = {"spark_delta_jars"}


def _coerce(name: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if name == "lake" and re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", str(value)):
        # Path() quietly folds "s3://b/lake" into "s3:/b/lake" (the CLI hands us a Path already).
        raise ConfigError(f"lake '{value}': the lake must be a local or mounted folder; object-storage lakes "
                          f"are not supported yet (s3:// works for inputs and landing folders); see docs/CLUSTER.md")
    if name in _PATH_FIELDS:
        return Path(value).expanduser()
    if name in _BOOL_FIELDS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in {"1", "0", "true", "false", "yes", "no"}:
            raise ConfigError(f"setting {name}={value!r} is not a boolean (true or false)")
        return text in {"1", "true", "yes"}
    if name in _INT_FIELDS:
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"setting {name}={value!r} is not an integer") from exc
    return str(value)


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, config file, environment and overrides.

    Args:
        env: environment mapping (defaults to `os.environ`); tests pass their own.
        **overrides: values from CLI flags; None means "not given".
    """
    env = dict(os.environ if env is None else env)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}

    config_file = Path(env.get("SHOPLAKE_CONFIG", "shoplake.toml"))
    if config_file.is_file():
        try:
            data = tomllib.loads(config_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: invalid TOML: {exc}") from exc
        for key, value in data.get("shoplake", data).items():
            if key in known:
                values[key] = _coerce(key, value)
    elif "SHOPLAKE_CONFIG" in env:
        raise ConfigError(f"SHOPLAKE_CONFIG points at {config_file}, which does not exist")

    for key in known:
        env_value = env.get(f"SHOPLAKE_{key.upper()}")
        if env_value:
            values[key] = _coerce(key, env_value)
    # The standard AWS variable is honoured too, so existing shop setups work unchanged.
    if "s3_endpoint" not in values and env.get("AWS_ENDPOINT_URL"):
        values["s3_endpoint"] = env["AWS_ENDPOINT_URL"]

    for key, value in overrides.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = _coerce(key, value)
    return replace(Settings(), **values)
