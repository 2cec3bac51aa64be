"""Settings precedence: defaults < shoplake.toml < SHOPLAKE_* environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoplake.config import Settings, load_settings
from shoplake.errors import ConfigError


def _toml(folder: Path, text: str, name: str = "shoplake.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_config_defaults_without_file_env_or_overrides(workdir):
    assert load_settings(env={}) == Settings()
    settings = load_settings(env={})
    assert settings.lake == Path("lakehouse")
    assert settings.engine == "duckdb"
    assert settings.threads is None and settings.memory_limit == "2GB"
    assert settings.s3_endpoint is None and settings.s3_region == "us-east-1"


def test_config_file_beats_defaults(workdir):
    _toml(workdir, '[shoplake]\nlake = "from_file"\nthreads = 3\nmemory_limit = "5GB"\n'
                   's3_region = "eu-west-1"\n')
    settings = load_settings(env={})
    assert settings.lake == Path("from_file")
    assert settings.threads == 3
    assert settings.memory_limit == "5GB"
    assert settings.s3_region == "eu-west-1"
    assert settings.engine == "duckdb"  # not set in the file: default kept


def test_config_file_without_section_is_accepted(workdir):
    _toml(workdir, 'lake = "flat"\n')
    assert load_settings(env={}).lake == Path("flat")


def test_config_file_ignores_unknown_keys(workdir):
    _toml(workdir, '[shoplake]\nlake = "x"\ncolour = "blue"\n')
    assert load_settings(env={}).lake == Path("x")


def test_config_env_beats_file(workdir):
    _toml(workdir, '[shoplake]\nlake = "from_file"\nthreads = 3\nmemory_limit = "5GB"\n')
    settings = load_settings(env={"SHOPLAKE_LAKE": "from_env", "SHOPLAKE_THREADS": "8"})
    assert settings.lake == Path("from_env")
    assert settings.threads == 8
    assert settings.memory_limit == "5GB"  # only in the file


def test_config_overrides_beat_env_and_file(workdir):
    _toml(workdir, '[shoplake]\nlake = "from_file"\nthreads = 3\n')
    env = {"SHOPLAKE_LAKE": "from_env", "SHOPLAKE_THREADS": "8"}
    settings = load_settings(env=env, lake=Path("from_flag"), threads=None)
    assert settings.lake == Path("from_flag")
    assert settings.threads == 8  # None means "flag not given"


def test_config_empty_env_value_is_ignored(workdir):
    _toml(workdir, '[shoplake]\nlake = "from_file"\n')
    assert load_settings(env={"SHOPLAKE_LAKE": ""}).lake == Path("from_file")


def test_config_reads_the_given_env_not_the_process_env(workdir, monkeypatch):
    monkeypatch.setenv("SHOPLAKE_LAKE", "from_process")
    assert load_settings(env={}).lake == Path("lakehouse")
    assert load_settings().lake == Path("from_process")


def test_config_file_named_by_shoplake_config(workdir):
    other = _toml(workdir, '[shoplake]\nlake = "elsewhere"\n', name="other.toml")
    _toml(workdir, '[shoplake]\nlake = "local"\n')
    assert load_settings(env={"SHOPLAKE_CONFIG": str(other)}).lake == Path("elsewhere")


def test_config_missing_shoplake_config_file_is_an_error(workdir):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"SHOPLAKE_CONFIG": str(workdir / "absent.toml")})


def test_config_invalid_toml_is_an_error(workdir):
    _toml(workdir, "[shoplake\nlake = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(env={})


@pytest.mark.parametrize("layer", ["file", "env", "override", "constructor"])
def test_config_bad_engine_is_a_config_error(workdir, layer):
    with pytest.raises(ConfigError, match="unknown engine 'flink'"):
        if layer == "file":
            _toml(workdir, '[shoplake]\nengine = "flink"\n')
            load_settings(env={})
        elif layer == "env":
            load_settings(env={"SHOPLAKE_ENGINE": "flink"})
        elif layer == "override":
            load_settings(env={}, engine="flink")
        else:
            Settings(engine="flink")


def test_config_later_layer_can_fix_an_earlier_bad_engine(workdir):
    _toml(workdir, '[shoplake]\nengine = "flink"\n')
    assert load_settings(env={"SHOPLAKE_ENGINE": "spark"}).engine == "spark"


def test_config_engine_precedence(workdir):
    _toml(workdir, '[shoplake]\nengine = "spark"\n')
    assert load_settings(env={}).engine == "spark"
    assert load_settings(env={"SHOPLAKE_ENGINE": "duckdb"}).engine == "duckdb"
    assert load_settings(env={"SHOPLAKE_ENGINE": "duckdb"}, engine="spark").engine == "spark"


def test_config_non_integer_threads_is_an_error(workdir):
    with pytest.raises(ConfigError, match="threads='many' is not an integer"):
        load_settings(env={"SHOPLAKE_THREADS": "many"})


def test_config_unknown_override_is_an_error(workdir):
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(env={}, colour="blue")


def test_config_paths_are_expanded(workdir, monkeypatch):
    monkeypatch.setenv("HOME", str(workdir))
    settings = load_settings(env={"SHOPLAKE_SPOOL_DIR": "~/spool"}, lake="~/lake")
    assert settings.lake == workdir / "lake"
    assert settings.spool_dir == workdir / "spool"


def test_config_aws_endpoint_url_is_honoured_below_shoplake_settings(workdir):
    assert load_settings(env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}).s3_endpoint == "http://127.0.0.1:9000"
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "SHOPLAKE_S3_ENDPOINT": "http://127.0.0.1:9001"}
    assert load_settings(env=env).s3_endpoint == "http://127.0.0.1:9001"
    assert load_settings(env=env, s3_endpoint="http://127.0.0.1:9002").s3_endpoint == "http://127.0.0.1:9002"


def test_object_storage_lake_is_refused_with_a_clear_error():
    with pytest.raises(ConfigError, match="local or mounted folder"):
        load_settings(env={}, lake="s3://shop-bucket/lake")


def test_object_storage_lake_is_refused_after_path_conversion():
    # The CLI's --lake option arrives as a Path, which has already folded "s3://" into "s3:/".
    with pytest.raises(ConfigError, match="local or mounted folder"):
        load_settings(env={}, lake=Path("s3://shop-bucket/lake"))
