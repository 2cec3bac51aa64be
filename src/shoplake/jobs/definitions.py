"""Job definitions: parse and validate job files into `JobDef`s.

A job file (YAML) declares jobs; a job is a DAG of tasks. The file shipped with shoplake
(`shoplake/jobs/jobs.yaml`) is read first; a user's file (`shoplake-jobs.yaml` in the working directory,
or the file named by the `jobs_file` setting) then overrides jobs of the same name and adds new ones.

Every problem in the files (unknown kinds, options or tasks, cycles, unknown tables in a build
selection, bad cron expressions, ...) is collected and raised as one `ConfigError` before anything runs.

```yaml
defaults: {retries: 2, retry_backoff: 5, timeout: 3600}   # task defaults for the jobs of this file
jobs:
  daily:
    description: ...
    schedule: "0 2 * * *"          # cron (5 fields, or 6 with seconds last); optional
    timezone: UTC
    max_parallel: 3
    tasks:
      ingest_products: {kind: ingest, source: products, landing: products}
      build: {kind: build, select: gold+, depends_on: [ingest_products]}
```
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from shoplake.catalog import Catalog
from shoplake.catalog.models import KINDS as MODEL_KINDS
from shoplake.config import Settings
from shoplake.errors import ConfigError, ShoplakeError
from shoplake.sources.lines import check_encoding
from shoplake.sources.schemas import SOURCES

KINDS = ("ingest", "build", "ml_train", "ml_score", "maintain", "verify")
USER_JOBS_FILE = "shoplake-jobs.yaml"
SHIPPED = "shipped"

# Databricks task keys allow these characters; a job that exports must satisfy them, so all do.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")

_TASK_DEFAULTS: dict[str, Any] = {"retries": 2, "retry_backoff": 5.0, "timeout": 3600.0}
_TASK_COMMON = {"kind", "depends_on", "description", "retries", "retry_backoff", "timeout",
                "fail_times", "pause_after", "pause_seconds"}
_TASK_OPTIONS = {
    "ingest": {"source", "landing", "paths", "encoding"},
    "build": {"select"},
    "ml_train": {"model"},
    "ml_score": {"models"},
    "maintain": {"select"},
    "verify": set(),
}
_JOB_OPTIONS = {"description", "schedule", "timezone", "max_parallel", "defaults", "tasks"}
_FILE_OPTIONS = {"version", "defaults", "jobs"}


@dataclass(frozen=True)
class TaskDef:
    """One task of a job.

    Attributes:
        name: unique within the job (letters, digits, `_` and `-`).
        kind: `ingest`, `build`, `ml_train`, `ml_score`, `maintain` (compact, vacuum and checkpoint tables;
            see `shoplake.maintenance`) or `verify` (reconcile the lake; reads only).
        depends_on: tasks that must succeed first.
        source: ingest: `clickstream`, `products` or `retail`.
        landing: ingest: a landing location, either a folder name under the landing root, an absolute
            folder or an `s3://` prefix; only files not ingested yet are picked up.
        paths: ingest: explicit files, folders, globs or URLs (instead of `landing`).
        encoding: ingest: the text encoding of the CSV files (`utf-8`, `latin-1`, `cp1252`).
        select: build: a table selection (`shoplake build` syntax); None builds every table. maintain:
            table or layer names (`ops`, `silver.events`); None maintains every table.
        model: ml_train: `segments`, `rfm` or `propensity`.
        models: ml_score: the models to score (empty: all).
        retries: extra attempts after a failed one.
        retry_backoff: seconds before the first retry; doubled for each further retry.
        timeout: seconds an attempt may run before it is killed (and counted as failed).
        fail_times: testing aid: attempts 1..N of this task fail on purpose before doing anything.
        pause_after: testing aid: pause the attempt at `start` or after it wrote the named table.
        pause_seconds: testing aid: how long that pause lasts.
    """

    name: str
    kind: str
    depends_on: tuple[str, ...] = ()
    description: str = ""
    source: str | None = None
    landing: str | None = None
    paths: tuple[str, ...] = ()
    encoding: str = "utf-8"
    select: str | None = None
    model: str | None = None
    models: tuple[str, ...] = ()
    retries: int = 2
    retry_backoff: float = 5.0
    timeout: float = 3600.0
    fail_times: int = 0
    pause_after: str | None = None
    pause_seconds: float = 60.0

    def landing_location(self, landing_root: str) -> str | None:
        """The landing folder or prefix this task reads, resolved against `landing_root`."""
        if self.landing is None:
            return None
        if "://" in self.landing or Path(self.landing).is_absolute():
            return self.landing
        if "://" in landing_root:
            return landing_root.rstrip("/") + "/" + self.landing.strip("/") + "/"
        return str(Path(landing_root) / self.landing)

    def args(self, landing_root: str) -> list[str]:
        """The task's arguments to `shoplake jobs task` (what the runner and a Databricks task run)."""
        if self.kind == "ingest":
            args = ["ingest", str(self.source)]
            location = self.landing_location(landing_root)
            if location is not None:
                args += ["--landing", location]
            for path in self.paths:
                args += ["--path", path]
            if self.encoding != "utf-8":
                args += ["--encoding", self.encoding]
            return args
        if self.kind == "build":
            return ["build", *([self.select] if self.select else [])]
        if self.kind == "ml_train":
            return ["ml-train", str(self.model)]
        if self.kind == "verify":
            return ["verify"]
        if self.kind == "maintain":
            return ["maintain", *([self.select] if self.select else [])]
        args = ["ml-score"]
        for model in self.models:
            args += ["--model", model]
        return args

    def writes(self, catalog: Catalog) -> frozenset[str]:
        """Tables (or resources) this task writes; tasks that share one never run at the same time.

        The append-only `ops.ledger`, `ops.data_quality` and `ops.job_runs` are left out: concurrent
        blind appends commit safely in Delta (optimistic concurrency), and every task appends to them.
        """
        if self.kind == "ingest":
            return frozenset({f"bronze.{self.source}", f"quarantine.{self.source}"})
        if self.kind == "build":
            written: set[str] = set()
            for spec in catalog.select(self.select):
                written.add(spec.name)
                if spec.build == "incremental" and spec.source:
                    written.add(f"quarantine.{spec.source}")
            return frozenset(written)
        if self.kind == "verify":
            return frozenset()  # reads only
        if self.kind == "maintain":
            # Every table it may rewrite: a build or an ingest of the same run waits for it (and across
            # processes, each table's writer lock keeps them apart).
            return frozenset(_maintained_tables(catalog, self.select))
        # The models' tables and the tracking store are shoplake.ml's business: one ML task at a time.
        return frozenset({"ml"})


@dataclass(frozen=True)
class JobDef:
    """A job: a named DAG of tasks, optionally on a cron schedule."""

    name: str
    tasks: dict[str, TaskDef]
    description: str = ""
    schedule: str | None = None
    timezone: str = "UTC"
    max_parallel: int = 2
    origin: str = SHIPPED
    order: tuple[str, ...] = field(default=())

    def task(self, name: str) -> TaskDef:
        try:
            return self.tasks[name]
        except KeyError:
            raise ConfigError(f"job {self.name!r} has no task {name!r}{_hint(name, self.tasks)}") from None

    def ordered(self) -> list[TaskDef]:
        """Tasks in dependency order (upstream first; ties in file order)."""
        return [self.tasks[n] for n in self.order]

    def descendants(self, name: str) -> set[str]:
        found: set[str] = set()
        frontier = [name]
        while frontier:
            current = frontier.pop()
            for task in self.tasks.values():
                if current in task.depends_on and task.name not in found:
                    found.add(task.name)
                    frontier.append(task.name)
        return found

    def levels(self) -> dict[str, int]:
        """Depth of each task in the DAG (0 = no dependencies): the plan's step numbers."""
        level: dict[str, int] = {}
        for task in self.ordered():
            level[task.name] = 1 + max((level[d] for d in task.depends_on), default=-1)
        return level


@dataclass(frozen=True)
class JobBook:
    """All jobs known to this lake: the shipped ones, overridden and extended by the user's file."""

    jobs: dict[str, JobDef]
    files: tuple[str, ...]

    def get(self, name: str) -> JobDef:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(f"no job named {name!r}{_hint(name, self.jobs)} (jobs: {known}; "
                              f"see `shoplake jobs list`)") from None

    def __iter__(self):
        return iter(self.jobs.values())


def _maintained_tables(catalog: Catalog, select: str | None) -> set[str]:
    """The catalog tables a `maintain` task with this selection may rewrite (table or layer names)."""
    names = {spec.name for spec in catalog}
    if not select or not select.strip():
        return names
    picked: set[str] = set()
    for term in select.replace(",", " ").split():
        layer = {n for n in names if n.startswith(term + ".")}
        picked |= layer or {catalog.get(term).name}
    return picked


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def shipped_text() -> str:
    """The job file shipped inside the package."""
    return resources.files("shoplake.jobs").joinpath("jobs.yaml").read_text()


def user_jobs_file(settings: Settings, cwd: Path | None = None) -> Path | None:
    """The user's job file: the `jobs_file` setting, else `shoplake-jobs.yaml` when it exists."""
    if settings.jobs_file is not None:
        if not Path(settings.jobs_file).is_file():
            raise ConfigError(f"jobs file {settings.jobs_file} does not exist (setting jobs_file / "
                              f"SHOPLAKE_JOBS_FILE)")
        return Path(settings.jobs_file)
    candidate = (cwd or Path.cwd()) / USER_JOBS_FILE
    return candidate if candidate.is_file() else None


def load_jobs(settings: Settings, catalog: Catalog, *, cwd: Path | None = None,
              include_shipped: bool = True) -> JobBook:
    """Every job: the shipped file, then the user's file (same name replaces, new names extend).

    Raises:
        ConfigError: one error listing every problem found in the files.
    """
    jobs: dict[str, JobDef] = {}
    files: list[str] = []
    problems: list[str] = []
    sources: list[tuple[str, str]] = []
    if include_shipped:
        sources.append((SHIPPED, shipped_text()))
    user = user_jobs_file(settings, cwd)
    if user is not None:
        sources.append((str(user), user.read_text()))
    for origin, text in sources:
        files.append(origin)
        found, errors = parse_jobs(text, origin=origin, catalog=catalog)
        jobs.update(found)
        problems += errors
    if problems:
        raise ConfigError("invalid job definitions: " + "; ".join(problems))
    return JobBook(jobs, tuple(files))


def parse_jobs(text: str, *, origin: str, catalog: Catalog) -> tuple[dict[str, JobDef], list[str]]:
    """Parse one job file. Returns the valid jobs and the problems found (prefixed by file and job)."""
    where = "the shipped job file" if origin == SHIPPED else origin
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        return {}, [f"{where}: not valid YAML: {' '.join(str(exc).split())}"]
    if not isinstance(data, Mapping):
        return {}, [f"{where}: expected a mapping with a 'jobs' key"]
    problems: list[str] = []
    _unknown_keys(data, _FILE_OPTIONS, f"{where}", problems)
    if data.get("version", 1) != 1:
        problems.append(f"{where}: version {data.get('version')!r} is not supported (expected 1)")
    file_defaults = _defaults(data.get("defaults"), f"{where}: defaults", problems)
    raw_jobs = data.get("jobs") or {}
    if not isinstance(raw_jobs, Mapping):
        return {}, problems + [f"{where}: 'jobs' must be a mapping of job name to job"]
    jobs: dict[str, JobDef] = {}
    for name, raw in raw_jobs.items():
        before = len(problems)
        job = _parse_job(str(name), raw, {**_TASK_DEFAULTS, **file_defaults}, origin, f"{where}: job {name!r}",
                         catalog, problems)
        if job is not None and len(problems) == before:
            jobs[job.name] = job
    return jobs, problems


def _unknown_keys(data: Mapping, allowed: set[str], where: str, problems: list[str]) -> None:
    for key in data:
        if key not in allowed:
            problems.append(f"{where}: unknown option {key!r}{_hint(str(key), allowed)}")


def _defaults(raw: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping")
        return {}
    _unknown_keys(raw, set(_TASK_DEFAULTS), where, problems)
    return {k: v for k, v in raw.items() if k in _TASK_DEFAULTS}


def _number(value: Any, name: str, where: str, problems: list[str], *, integer: bool = False,
            minimum: float = 0, strict: bool = False) -> Any:
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or value < minimum or (strict and value <= minimum):
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum}" if strict else f">= {minimum}"
        problems.append(f"{where}: {name} must be {kind} {bound}, got {value!r}")
        return None
    return value


def _names(value: Any, name: str, where: str, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    problems.append(f"{where}: {name} must be a name or a list of names, got {value!r}")
    return ()


def _parse_job(name: str, raw: Any, defaults: dict[str, Any], origin: str, where: str, catalog: Catalog,
               problems: list[str]) -> JobDef | None:
    if not _NAME.match(name):
        problems.append(f"{where}: a job name may hold only letters, digits, '_' and '-'")
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with 'tasks'")
        return None
    _unknown_keys(raw, _JOB_OPTIONS, where, problems)
    defaults = {**defaults, **_defaults(raw.get("defaults"), f"{where}: defaults", problems)}
    raw_tasks = raw.get("tasks")
    if not isinstance(raw_tasks, Mapping) or not raw_tasks:
        problems.append(f"{where}: 'tasks' must be a non-empty mapping of task name to task")
        return None
    tasks: dict[str, TaskDef] = {}
    for task_name, raw_task in raw_tasks.items():
        task = _parse_task(str(task_name), raw_task, defaults, f"{where}: task {task_name!r}", catalog, problems)
        if task is not None:
            tasks[task.name] = task
    for task in tasks.values():
        for dep in task.depends_on:
            if dep not in raw_tasks:
                problems.append(f"{where}: task {task.name!r}: depends_on names unknown task {dep!r}"
                                f"{_hint(dep, raw_tasks)}")
            elif dep == task.name:
                problems.append(f"{where}: task {task.name!r} depends on itself")
    order: tuple[str, ...] = ()
    try:
        # Feed the tasks in file order, so ties keep the order the author wrote.
        sorter: TopologicalSorter[str] = TopologicalSorter()
        for task in tasks.values():
            sorter.add(task.name, *[d for d in task.depends_on if d in tasks and d != task.name])
        order = tuple(sorter.static_order())
    except CycleError as exc:
        cycle = " -> ".join(reversed(exc.args[1]))
        problems.append(f"{where}: tasks form a cycle: {cycle} (each depends on the next); remove one of "
                        f"these depends_on")

    schedule = raw.get("schedule")
    timezone = raw.get("timezone", "UTC")
    if schedule is not None:
        schedule = _check_cron(schedule, f"{where}: schedule", problems)
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: unknown timezone {timezone!r} (expected an IANA name such as UTC or "
                        f"Europe/Paris)")
    max_parallel = _number(raw.get("max_parallel", 2), "max_parallel", where, problems, integer=True, minimum=1)
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{where}: description must be text")
        description = ""
    return JobDef(name=name, tasks=tasks, description=description.strip(), schedule=schedule,
                  timezone=str(timezone), max_parallel=max_parallel or 1, origin=origin,
                  order=tuple(n for n in order if n in tasks))


def _check_cron(value: Any, where: str, problems: list[str]) -> str | None:
    from croniter import croniter

    if not isinstance(value, str) or len(value.split()) not in (5, 6) or not croniter.is_valid(value):
        problems.append(f"{where}: {value!r} is not a valid cron expression (5 fields 'minute hour "
                        f"day-of-month month day-of-week', or 6 with seconds last), e.g. '0 2 * * *'")
        return None
    return value


def _parse_task(name: str, raw: Any, defaults: dict[str, Any], where: str, catalog: Catalog,
                problems: list[str]) -> TaskDef | None:
    if not _NAME.match(name):
        problems.append(f"{where}: a task name may hold only letters, digits, '_' and '-'")
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with a 'kind'")
        return None
    kind = raw.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: unknown kind {kind!r}{_hint(str(kind), KINDS)}; expected one of "
                        f"{', '.join(KINDS)}")
        return None
    _unknown_keys(raw, _TASK_COMMON | _TASK_OPTIONS[kind], where, problems)
    opts = {**defaults, **{k: v for k, v in raw.items() if k in _TASK_DEFAULTS}}
    retries = _number(opts["retries"], "retries", where, problems, integer=True)
    backoff = _number(opts["retry_backoff"], "retry_backoff", where, problems)
    timeout = _number(opts["timeout"], "timeout", where, problems, strict=True)
    fail_times = _number(raw.get("fail_times", 0), "fail_times", where, problems, integer=True)
    pause_seconds = _number(raw.get("pause_seconds", 60), "pause_seconds", where, problems)
    pause_after = raw.get("pause_after")
    if pause_after is not None and not isinstance(pause_after, str):
        problems.append(f"{where}: pause_after must be 'start' or a table name")
        pause_after = None
    description = raw.get("description", "")
    task = dict(name=name, kind=kind, depends_on=_names(raw.get("depends_on"), "depends_on", where, problems),
                description=str(description or "").strip(), retries=retries or 0,
                retry_backoff=float(backoff or 0), timeout=float(timeout or 1), fail_times=fail_times or 0,
                pause_after=pause_after, pause_seconds=float(pause_seconds or 0))

    if kind == "ingest":
        source = raw.get("source")
        if source not in SOURCES:
            problems.append(f"{where}: source must be one of {', '.join(SOURCES)}, got {source!r}")
        landing, paths = raw.get("landing"), _names(raw.get("paths"), "paths", where, problems)
        if (landing is None) == (not paths):
            problems.append(f"{where}: an ingest task takes either 'landing' (a folder under the landing "
                            f"root, an absolute folder or an s3:// prefix) or 'paths', not both or neither")
        if landing is not None and (not isinstance(landing, str) or not landing.strip()):
            problems.append(f"{where}: landing must be a folder name, a folder or an s3:// prefix")
            landing = None
        encoding = raw.get("encoding", "utf-8")
        try:
            encoding = check_encoding(str(encoding))
        except ShoplakeError as exc:
            problems.append(f"{where}: {exc}")
            encoding = "utf-8"
        task.update(source=source, landing=landing, paths=paths, encoding=encoding)
    elif kind == "build":
        select = raw.get("select")
        if select is not None and not isinstance(select, str):
            problems.append(f"{where}: select must be a selection string such as 'gold' or 'silver.events+'")
            select = None
        if isinstance(select, str) and select.strip().lower() == "all":
            select = None
        try:
            if not catalog.select(select):
                problems.append(f"{where}: select {select!r} picks no table to build")
        except ShoplakeError as exc:
            problems.append(f"{where}: select {select!r}: {exc}")
        task.update(select=select)
    elif kind == "maintain":
        select = raw.get("select")
        if select is not None and not isinstance(select, str):
            problems.append(f"{where}: select must be table or layer names such as 'ops' or 'silver.events'")
            select = None
        try:
            _maintained_tables(catalog, select)
        except ShoplakeError as exc:
            problems.append(f"{where}: select {select!r}: {exc}")
        task.update(select=select)
    elif kind == "ml_train":
        model = raw.get("model")
        if model not in MODEL_KINDS:
            problems.append(f"{where}: model must be one of {', '.join(MODEL_KINDS)}, got {model!r}")
        task.update(model=model)
    elif kind == "ml_score":
        models = _names(raw.get("models"), "models", where, problems)
        for model in models:
            if model not in MODEL_KINDS:
                problems.append(f"{where}: unknown model {model!r}; expected some of {', '.join(MODEL_KINDS)}")
        task.update(models=models)
    if pause_after not in (None, "start"):
        if pause_after not in catalog:
            problems.append(f"{where}: pause_after {pause_after!r} is neither 'start' nor a table name")
    return TaskDef(**task)
