"""Job definitions: job files validated into pydantic models (`JobDef`, one task model per `kind`).

A job file (YAML) declares jobs; a job is a DAG of tasks. The file shipped with shoplake
(`shoplake/jobs/jobs.yaml`) is read first; a user's file (`shoplake-jobs.yaml` in the working directory,
or the file named by the `jobs_file` setting) then overrides jobs of the same name and adds new ones.

Every problem in the files (unknown kinds, options or tasks, cycles, unknown tables in a build
selection, bad cron expressions, ...) is collected and raised as one `ConfigError` before anything runs.
A task is also what one attempt runs: the runner hands the task model to `shoplake.jobs.tasks.execute`,
and `shoplake jobs task ...` builds the same model from its command line.

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shoplake.catalog import Catalog
from shoplake.catalog.models import KINDS as MODEL_KINDS
from shoplake.catalog.models import model_spec
from shoplake.config import Settings
from shoplake.errors import ConfigError, ShoplakeError
from shoplake.sources.lines import check_encoding
from shoplake.sources.schemas import SOURCES

KINDS = ("ingest", "build", "ml_train", "ml_score", "maintain", "verify")
USER_JOBS_FILE = "shoplake-jobs.yaml"
SHIPPED = "shipped"
# Databricks task keys allow these characters; a job that exports must satisfy them, so all do.
_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,100}$"


def _problem(message: str) -> PydanticCustomError:
    """A validation problem whose message is shown as written."""
    return PydanticCustomError("shoplake", "{message}", {"message": message})


def _names(value: Any) -> Any:
    """`a` or `[a, b]` as a tuple of names (anything else is left for the type check to refuse)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskDefaults(_Model):
    """`defaults:` of a file or a job: the options every task of it takes unless it says otherwise."""

    retries: int | None = Field(None, ge=0, strict=True)
    retry_backoff: float | None = Field(None, ge=0, strict=True)
    timeout: float | None = Field(None, gt=0, strict=True)


class _Task(_Model):
    """What every task has.

    Attributes:
        name: unique within the job (letters, digits, `_` and `-`); the key of the task in the file.
        depends_on: tasks that must succeed first.
        retries: extra attempts after a failed one (only transient failures are retried).
        retry_backoff: seconds before the first retry; doubled for each further retry.
        timeout: seconds an attempt may run before it is killed (and counted as failed).
    """

    name: str = Field("", pattern=_NAME_PATTERN)
    depends_on: tuple[str, ...] = ()
    description: str = ""
    retries: int = Field(2, ge=0, strict=True)  # strict: `retries: true` is refused, not read as 1
    retry_backoff: float = Field(5.0, ge=0, strict=True)
    timeout: float = Field(3600.0, gt=0, strict=True)

    _names = field_validator("depends_on", mode="before")(_names)

    @field_validator("description", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else ("" if value is None else value)

    def args(self, landing_root: str) -> list[str]:
        """The task's arguments to `shoplake jobs task` (what the runner and a Databricks task run)."""
        return [self.kind.replace("_", "-")]  # type: ignore[attr-defined]  # every task model has `kind`

    def writes(self, catalog: Catalog) -> frozenset[str]:
        """Tables (or resources) this task writes; tasks that share one never run at the same time.

        The append-only `ops.ledger`, `ops.data_quality` and `ops.job_runs` are left out: concurrent
        blind appends commit safely in Delta (optimistic concurrency), and every task appends to them.
        """
        return frozenset()

    def resolved(self, landing_root: str) -> TaskDef:
        """The task as one attempt runs it (an ingest task's landing folder resolved against the root)."""
        return self  # type: ignore[return-value]  # every concrete task model is a TaskDef


class IngestTask(_Task):
    """Ingest the new files of a landing location (`landing`) or explicit `paths` into bronze.<source>.

    Attributes:
        source: `clickstream`, `products` or `retail`.
        landing: a folder name under the landing root, an absolute folder or an `s3://` prefix; only files
            not ingested yet are picked up.
        paths: explicit files, folders, globs or URLs (instead of `landing`).
        encoding: the text encoding of the CSV files (`utf-8`, `latin-1`, `cp1252`).
    """

    kind: Literal["ingest"]
    source: str
    landing: str | None = None
    paths: tuple[str, ...] = ()
    encoding: str = "utf-8"

    _paths = field_validator("paths", mode="before")(_names)

    @field_validator("source", mode="before")
    @classmethod
    def _known_source(cls, value: Any) -> Any:
        if value not in SOURCES:
            raise _problem(f"source must be one of {', '.join(SOURCES)}, got {value!r}")
        return value

    @field_validator("landing")
    @classmethod
    def _landing_text(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise _problem("landing must be a folder name, a folder or an s3:// prefix")
        return value

    @field_validator("encoding", mode="before")
    @classmethod
    def _known_encoding(cls, value: Any) -> str:
        try:
            return check_encoding(str(value))
        except ShoplakeError as exc:
            raise _problem(str(exc)) from None

    @model_validator(mode="after")
    def _one_input(self) -> IngestTask:
        if (self.landing is None) == (not self.paths):
            raise _problem("an ingest task takes either 'landing' (a folder under the landing root, an absolute "
                           "folder or an s3:// prefix) or 'paths', not both or neither")
        return self

    def landing_location(self, landing_root: str) -> str | None:
        """The landing folder or prefix this task reads, resolved against `landing_root`."""
        if self.landing is None:
            return None
        if "://" in self.landing or Path(self.landing).is_absolute():
            return self.landing
        if "://" in landing_root:
            return landing_root.rstrip("/") + "/" + self.landing.strip("/") + "/"
        return str(Path(landing_root) / self.landing)

    def resolved(self, landing_root: str) -> TaskDef:
        return self.model_copy(update={"landing": self.landing_location(landing_root)})

    def args(self, landing_root: str) -> list[str]:
        args = ["ingest", self.source]
        location = self.landing_location(landing_root)
        if location is not None:
            args += ["--landing", location]
        for path in self.paths:
            args += ["--path", path]
        if self.encoding != "utf-8":
            args += ["--encoding", self.encoding]
        return args

    def writes(self, catalog: Catalog) -> frozenset[str]:
        return frozenset({f"bronze.{self.source}", f"quarantine.{self.source}"})


def _selection(value: Any, info: ValidationInfo, *, expected: str,
               tables: Callable[[Catalog, str | None], Iterable[Any]]) -> Any:
    """A `select` option: text that picks at least one table of the catalog (in the validation context)."""
    if value is not None and not isinstance(value, str):
        raise _problem(f"select must be {expected}")
    catalog = (info.context or {}).get("catalog")
    if catalog is not None:
        try:
            picked = list(tables(catalog, value))
        except ShoplakeError as exc:
            raise _problem(f"select {value!r}: {exc}") from None
        if not picked:
            raise _problem(f"select {value!r} picks no table")
    return value


class BuildTask(_Task):
    """Build the selected Silver and Gold tables (`select`: `shoplake build` syntax; none or `all`: every table)."""

    kind: Literal["build"]
    select: str | None = None

    @field_validator("select", mode="before")
    @classmethod
    def _tables(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and value.strip().lower() == "all":
            value = None
        return _selection(value, info, expected="a selection string such as 'gold' or 'silver.events+'",
                          tables=lambda catalog, select: catalog.select(select))

    def args(self, landing_root: str) -> list[str]:
        return ["build", *([self.select] if self.select else [])]

    def writes(self, catalog: Catalog) -> frozenset[str]:
        written: set[str] = set()
        for spec in catalog.select(self.select):
            written.add(spec.name)
            if spec.build == "incremental" and spec.source:
                written.add(f"quarantine.{spec.source}")
        return frozenset(written)


class MlTrainTask(_Task):
    """Train one model (`model`: a kind of `shoplake.catalog.models`)."""

    kind: Literal["ml_train"]
    model: str

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, value: Any) -> Any:
        if value not in MODEL_KINDS:
            raise _problem(f"model must be one of {', '.join(MODEL_KINDS)}, got {value!r}")
        return value

    def args(self, landing_root: str) -> list[str]:
        return ["ml-train", self.model]

    def writes(self, catalog: Catalog) -> frozenset[str]:
        # One task per model at a time: trainings of different models run side by side (the tracking
        # store is SQLite with a busy timeout; the decisions table is appended under its writer lock).
        return frozenset({f"ml.{self.model}"})


class MlScoreTask(_Task):
    """Score the trained models (`models`; empty: every kind that has a champion)."""

    kind: Literal["ml_score"]
    models: tuple[str, ...] = ()

    _models = field_validator("models", mode="before")(_names)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in value if m not in MODEL_KINDS]
        if unknown:
            raise _problem(f"unknown model {unknown[0]!r}; expected some of {', '.join(MODEL_KINDS)}")
        return value

    def args(self, landing_root: str) -> list[str]:
        return ["ml-score", *[arg for model in self.models for arg in ("--model", model)]]

    def writes(self, catalog: Catalog) -> frozenset[str]:
        # The models it scores (never beside their training) and the tables they write.
        kinds = self.models or MODEL_KINDS
        outputs = {name for kind in kinds for name in model_spec(kind).outputs}
        return frozenset({f"ml.{kind}" for kind in kinds} | outputs)


class MaintainTask(_Task):
    """Compact, vacuum and checkpoint tables (`select`: table or layer names; none: every table)."""

    kind: Literal["maintain"]
    select: str | None = None

    @field_validator("select", mode="before")
    @classmethod
    def _tables(cls, value: Any, info: ValidationInfo) -> Any:
        return _selection(value, info, expected="table or layer names such as 'ops' or 'silver.events'",
                          tables=maintained_tables)

    def args(self, landing_root: str) -> list[str]:
        return ["maintain", *([self.select] if self.select else [])]

    def writes(self, catalog: Catalog) -> frozenset[str]:
        # Every table it may rewrite: a build or an ingest of the same run waits for it (and across
        # processes, each table's writer lock keeps them apart).
        return frozenset(maintained_tables(catalog, self.select))


class VerifyTask(_Task):
    """Reconcile the lake across tables (`shoplake verify`); reads only."""

    kind: Literal["verify"]


TaskDef = Annotated[IngestTask | BuildTask | MlTrainTask | MlScoreTask | MaintainTask | VerifyTask,
                    Field(discriminator="kind")]
_TASK = TypeAdapter(TaskDef)
_TASK_MODELS: dict[str, type[_Task]] = {
    "ingest": IngestTask, "build": BuildTask, "ml_train": MlTrainTask, "ml_score": MlScoreTask,
    "maintain": MaintainTask, "verify": VerifyTask}


class JobDef(_Model):
    """A job: a named DAG of tasks, optionally on a cron schedule."""

    name: str = Field(pattern=_NAME_PATTERN)
    tasks: dict[str, TaskDef] = Field(min_length=1)
    description: str = ""
    schedule: str | None = None
    timezone: str = "UTC"
    max_parallel: int = Field(2, ge=1, strict=True)
    defaults: TaskDefaults | None = None
    _order: tuple[str, ...] = PrivateAttr(default=())
    _origin: str = PrivateAttr(default=SHIPPED)

    @model_validator(mode="before")
    @classmethod
    def _name_the_tasks(cls, data: Any, info: ValidationInfo) -> Any:
        """Each task's name is its key; the file's and the job's `defaults` fill the options a task omits."""
        if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), Mapping):
            return data
        inherited = dict((info.context or {}).get("defaults") or {})
        own = data.get("defaults")
        if isinstance(own, Mapping):
            inherited.update({k: v for k, v in own.items() if k in TaskDefaults.model_fields and v is not None})
        tasks = {name: ({**inherited, **task, "name": str(name)} if isinstance(task, Mapping) else task)
                 for name, task in data["tasks"].items()}
        return {**data, "tasks": tasks}

    @field_validator("description", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and (len(value.split()) not in (5, 6) or not croniter.is_valid(value)):
            raise _problem(f"schedule: {value!r} is not a valid cron expression (5 fields 'minute hour "
                           f"day-of-month month day-of-week', or 6 with seconds last), e.g. '0 2 * * *'")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise _problem(f"unknown timezone {value!r} (expected an IANA name such as UTC or "
                           f"Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _dag(self) -> JobDef:
        problems = []
        for task in self.tasks.values():
            for dep in task.depends_on:
                if dep == task.name:
                    problems.append(f"task {task.name!r} depends on itself")
                elif dep not in self.tasks:
                    problems.append(f"task {task.name!r}: depends_on names unknown task {dep!r}"
                                    f"{_hint(dep, self.tasks)}")
        # Fed in file order, so ties keep the order the author wrote.
        sorter: TopologicalSorter[str] = TopologicalSorter()
        for task in self.tasks.values():
            sorter.add(task.name, *[d for d in task.depends_on if d in self.tasks and d != task.name])
        try:
            self._order = tuple(sorter.static_order())
        except CycleError as exc:
            problems.append(f"tasks form a cycle: {' -> '.join(reversed(exc.args[1]))} (each depends on the "
                            f"next); remove one of these depends_on")
        if problems:
            raise PydanticCustomError("shoplake_many", "{problems}", {"problems": problems})
        return self

    @property
    def origin(self) -> str:
        """Where the job is defined: `shipped` or the user's job file."""
        return self._origin

    def task(self, name: str) -> TaskDef:
        try:
            return self.tasks[name]
        except KeyError:
            raise ConfigError(f"job {self.name!r} has no task {name!r}{_hint(name, self.tasks)}") from None

    def ordered(self) -> list[TaskDef]:
        """Tasks in dependency order (upstream first; ties in file order)."""
        return [self.tasks[n] for n in self._order]

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


class _JobFile(_Model):
    """The top level of a job file; each job is validated on its own (so one bad job names itself)."""

    version: Literal[1] = 1
    defaults: TaskDefaults | None = None
    jobs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("jobs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


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

    def __iter__(self) -> Iterator[JobDef]:
        return iter(self.jobs.values())


def maintained_tables(catalog: Catalog, select: str | None) -> set[str]:
    """The catalog tables a `maintain` task with this selection may rewrite (table or layer names)."""
    names = {spec.name for spec in catalog}
    if not select or not select.strip():
        return names
    picked: set[str] = set()
    for term in select.replace(",", " ").split():
        layer = {n for n in names if n.startswith(term + ".")}
        picked |= layer or {catalog.get(term).name}
    return picked


def task_from(kind: str, **options: Any) -> TaskDef:
    """A task built from command-line options (`shoplake jobs task KIND ...`), validated like a job file's.

    Raises:
        ConfigError: the problems, in one line.
    """
    try:
        return _TASK.validate_python({"kind": kind, **{k: v for k, v in options.items() if v is not None}})
    except ValidationError as exc:
        raise ConfigError("; ".join(_messages(exc, "", kind))) from None


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- reading files ------------------------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (YAML would silently keep the last one)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
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
    try:
        file = _JobFile.model_validate(data)
    except ValidationError as exc:
        return {}, _messages(exc, where, "file")
    if not isinstance(file.jobs, Mapping):
        return {}, [f"{where}: 'jobs' must be a mapping of job name to job"]
    defaults = file.defaults.model_dump(exclude_none=True) if file.defaults else {}
    jobs: dict[str, JobDef] = {}
    problems: list[str] = []
    for name, raw in file.jobs.items():
        job_where = f"{where}: job {name!r}"
        if not isinstance(raw, Mapping):
            problems.append(f"{job_where}: expected a mapping with 'tasks'")
            continue
        try:
            job = JobDef.model_validate({**raw, "name": str(name)}, context={"catalog": catalog, "defaults": defaults})
        except ValidationError as exc:
            problems += _messages(exc, job_where, "job")
            continue
        job._origin = origin
        jobs[job.name] = job
    return jobs, problems


# -- one line per problem -------------------------------------------------------------------------------

_NUMBERS = {"retries": ("an integer", ">= 0"), "max_parallel": ("an integer", ">= 1"),
            "retry_backoff": ("a number", ">= 0"), "timeout": ("a number", "> 0")}
_OPTIONS = {
    "file": set(_JobFile.model_fields), "job": set(JobDef.model_fields) - {"name"},
    "defaults": set(TaskDefaults.model_fields),
    **{kind: set(model.model_fields) - {"name"} for kind, model in _TASK_MODELS.items()},
}


def _messages(exc: ValidationError, where: str, scope: str) -> list[str]:
    """pydantic's errors as shoplake's one-line problems, each prefixed by `where` and where inside it.

    `scope` is what was validated: `file`, `job` or a task kind (the options a hint is drawn from).
    """
    found: list[str] = []
    for error in exc.errors(include_url=False):
        loc, prefix, inner = [str(part) for part in error["loc"]], where, scope
        if inner == "file" and loc[:1] == ["jobs"] and len(loc) > 1:
            prefix, inner, loc = f"{prefix}: job {loc[1]!r}", "job", loc[2:]
        if inner == "job" and loc[:1] == ["tasks"] and len(loc) > 1:
            prefix, inner, loc = f"{prefix}: task {loc[1]!r}", "task", loc[2:]
        if loc and loc[0] in _TASK_MODELS:  # a discriminated union names the kind in the location
            inner, loc = loc[0], loc[1:]
        if loc[:1] == ["defaults"]:
            prefix, inner, loc = f"{prefix}: defaults", "defaults", loc[1:]
        for message in _message(error, inner, loc[0] if loc else ""):
            found.append(f"{prefix}: {message}" if prefix else message)
    return found


def _message(error: Any, scope: str, field: str) -> list[str]:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "shoplake":
        return [str(ctx["message"])]
    if kind == "shoplake_many":
        return [str(problem) for problem in ctx["problems"]]
    if kind == "extra_forbidden":
        return [f"unknown option {field!r}{_hint(field, _OPTIONS.get(scope, set()))}"]
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return [f"unknown kind {tag!r}{_hint(str(tag), KINDS)}; expected one of {', '.join(KINDS)}"]
    if kind == "union_tag_not_found":
        return [f"unknown kind None; expected one of {', '.join(KINDS)}"]
    if field in _NUMBERS:
        what, bound = _NUMBERS[field]
        return [f"{field} must be {what} {bound}, got {value!r}"]
    if field == "tasks":
        return ["'tasks' must be a non-empty mapping of task name to task"]
    if field == "name" or kind == "string_pattern_mismatch":
        return [f"a {'job' if scope in ('job', 'file') else 'task'} name may hold only letters, digits, '_' and '-'"]
    if field in ("depends_on", "paths", "models"):
        return [f"{field} must be a name or a list of names, got {value!r}"]
    if field == "version":
        return [f"version {value!r} is not supported (expected 1)"]
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return [f"{field + ': ' if field else ''}expected a mapping" + (" with a 'kind'" if scope == "task" else "")]
    if kind == "missing":
        return [f"{field!r} is required"]
    return [f"{field}: {error['msg']}" if field else str(error["msg"])]
