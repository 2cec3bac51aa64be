"""MLflow tracking and model registry: the only module of shoplake that imports mlflow.

Where: by default a SQLite store inside the lake, `<lake>/_mlflow/mlflow.db`, with artifacts under
`<lake>/_mlflow/artifacts/<experiment>`; `Settings.mlflow_tracking_uri` (env
`SHOPLAKE_MLFLOW_TRACKING_URI`) points elsewhere (another SQLite file, a `file:` store or an MLflow
server). Each registered model has an experiment of the same name.

Models are saved in the skops format (no pickle) with a signature, an input example and shoplake
metadata (features, segment names, cutoff windows, drift references). Loading a model still executes
code from its artifact, which MLflow only allows when told to: shoplake allows it for models of its
own store only, for the duration of the load (`load`).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as _pkg
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import locks
from shoplake.config import Settings
from shoplake.errors import ShoplakeError
from shoplake.faults import crash_point
from shoplake.ml.errors import ModelNotFoundError

log = logging.getLogger(__name__)

CHAMPION = "champion"
_ALLOW_LOADING = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
_QUIET = ("mlflow", "alembic", "sqlalchemy", "skops")
_DESCRIPTIONS = {
    "shoplake-user-segments": "Behavioural segments of clickstream users (K-means; gold.user_segments).",
    "shoplake-rfm-segments": "RFM segments of retail customers (K-means on log-RFM; gold.customer_segments).",
    "shoplake-propensity": "Calibrated probability that a user buys a product within the horizon "
                           "(gold.conversion_predictions).",
    "shoplake-recommender": "Next-best products per active user and similar products per product "
                            "(gold.user_recommendations, gold.similar_products).",
    "shoplake-clv": "Customer lifetime value: BG/NBD purchases and Gamma-Gamma net spend (gold.customer_clv).",
}


def tracking_uri(settings: Settings) -> str:
    """The configured tracking URI, or the SQLite store inside the lake."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return "sqlite:///" + str((Path(settings.lake) / "_mlflow" / "mlflow.db").resolve())


def _artifact_root(uri: str) -> str | None:
    """Artifacts next to a SQLite store; a file store or a server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
    return None


@dataclass
class ModelRef:
    """One registered model version."""

    name: str
    version: int
    run_id: str | None
    model_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


@dataclass
class LoadedModel:
    """A model loaded from the registry, with the version it came from and its shoplake metadata."""

    ref: ModelRef
    model: Any
    metadata: dict[str, Any]


@dataclass
class ModelSummary:
    """What `shoplake ml models` shows for one registered model."""

    name: str
    versions: list[ModelRef]
    champion: ModelRef | None


def _requirements() -> list[str]:
    reqs = []
    for package in ("scikit-learn", "skops", "numpy", "pandas", "scipy"):
        try:
            reqs.append(f"{package}=={_pkg.version(package)}")
        except _pkg.PackageNotFoundError:
            continue
    return reqs


def warn_on_other_versions(model_dir: Path, python_version: str | None) -> list[str]:
    """Warn (and return the lines) where the model in `model_dir` was logged with another version of a
    pinned requirement (`requirements.txt`: `package==version`) or another Python minor version than this
    process runs."""
    lines = []
    path = model_dir / "requirements.txt"
    for line in (path.read_text().splitlines() if path.exists() else []):
        package, pinned, version = line.strip().partition("==")
        if not pinned:
            continue
        try:
            installed = _pkg.version(package)
        except _pkg.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            lines.append(f"{package}: the model was logged with {version}, this environment has {installed}")
    running = ".".join(map(str, sys.version_info[:3]))
    if python_version and python_version.split(".")[:2] != running.split(".")[:2]:  # a patch release is compatible
        lines.append(f"Python: the model was logged with {python_version}, this process runs {running}")
    for line in lines:
        log.warning("%s (%s); if loading or predicting fails, retrain the model here", line, model_dir.name)
    return lines


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples to plain Python, so the metadata serialises to YAML."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


class RunLog:
    """The MLflow run being recorded: parameters, metrics, figures, dictionaries and the model."""

    def __init__(self, tracker: Tracker, run):
        self._tracker = tracker
        self._mlflow = tracker.mlflow
        self.run_id: str = run.info.run_id

    def params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})

    def metrics(self, metrics: dict[str, float], *, step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def figure(self, figure, path: str) -> None:
        """Log a matplotlib figure as a PNG artifact and close it."""
        import matplotlib.pyplot as plt

        try:
            self._mlflow.log_figure(figure, path)
        finally:
            plt.close(figure)

    def dict(self, data: dict[str, Any], path: str) -> None:
        self._mlflow.log_dict(_plain(data), path)

    def model(self, model: Any, *, registered_name: str, input_example: pd.DataFrame, predict_fn: str,
              metadata: builtins.dict[str, Any]) -> ModelRef:
        """Log a scikit-learn model (skops format, signature, input example) and register a new version."""
        import skops.io
        from mlflow.models import infer_signature

        untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
        foreign = [t for t in untrusted if not t.startswith("sklearn.")]
        if foreign:
            raise ShoplakeError(f"cannot save the model in the skops format: unexpected types {foreign}")
        output = getattr(model, predict_fn)(input_example)
        signature = infer_signature(input_example, output)
        info = self._mlflow.sklearn.log_model(
            model, name="model", signature=signature, input_example=input_example,
            pip_requirements=_requirements(), pyfunc_predict_fn=predict_fn, metadata=_plain(metadata),
            serialization_format="skops", skops_trusted_types=untrusted)
        return self._tracker.register(registered_name, info.model_uri, run_id=self.run_id, model_id=info.model_id)

    def code_model(self, code_path: Path, *, registered_name: str, config: builtins.dict[str, Any],
                   input_example: pd.DataFrame, output_example: pd.DataFrame,
                   metadata: builtins.dict[str, Any], requirements: list[str]) -> ModelRef:
        """Log a pyfunc "model from code" (the file at `code_path`, configured by `config`; no pickle) with
        a signature and an input example, and register a new version."""
        from mlflow.models import infer_signature

        signature = infer_signature(input_example, output_example)
        info = self._mlflow.pyfunc.log_model(
            name="model", python_model=str(code_path), model_config=_plain(config), signature=signature,
            input_example=input_example, pip_requirements=_requirements() + requirements,
            metadata=_plain(metadata))
        return self._tracker.register(registered_name, info.model_uri, run_id=self.run_id, model_id=info.model_id)


    def model_directory(self, directory: Path, *, loader_module: str, registered_name: str,
                        metadata: builtins.dict[str, Any], requirements: tuple[str, ...]) -> ModelRef:
        """Log a model saved as plain files (no pickle) as a pyfunc whose `loader_module._load_pyfunc` reads
        them back, and register a new version."""
        import mlflow.pyfunc

        reqs = [f"{p}=={_pkg.version(p)}" for p in requirements]
        info = mlflow.pyfunc.log_model(name="model", loader_module=loader_module, data_path=str(directory),
                                       pip_requirements=reqs, metadata=_plain(metadata))
        return self._tracker.register(registered_name, info.model_uri, run_id=self.run_id, model_id=info.model_id)


class Tracker:
    """The project's MLflow store: runs, registered models and the `champion` alias."""

    def __init__(self, settings: Settings):
        self.uri = tracking_uri(settings)
        self.artifact_root = _artifact_root(self.uri)
        self._mlflow = None

    # -- setup -------------------------------------------------------------------------------------------
    @property
    def mlflow(self):
        """The mlflow module, pointed at this store (imported on first use: it takes about a second)."""
        import mlflow
        import mlflow.sklearn  # noqa: F401  (the flavour used to log and load models)

        if self._mlflow is None:
            for name in _QUIET:
                logging.getLogger(name).setLevel(logging.WARNING)
            if self.uri.startswith("sqlite:///"):
                database = Path(self.uri[len("sqlite:///"):])
                database.parent.mkdir(parents=True, exist_ok=True)
                if not database.exists():
                    # Trainings of different models run side by side: one process creates the store
                    # (its schema migrations, seconds) aside and renames it into place; the others wait.
                    with locks.writing(database.parent, ["mlflow-store"]):
                        if not database.exists():
                            _create_store(database, self.artifact_root)
            self._mlflow = mlflow
        # Global in mlflow: set on every use, so two lakes in one process never mix.
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        return mlflow

    def client(self):
        from mlflow import MlflowClient

        self.mlflow  # noqa: B018  (points mlflow at this store)
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = f"{self.artifact_root}/{name}" if self.artifact_root else None
        return client.create_experiment(name, artifact_location=location)

    # -- runs --------------------------------------------------------------------------------------------
    @contextmanager
    def start_run(self, experiment: str, *, run_name: str, tags: dict[str, Any]) -> Iterator[RunLog]:
        """An MLflow run in `experiment`; it ends FAILED if the block raises."""
        mlflow = self.mlflow
        experiment_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                              tags={k: str(v) for k, v in tags.items()}) as run:
            yield RunLog(self, run)

    def runs(self, experiment: str) -> pd.DataFrame:
        """`mlflow.search_runs` of one experiment (empty when it does not exist)."""
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return pd.DataFrame()
        return self.mlflow.search_runs(experiment_ids=[found.experiment_id])

    # -- registry ----------------------------------------------------------------------------------------
    @staticmethod
    def _ref(mv) -> ModelRef:
        source = getattr(mv, "source", "") or ""
        model_id = source.split("/", 2)[-1] if source.startswith("models:/") else None
        return ModelRef(mv.name, int(mv.version), mv.run_id, model_id, dict(mv.tags or {}),
                        list(getattr(mv, "aliases", []) or []))

    def register(self, name: str, model_uri: str, *, run_id: str, model_id: str | None) -> ModelRef:
        """A new version of registered model `name` (created on first use) for a logged model."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            client.get_registered_model(name)
        except MlflowException:
            try:
                client.create_registered_model(name, description=_DESCRIPTIONS.get(name, ""))
            except MlflowException:  # created meanwhile by another run
                client.get_registered_model(name)
        mv = client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id)
        crash_point("mlflow:register")
        return self._ref(mv)

    def version(self, name: str, version: int) -> ModelRef:
        return self._ref(self.client().get_model_version(name, str(version)))

    def store_missing(self) -> bool:
        """Whether the tracking store is a SQLite file not created yet (nothing was ever logged to it)."""
        return self.uri.startswith("sqlite:///") and not Path(self.uri[len("sqlite:///"):]).exists()

    def champion(self, name: str) -> ModelRef | None:
        """The version holding the `champion` alias, or None (no model or no champion yet).

        A store not created yet holds no champion: it is not created (seconds of schema migrations) to
        find that out, so the trainings that start side by side on a new lake do not wait for it."""
        from mlflow.exceptions import MlflowException

        if self.store_missing():
            return None
        try:
            return self._ref(self.client().get_model_version_by_alias(name, CHAMPION))
        except MlflowException:
            return None

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """The metrics a run logged (the latest value of each)."""
        return dict(self.client().get_run(run_id).data.metrics)

    def by_alias(self, name: str, alias: str) -> ModelRef | None:
        """The version holding `alias`, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self._ref(self.client().get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def run_record(self, run_id: str) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
        """(params, metrics, tags) of a run."""
        data = self.client().get_run(run_id).data
        return dict(data.params), dict(data.metrics), dict(data.tags)

    def run_json(self, run_id: str, path: str) -> Any:
        """A JSON artifact of a run, parsed; None when the run has no such artifact."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client().download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError):
                return None
            return json.loads(Path(local).read_text())

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """Store a text artifact in an existing run (e.g. a model card written after training)."""
        self.client().log_text(run_id, text, path)

    def promote(self, name: str, version: int) -> None:
        self.client().set_registered_model_alias(name, CHAMPION, str(version))
        crash_point("mlflow:promote")

    def tag_version(self, name: str, version: int, tags: dict[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, str(value))

    def load_champion(self, name: str) -> LoadedModel:
        """Load `models:/<name>@champion` with its version and metadata.

        The alias is resolved before and after the load; if a training run moved it in between, the
        load is repeated, so the version returned is the one whose artifact was loaded.
        """
        from mlflow.exceptions import MlflowException

        mlflow = self.mlflow
        uri = f"models:/{name}@{CHAMPION}"
        for _ in range(3):
            before = self.champion(name)
            if before is None:
                raise ModelNotFoundError(f"model {name!r} has no {CHAMPION!r} version yet: train it first with "
                                         f"`shoplake ml train {_kind_of(name)}`")
            try:
                with _model_loading_allowed(), tempfile.TemporaryDirectory(prefix="shoplake-model-") as tmp:
                    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
                    info = mlflow.models.Model.load(os.path.join(local, "MLmodel"))
                    if "sklearn" in info.flavors:
                        model = mlflow.sklearn.load_model(local)
                    else:
                        import mlflow.pyfunc

                        # MLflow's own check of the logged requirements first maps the modules of every
                        # installed distribution (about 1 s per process); ours are pinned, so they are
                        # compared directly, with the same warning
                        flavor = info.flavors.get("python_function", {})
                        warn_on_other_versions(Path(local), flavor.get("python_version"))
                        pyfunc = mlflow.pyfunc.load_model(local, suppress_warnings=True)
                        loader = flavor.get("loader_module", "")
                        if loader.startswith("shoplake."):  # plain files read by our loader (`model_directory`)
                            model = pyfunc.get_raw_model()
                        else:  # a model from code (`code_model`): its Python object
                            model = pyfunc.unwrap_python_model()
            except MlflowException as exc:
                raise ModelNotFoundError(f"cannot load {uri}: {str(exc).splitlines()[0]}") from exc
            after = self.champion(name)
            if after is not None and after.version == before.version:
                return LoadedModel(after, model, dict(info.metadata or {}))
        raise ModelNotFoundError(f"{uri} kept moving while loading; try again")

    def spark_udf(self, spark, ref: ModelRef, *, result_type: str):
        """`mlflow.pyfunc.spark_udf` of the registered version `ref` (`models:/<name>/<version>`).

        The version is pinned rather than the alias, so the UDF runs the very artifact `load_champion`
        returned even if a training run moves the alias meanwhile. The model runs in this Python
        environment (`env_manager="local"`): the executors need shoplake's packages, as its wheel's
        dependencies provide on a cluster. MLflow's deserialisation guard is lifted inside the UDF only.
        """
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        self.mlflow  # noqa: B018  (points mlflow at this store)
        uri = f"models:/{ref.name}/{ref.version}"
        try:
            with _model_loading_allowed():
                return mlflow.pyfunc.spark_udf(spark, uri, result_type=result_type, env_manager="local",
                                               extra_env={_ALLOW_LOADING: "true"})
        except MlflowException as exc:
            raise ModelNotFoundError(f"cannot load {uri} for Spark: {str(exc).splitlines()[0]}") from exc

    def summaries(self, names: list[str]) -> list[ModelSummary]:
        """Registered versions and champion of each model name (missing models have no versions)."""
        client = self.client()
        out = []
        for name in names:
            versions = sorted((self._ref(mv) for mv in client.search_model_versions(f"name = '{name}'")),
                              key=lambda r: r.version)
            out.append(ModelSummary(name, versions, self.champion(name) if versions else None))
        return out

    # -- UI ----------------------------------------------------------------------------------------------
    def ui_command(self, *, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
        """The command that serves the MLflow UI over this store."""
        script = Path(sys.executable).with_name("mlflow")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "mlflow"]
        # One worker is plenty for one person browsing, on a 2-core machine (the default is 4).
        command += ["ui", "--backend-store-uri", self.uri, "--host", host, "--port", str(port), "--workers", "1"]
        if self.artifact_root:
            command += ["--default-artifact-root", self.artifact_root]
        return command


# The UI only browses: MLflow's server-side job runner (GenAI evaluation jobs, a dozen processes) is off.
UI_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _create_store(database: Path, artifact_root: str | None) -> None:
    """A new SQLite tracking store at `database`, never seen half-migrated by another process.

    Created by us, not by MLflow on first use: MLflow would give its `Default` experiment an artifact
    location under the working directory (./mlruns), outside the lake."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    aside = database.with_name(f"{database.name}.{os.getpid()}.new")
    aside.unlink(missing_ok=True)
    try:
        SqlAlchemyStore("sqlite:///" + str(aside), artifact_root).engine.dispose()
        os.replace(aside, database)
    finally:
        aside.unlink(missing_ok=True)


@contextmanager
def _model_loading_allowed() -> Iterator[None]:
    # MLflow refuses to deserialise models unless this is set; shoplake only loads from its own store.
    previous = os.environ.get(_ALLOW_LOADING)
    os.environ[_ALLOW_LOADING] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_ALLOW_LOADING, None)
        else:
            os.environ[_ALLOW_LOADING] = previous


def _kind_of(model_name: str) -> str:
    from shoplake.catalog.models import KIND_OF_MODEL

    return KIND_OF_MODEL.get(model_name, "<kind>")
