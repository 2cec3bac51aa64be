"""Databricks export: the JSON validates against the Jobs API 2.1 create-request structure, mirrors the
DAG, and each task's parameters are a working shoplake command line."""

from __future__ import annotations

import json
import subprocess

import pytest

from shoplake.errors import ConfigError
from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.export import databricks_job, quartz_cron

_TASK_KEY = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,100}$"}

# The part of the Jobs API 2.1 `jobs/create` request body that shoplake fills in (field names, types and
# required members as documented in the API reference).
JOBS_API_21 = {
    "type": "object",
    "required": ["name", "tasks"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "max_concurrent_runs": {"type": "integer", "minimum": 1},
        "format": {"enum": ["SINGLE_TASK", "MULTI_TASK"]},
        "job_clusters": {"type": "array", "items": {
            "type": "object", "required": ["job_cluster_key", "new_cluster"],
            "properties": {"job_cluster_key": _TASK_KEY, "new_cluster": {
                "type": "object", "required": ["spark_version"],
                "properties": {"spark_version": {"type": "string"}, "node_type_id": {"type": "string"},
                               "num_workers": {"type": "integer", "minimum": 0},
                               "spark_conf": {"type": "object"}, "custom_tags": {"type": "object"}}}}}},
        "schedule": {"type": "object", "required": ["quartz_cron_expression", "timezone_id"],
                     "additionalProperties": False,
                     "properties": {"quartz_cron_expression": {"type": "string"}, "timezone_id": {"type": "string"},
                                    "pause_status": {"enum": ["PAUSED", "UNPAUSED"]}}},
        "tasks": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
            "type": "object",
            "required": ["task_key", "python_wheel_task"],
            "additionalProperties": False,
            "oneOf": [{"required": ["job_cluster_key"]}, {"required": ["existing_cluster_id"]}],
            "properties": {
                "task_key": _TASK_KEY,
                "description": {"type": "string"},
                "depends_on": {"type": "array", "items": {
                    "type": "object", "required": ["task_key"], "additionalProperties": False,
                    "properties": {"task_key": _TASK_KEY, "outcome": {"type": "string"}}}},
                "python_wheel_task": {
                    "type": "object", "required": ["package_name", "entry_point"], "additionalProperties": False,
                    "properties": {"package_name": {"type": "string"}, "entry_point": {"type": "string"},
                                   "parameters": {"type": "array", "items": {"type": "string"}},
                                   "named_parameters": {"type": "object"}}},
                "libraries": {"type": "array", "items": {"type": "object", "minProperties": 1,
                                                         "properties": {"whl": {"type": "string"}}}},
                "job_cluster_key": {"type": "string"},
                "existing_cluster_id": {"type": "string"},
                "timeout_seconds": {"type": "integer", "minimum": 0},
                "max_retries": {"type": "integer", "minimum": -1},
                "min_retry_interval_millis": {"type": "integer", "minimum": 0},
                "retry_on_timeout": {"type": "boolean"},
            }}},
    },
}


def _validate(body: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(body, JOBS_API_21)
    keys = [t["task_key"] for t in body["tasks"]]
    assert len(set(keys)) == len(keys)
    clusters = {c["job_cluster_key"] for c in body.get("job_clusters", [])}
    seen: set[str] = set()
    for t in body["tasks"]:  # dependencies name known tasks, listed earlier (a DAG)
        assert {d["task_key"] for d in t.get("depends_on", [])} <= seen, t["task_key"]
        seen.add(t["task_key"])
        assert t.get("existing_cluster_id") or t["job_cluster_key"] in clusters


def test_schema_catches_a_broken_export():
    jsonschema = pytest.importorskip("jsonschema")
    broken = {"name": "x", "tasks": [{"task_key": "a b", "python_wheel_task": {"package_name": "shoplake"},
                                      "job_cluster_key": "c"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, JOBS_API_21)


def test_exported_daily_validates_and_mirrors_the_dag(workspace):
    out = workspace.root / "daily.json"
    result = workspace.cli("jobs", "export", "daily", "--format", "databricks", "--out", str(out),
                           "--wheel", "/Volumes/main/shop/wheels/shoplake-0.1.0-py3-none-any.whl")
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    _validate(body)
    daily = load_jobs(workspace.settings(), workspace.lake().catalog).get("daily")
    assert body["name"] == "shoplake-daily"
    assert {t["task_key"]: [d["task_key"] for d in t["depends_on"]] for t in body["tasks"]} == {
        t.name: list(t.depends_on) for t in daily.ordered()}
    assert body["schedule"] == {"quartz_cron_expression": "0 0 2 * * ?", "timezone_id": "UTC",
                                "pause_status": "UNPAUSED"}
    assert body["max_concurrent_runs"] == 1
    build = next(t for t in body["tasks"] if t["task_key"] == "build")
    assert build["python_wheel_task"]["package_name"] == "shoplake"
    assert build["python_wheel_task"]["entry_point"] == "shoplake"
    assert build["python_wheel_task"]["parameters"][-2:] == ["--record", "build"]
    assert build["libraries"] == [{"whl": "/Volumes/main/shop/wheels/shoplake-0.1.0-py3-none-any.whl"}]
    assert (build["max_retries"], build["timeout_seconds"], build["min_retry_interval_millis"]) == (2, 3600, 5000)
    ingest = next(t for t in body["tasks"] if t["task_key"] == "ingest_retail")
    assert ingest["python_wheel_task"]["parameters"][-4:] == [
        "ingest", "retail", "--landing", "/Volumes/<catalog>/<schema>/shoplake/landing/retail"]
    train = next(t for t in body["tasks"] if t["task_key"] == "train_rfm")
    assert train["python_wheel_task"]["parameters"][-2:] == ["ml-train", "rfm"]


def test_export_on_an_existing_cluster(workspace):
    lake = workspace.lake()
    body = databricks_job(load_jobs(lake.settings, lake.catalog).get("refresh"), existing_cluster_id="0101-abc")
    _validate(json.loads(json.dumps(body)))
    assert "job_clusters" not in body and "schedule" not in body
    assert {t["existing_cluster_id"] for t in body["tasks"]} == {"0101-abc"}


def test_exported_parameters_run_the_same_pipeline(workspace):
    """What a Databricks task would run, run here: the entry point with each task's parameters in order."""
    workspace.land_all()
    lake = workspace.lake()
    body = databricks_job(load_jobs(lake.settings, lake.catalog).get("refresh"), lake_path=str(workspace.lake_path),
                          landing_root=str(workspace.landing))
    for t in body["tasks"]:
        params = [p.replace("{{job.run_id}}", "dbx-run-1") for p in t["python_wheel_task"]["parameters"]]
        done = subprocess.run(workspace.command()[:3] + params, capture_output=True, text=True, env=workspace.env(),
                              cwd=workspace.root, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    attempts = workspace.attempts("dbx-run-1")
    assert [(a.task, a.attempt, a.status, a.trigger) for a in attempts] == [
        (t["task_key"], 1, "succeeded", "external") for t in body["tasks"]]
    assert workspace.store().row_count("gold.daily_funnel") > 0


@pytest.mark.parametrize(("cron", "quartz"), [
    ("0 2 * * *", "0 0 2 * * ?"),
    ("*/15 6-8 * * *", "0 0,15,30,45 6,7,8 * * ?"),
    ("0 9 * * MON-FRI", "0 0 9 ? * 2,3,4,5,6"),
    ("0 9 * * 0", "0 0 9 ? * 1"),
    ("30 1 1,15 * *", "0 30 1 1,15 * ?"),
    ("* * * * * */30", "0,30 * * * * ?"),
])
def test_quartz_cron(cron, quartz):
    assert quartz_cron(cron) == quartz


def test_quartz_cron_refuses_both_day_fields():
    with pytest.raises(ConfigError, match="restricts both day-of-month and day-of-week"):
        quartz_cron("0 9 1 * MON")
