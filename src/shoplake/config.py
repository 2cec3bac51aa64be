"""Settings, loaded once at the entry point and passed down.

Precedence (later wins): defaults, `shoplake.toml` in the working directory (or the file named by
`SHOPLAKE_CONFIG`), `SHOPLAKE_*` environment variables, explicit overrides (CLI flags).
This is the only module that reads the environment.

`Settings` is a frozen pydantic dataclass: it validates and converts its values however it is made
(`Settings(...)`, `dataclasses.replace(settings, ...)`, `load_settings()`). `load_settings` gathers the
layers with pydantic-settings (its init, environment and TOML sources, merged in precedence order) and
turns every validation problem into one `ConfigError`.
"""

from __future__ import annotations

import contextvars
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model, field_validator
from pydantic.dataclasses import dataclass
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from shoplake.errors import ConfigError

ENGINES = ("duckdb", "spark")
_PATH_FIELDS = ("lake", "spool_dir", "spill_dir", "jobs_file", "funnels_file", "serve_tokens_file")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:/")


# Numbers in a TOML file are taken for text settings (`memory_limit = 4` means "4"), as before.
@dataclass(frozen=True, config=ConfigDict(coerce_numbers_to_str=True))
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
        funnels_file: a funnel file whose funnels override and extend the shipped ones by name, each
            built into `gold.funnel_<name>` (None: `shoplake-funnels.yaml` in the working directory, when
            present).
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
        serve_query_spill: most disk one query worker may spill to (DuckDB `max_temp_directory_size`); a
            query needing more fails instead of filling the disk before its deadline.
        serve_worker_niceness: CPU niceness of the query workers (0-19): higher keeps the dashboard faster
            while queries run, lower lets queries progress while other programs (a build) use the CPU.
        serve_token_concurrency: queries one token may have waiting or running at once (more: 429).
        serve_token_rate: queries one token may send per second (more: 429 with Retry-After).
        serve_max_pending: queries waiting or running over all tokens (more: 503), so a crowd of
            clients cannot queue work the server would never finish in time.
        serve_answer_cache: bytes of answers the SQL API server keeps for repeated queries until a table
            they read has a new version (0: none kept, and identical queries in flight do not share a run).
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
    funnels_file: Path | None = None
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
    serve_query_spill: str = "4GB"
    serve_worker_niceness: int = 10
    serve_token_concurrency: int = 4
    serve_token_rate: int = 20
    serve_max_pending: int = 64
    serve_answer_cache: int = 64 * 2**20

    @field_validator("lake", mode="before")
    @classmethod
    def _local_lake(cls, value: Any) -> Any:
        if value is not None and _URL.match(str(value)):
            # Path() quietly folds "s3://b/lake" into "s3:/b/lake" (the CLI hands us a Path already).
            raise ConfigError(f"lake '{value}': the lake must be a local or mounted folder; object-storage lakes "
                              f"are not supported yet (s3:// works for inputs and landing folders); see "
                              f"docs/CLUSTER.md")
        return value

    @field_validator(*_PATH_FIELDS)
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        serve_limits = ("serve_row_cap", "serve_query_timeout", "serve_byte_cap", "serve_body_limit", "serve_workers",
                        "serve_token_concurrency", "serve_token_rate", "serve_max_pending")
        too_small = [name for name in serve_limits if getattr(self, name) < 1]
        if too_small:
            raise ConfigError(f"{', '.join(too_small)} must be at least 1")
        if self.serve_answer_cache < 0:
            raise ConfigError(f"serve_answer_cache must be 0 (off) or more bytes, got {self.serve_answer_cache}")
        if not 0 <= self.serve_worker_niceness <= 19:
            raise ConfigError(f"serve_worker_niceness must be 0 to 19, got {self.serve_worker_niceness}")



# The environment that `load_settings` reads (a test passes its own mapping instead of `os.environ`).
_ENVIRONMENT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("shoplake_environment")


class _Environment(EnvSettingsSource):
    """`SHOPLAKE_*` variables of the mapping `load_settings` was given (empty values are ignored)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(_ENVIRONMENT.get(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _ConfigFile(TomlConfigSettingsSource):
    """`shoplake.toml` in the working directory, or the file `SHOPLAKE_CONFIG` names (which must exist);
    its settings under `[shoplake]`, or at the top level when the file has no such table."""

    def __init__(self, settings_cls: type[BaseSettings]):
        environment = _ENVIRONMENT.get()
        self.path = Path(environment.get("SHOPLAKE_CONFIG", "shoplake.toml"))
        if "SHOPLAKE_CONFIG" in environment and not self.path.is_file():
            raise ConfigError(f"SHOPLAKE_CONFIG points at {self.path}, which does not exist")
        super().__init__(settings_cls, toml_file=self.path)

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            data = super()._read_file(file_path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: invalid TOML: {exc}") from exc
        section = data.get("shoplake", data)
        return section if isinstance(section, dict) else {}


class _AwsEndpoint(PydanticBaseSettingsSource):
    """The standard `AWS_ENDPOINT_URL`, below every shoplake layer, so existing shop setups work unchanged."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        endpoint = _ENVIRONMENT.get().get("AWS_ENDPOINT_URL")
        return {"s3_endpoint": endpoint} if endpoint else {}


class _Layers(BaseSettings):
    """Collects the raw values of every layer; `Settings` validates them (fields added below)."""

    model_config = SettingsConfigDict(env_prefix="SHOPLAKE_", env_ignore_empty=True, extra="ignore")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: flags, then the environment, then the config file, then AWS's endpoint variable.
        return init_settings, _Environment(settings_cls), _ConfigFile(settings_cls), _AwsEndpoint(settings_cls)


# One raw (untyped) field per setting: types, conversion and checks are `Settings`' own.
_SettingsLayers = create_model("_SettingsLayers", __base__=_Layers,
                               **{f.name: (Any, None) for f in fields(Settings)})  # type: ignore[call-overload]


def _problem(error: Mapping[str, Any]) -> str:
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    value = error.get("input")
    if error["type"] in ("int_parsing", "int_type", "int_from_float"):
        return f"setting {name}={value!r} is not an integer"
    if error["type"] in ("bool_parsing", "bool_type"):
        return f"setting {name}={value!r} is not a boolean (true or false)"
    return f"setting {name}={value!r}: {error['msg']}"


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, config file, environment and overrides.

    Args:
        env: environment mapping (defaults to `os.environ`); tests pass their own.
        **overrides: values from CLI flags; None means "not given".
    """
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")
    token = _ENVIRONMENT.set(dict(os.environ if env is None else env))
    try:
        layers = _SettingsLayers(**{key: value for key, value in overrides.items() if value is not None})
    finally:
        _ENVIRONMENT.reset(token)
    values = {name: getattr(layers, name) for name in layers.model_fields_set if getattr(layers, name) != ""}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(error) for error in exc.errors())) from None
