"""Export a job as a Databricks Jobs API 2.1 job (the body of `POST /api/2.1/jobs/create`).

Each task becomes a `python_wheel_task` calling shoplake's console entry point with the very arguments
the local runner gives its workers (`jobs task --job J --task T --run-id {{job.run_id}} ... <task args>`),
so the same DAG runs the same code on Databricks. Values that depend on the workspace (the wheel's
location, the cluster, the lake and landing paths) are placeholders unless given.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from croniter import croniter

from shoplake.errors import ConfigError
from shoplake.jobs.definitions import JobDef

CLUSTER_KEY = "shoplake_cluster"
DEFAULT_LAKE = "/Volumes/<catalog>/<schema>/shoplake/lakehouse"
DEFAULT_LANDING = "/Volumes/<catalog>/<schema>/shoplake/landing"


def _version() -> str:
    try:
        return metadata.version("shoplake")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def quartz_cron(expression: str) -> str:
    """A Quartz cron expression (`sec min hour day-of-month month day-of-week`) for a cron expression.

    Quartz needs `?` in one of the two day fields and numbers Sunday 1 (cron: 0); a cron expression that
    restricts both day fields (cron ORs them, Quartz cannot) has no Quartz equivalent.
    """
    fields = expression.split()
    expanded, nth = croniter.expand(expression)
    if nth:
        raise ConfigError(f"schedule {expression!r}: '#' day-of-week rules have no Databricks export yet")

    def text(values: list) -> str:
        return "*" if values == ["*"] else ",".join(str(v).upper() for v in values)

    minute, hour, dom, month, dow = (text(v) for v in expanded[:5])
    second = text(expanded[5]) if len(fields) == 6 else "0"
    if dow != "*":
        dow = ",".join(str(int(v) % 7 + 1) if str(v).isdigit() else str(v).upper() for v in expanded[4])
        if dom != "*":
            raise ConfigError(f"schedule {expression!r} restricts both day-of-month and day-of-week, which a "
                              f"Databricks (Quartz) schedule cannot express; keep one of them '*'")
        dom = "?"
    else:
        dow = "?"
    return f"{second} {minute} {hour} {dom} {month} {dow}"


def databricks_job(job: JobDef, *, lake_path: str = DEFAULT_LAKE, landing_root: str = DEFAULT_LANDING,
                   wheel: str | None = None, existing_cluster_id: str | None = None,
                   spark_version: str = "15.4.x-scala2.12", node_type_id: str = "<node-type-id>") -> dict[str, Any]:
    """The Jobs API 2.1 create-request body for `job`.

    Args:
        lake_path: the lake folder as the cluster sees it (a Unity Catalog volume or DBFS path).
        landing_root: the landing root (a volume path or an `s3://` prefix).
        wheel: where the shoplake wheel is uploaded (default: a volume path placeholder).
        existing_cluster_id: run on this cluster; otherwise a single-node job cluster (shoplake runs its
            embedded engine on the driver).
    """
    wheel = wheel or f"/Volumes/<catalog>/<schema>/<volume>/shoplake-{_version()}-py3-none-any.whl"
    tasks = []
    for task in job.ordered():
        parameters = ["--lake", lake_path, "jobs", "task", "--job", job.name, "--task", task.name,
                      "--run-id", "{{job.run_id}}", "--record", *task.args(landing_root)]
        entry: dict[str, Any] = {
            "task_key": task.name,
            "description": task.description or f"{task.kind} task of shoplake job {job.name}",
            "depends_on": [{"task_key": d} for d in task.depends_on],
            "python_wheel_task": {"package_name": "shoplake", "entry_point": "shoplake",
                                  "parameters": parameters},
            "libraries": [{"whl": wheel}],
            "timeout_seconds": int(task.timeout),
            "max_retries": task.retries,
            "min_retry_interval_millis": int(task.retry_backoff * 1000),
            "retry_on_timeout": True,
        }
        if existing_cluster_id:
            entry["existing_cluster_id"] = existing_cluster_id
        else:
            entry["job_cluster_key"] = CLUSTER_KEY
        tasks.append(entry)
    body: dict[str, Any] = {
        "name": f"shoplake-{job.name}",
        "description": job.description or f"shoplake job {job.name}",
        "tags": {"shoplake_job": job.name, "shoplake_version": _version()},
        "max_concurrent_runs": 1,  # like the local lock: never two runs of the job at once
        "format": "MULTI_TASK",
        "tasks": tasks,
    }
    if not existing_cluster_id:
        body["job_clusters"] = [{
            "job_cluster_key": CLUSTER_KEY,
            "new_cluster": {
                "spark_version": spark_version,
                "node_type_id": node_type_id,
                "num_workers": 0,
                "spark_conf": {"spark.databricks.cluster.profile": "singleNode", "spark.master": "local[*]"},
                "custom_tags": {"ResourceClass": "SingleNode"},
            },
        }]
    if job.schedule:
        body["schedule"] = {"quartz_cron_expression": quartz_cron(job.schedule), "timezone_id": job.timezone,
                            "pause_status": "UNPAUSED"}
    return body
