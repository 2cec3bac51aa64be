"""Job files: the shipped jobs, user overrides, and one clear error for an invalid definition before
anything runs."""

from __future__ import annotations

import re

import pytest

from shoplake.catalog import default_catalog
from shoplake.config import Settings, load_settings
from shoplake.errors import ConfigError
from shoplake.jobs.definitions import load_jobs, parse_jobs, shipped_text


def _parse(text: str):
    return parse_jobs(text, origin="test.yaml", catalog=default_catalog())


def _load(workspace):
    return load_jobs(workspace.settings(), default_catalog())


def test_shipped_daily_covers_the_platform(workspace):
    book = _load(workspace)
    daily = book.get("daily")
    assert daily.origin == "shipped"
    assert [t.name for t in daily.ordered()] == [
        "ingest_products", "ingest_clickstream", "ingest_retail", "build", "train_propensity",
        "train_recommender", "train_segments", "train_rfm", "train_clv", "score_propensity", "score_recommender",
        "score", "maintain", "verify"]
    assert {t.kind for t in daily.ordered()} == {"ingest", "build", "ml_train", "ml_score", "maintain", "verify"}
    assert daily.task("maintain").depends_on == ("score", "score_propensity", "score_recommender")
    assert daily.task("verify").depends_on == ("maintain",)  # last: reconciles what the run (and maintenance) wrote
    assert daily.task("build").depends_on == ("ingest_products", "ingest_clickstream", "ingest_retail")
    assert daily.task("build").select is None  # every Silver and Gold table
    kinds = ("segments", "rfm", "propensity", "recommender", "clv")
    assert {daily.task(f"train_{m}").model for m in kinds} == set(kinds)
    # the two long scorings each as soon as their model is trained, the three short ones together
    others = ("segments", "rfm", "clv")
    assert daily.task("score").models == others
    assert daily.task("score").depends_on == tuple(f"train_{m}" for m in others)
    for model in ("propensity", "recommender"):
        assert daily.task(f"score_{model}").models == (model,)
        assert daily.task(f"score_{model}").depends_on == (f"train_{model}",)
    assert daily.schedule == "0 2 * * *"
    # Landing folders are relative to the landing root: <root>/<source>.
    assert daily.task("ingest_retail").landing_location("/data/landing") == "/data/landing/retail"
    assert daily.task("ingest_retail").landing_location("s3://b/landing") == "s3://b/landing/retail/"


def test_trainings_of_different_models_may_run_side_by_side_but_never_beside_their_scoring(workspace):
    catalog = default_catalog()
    daily = _load(workspace).get("daily")
    kinds = ("segments", "rfm", "propensity", "recommender", "clv")
    trains = {m: daily.task(f"train_{m}").writes(catalog) for m in kinds}
    for m in kinds:
        assert all(not (trains[m] & trains[other]) for other in kinds if other != m)
    scores = {name: daily.task(name).writes(catalog) for name in ("score", "score_propensity", "score_recommender")}
    scored_by = {"segments": "score", "rfm": "score", "clv": "score", "propensity": "score_propensity",
                 "recommender": "score_recommender"}
    for m in kinds:  # a champion never moves while it scores; the scorings of other models run beside it
        assert all(bool(trains[m] & writes) == (name == scored_by[m]) for name, writes in scores.items()), m
    assert "gold.customer_clv" in scores["score"] and "gold.user_recommendations" in scores["score_recommender"]
    assert "gold.conversion_predictions" in scores["score_propensity"]
    jobs, problems = _parse("""
version: 1
jobs:
  j:
    tasks:
      t: {kind: ml_train, model: rfm}
      s: {kind: ml_score, models: [segments]}
""")
    assert not problems
    only = jobs["j"]
    assert not (only.task("t").writes(catalog) & only.task("s").writes(catalog))


def test_shipped_file_is_package_data():
    assert "daily:" in shipped_text()


def test_user_file_overrides_and_extends_by_name(workspace):
    workspace.write_jobs({
        "daily": {"tasks": {"only": {"kind": "build", "select": "gold"}}},
        "mine": {"schedule": "*/5 * * * *", "tasks": {"b": {"kind": "build", "select": "silver.events+",
                                                              "retries": 0}}},
    }, defaults={"timeout": 60})
    book = _load(workspace)
    assert set(book.jobs) == {"daily", "refresh", "mine"}
    assert [t.name for t in book.get("daily").ordered()] == ["only"]
    assert book.get("daily").origin == str(workspace.jobs_file)
    mine = book.get("mine").task("b")
    assert (mine.retries, mine.timeout, mine.retry_backoff) == (0, 60.0, 5.0)
    assert book.get("refresh").origin == "shipped"


def test_jobs_file_setting_from_the_environment(workspace):
    other = workspace.root / "elsewhere.yaml"
    other.write_text("jobs:\n  x:\n    tasks:\n      b: {kind: build}\n")
    settings = load_settings(env={"SHOPLAKE_JOBS_FILE": str(other)})
    assert settings.jobs_file == other
    assert "x" in load_jobs(settings, default_catalog()).jobs
    with pytest.raises(ConfigError, match="jobs file .*missing.yaml does not exist"):
        load_jobs(Settings(jobs_file=workspace.root / "missing.yaml"), default_catalog())


def test_unknown_job_names_a_close_match(workspace):
    with pytest.raises(ConfigError, match="no job named 'daly'; did you mean 'daily'"):
        _load(workspace).get("daly")


CYCLE = """
jobs:
  loop:
    tasks:
      a: {kind: build, depends_on: [c]}
      b: {kind: build, depends_on: [a]}
      c: {kind: build, depends_on: [b]}
"""


@pytest.mark.parametrize(("text", "message"), [
    (CYCLE, r"job 'loop': tasks form a cycle: (a -> c -> b -> a|c -> b -> a -> c|b -> a -> c -> b) \(each depends"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, depends_on: [ingest_x]}\n",
     "task 'a': depends_on names unknown task 'ingest_x'"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, select: gold.daily_funel}\n",
     "no table named 'gold.daily_funel' in the catalog; did you mean gold.daily_funnel"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: bild}\n", "unknown kind 'bild'; did you mean 'build'"),
    ("jobs:\n  j:\n    schedule: '61 * * * *'\n    tasks:\n      a: {kind: build}\n",
     "schedule: '61 \\* \\* \\* \\*' is not a valid cron expression"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, retires: 3}\n",
     "unknown option 'retires'; did you mean 'retries'"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: ingest, source: clicks, landing: x}\n",
     "source must be one of clickstream, products, retail"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: ml_train, model: forest}\n", "model must be one of segments"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build}\n      a: {kind: build}\n", "duplicate key 'a'"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, timeout: 0}\n", "timeout must be a number > 0"),
])
def test_invalid_definition_is_one_clear_error(text, message):
    jobs, problems = _parse(text)
    assert jobs == {} and len(problems) == 1, problems
    assert re.search(message, problems[0]), problems[0]


def test_every_problem_is_listed_in_one_error(workspace):
    workspace.jobs_file.write_text(CYCLE + "  other:\n    tasks:\n      x: {kind: build, select: gold.nope}\n")
    with pytest.raises(ConfigError) as caught:
        _load(workspace)
    text = str(caught.value)
    assert text.startswith("invalid job definitions: ")
    assert "tasks form a cycle" in text and "no table named 'gold.nope'" in text
    assert "\n" not in text


def test_cli_refuses_an_invalid_job_before_anything_runs(workspace):
    workspace.land_all()
    # `daily` itself is fine: another job of the file is broken, and that stops everything.
    workspace.jobs_file.write_text("jobs:\n  broken:\n    tasks:\n      a: {kind: build, depends_on: [a]}\n")
    result = workspace.cli("run", "daily")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: invalid job definitions: {workspace.jobs_file}: job 'broken': task 'a' depends on "
                     f"itself"], result.stderr
    assert "Traceback" not in result.stderr
    assert not workspace.lake_path.exists()  # nothing was written, not even an empty table


def test_dry_run_prints_the_plan_and_writes_nothing(workspace):
    workspace.land_all()
    result = workspace.cli("run", "daily", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "plan of job daily" in result.stdout
    assert "1 new file(s), 0 already ingested" in result.stdout
    assert "shoplake jobs task ml-train propensity" in result.stdout
    assert "shoplake jobs task ml-train clv" in result.stdout
    assert "14 task(s) to run, at most 3 at once" in result.stdout
    assert not workspace.lake_path.exists()


def test_ingest_task_declares_its_encoding_and_passes_it_on():
    jobs, problems = _parse("jobs:\n  shop:\n    tasks:\n      eu: {kind: ingest, source: retail, "
                            "paths: [a.csv], encoding: Windows-1252}\n      plain: {kind: ingest, source: retail, "
                            "paths: [b.csv]}\n")
    assert problems == []
    eu, plain = jobs["shop"].task("eu"), jobs["shop"].task("plain")
    assert (eu.encoding, plain.encoding) == ("cp1252", "utf-8")
    assert eu.args("/landing")[-2:] == ["--encoding", "cp1252"]
    assert "--encoding" not in plain.args("/landing")
    assert eu.resolved("/landing").encoding == "cp1252"  # what an attempt runs


def test_ingest_task_with_an_unknown_encoding_is_refused():
    jobs, problems = _parse("jobs:\n  shop:\n    tasks:\n      eu: {kind: ingest, source: retail, "
                            "paths: [a.csv], encoding: ebcdic}\n")
    assert jobs == {}
    assert len(problems) == 1 and "unsupported encoding 'ebcdic'" in problems[0], problems


@pytest.mark.parametrize(("text", "message"), [
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, fail_times: 1}\n", "unknown option 'fail_times'"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: build, retries: true}\n", "retries must be an integer >= 0, got True"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: verify, select: gold}\n", "unknown option 'select'"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: ingest, source: retail}\n", "either 'landing' .* or 'paths'"),
    ("jobs:\n  j:\n    max_parallel: 0\n    tasks:\n      a: {kind: build}\n", "max_parallel must be an integer >= 1"),
    ("jobs:\n  j:\n    tasks:\n      a: {kind: ml_score, models: [rfm, churn]}\n", "unknown model 'churn'"),
    ("defaults: {retries: -1}\njobs:\n  j:\n    tasks:\n      a: {kind: build}\n",
     "defaults: retries must be an integer >= 0"),
])
def test_the_task_models_refuse_what_a_kind_does_not_take(text, message):
    """Each kind is its own model (`extra="forbid"`): test hooks and other kinds' options are refused."""
    jobs, problems = _parse(text)
    assert jobs == {} and len(problems) == 1, problems
    assert re.search(message, problems[0]), problems[0]


def test_a_task_from_the_command_line_is_validated_like_a_file_task():
    from shoplake.jobs.definitions import IngestTask, task_from

    task = task_from("ingest", name="eu", source="retail", paths=("a.csv",), encoding="Windows-1252")
    assert isinstance(task, IngestTask) and task.encoding == "cp1252"
    with pytest.raises(ConfigError, match="source must be one of clickstream, products, retail, got 'clicks'"):
        task_from("ingest", source="clicks", paths=("a.csv",))
    with pytest.raises(ConfigError, match="model must be one of segments, rfm, propensity"):
        task_from("ml_train", model="forest")
