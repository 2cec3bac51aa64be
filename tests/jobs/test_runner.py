"""The runner: retries of an injected transient failure, a permanent failure that skips downstream tasks
only and a resume that completes the run, enforced timeouts, safe parallelism, and ML tasks."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass

from shoplake.jobs.definitions import load_jobs
from shoplake.jobs.runner import run_job


def _run(workspace, job: str, **options):
    lake = workspace.lake()
    return run_job(lake, load_jobs(lake.settings, lake.catalog).get(job), **options)


def _statuses(attempts):
    return [(a.task, a.attempt, a.status) for a in attempts]


def test_transient_failure_is_retried_and_the_run_succeeds(workspace, jobs_env):
    task = jobs_env.task
    workspace.land("products")
    workspace.job("flaky", {
        # fail_times: attempts 1..N fail on purpose (configuration, not code): a transient failure.
        "ingest_products": task("ingest", source="products", landing="products", fail_times=1, retries=2,
                                retry_backoff=0.2),
        "build": task("build", select="silver.products", depends_on=["ingest_products"]),
    })
    started = time.monotonic()
    result = _run(workspace, "flaky")
    assert result.ok, result.summary_lines()
    assert _statuses(workspace.attempts(result.run_id)) == [
        ("ingest_products", 1, "retrying"), ("ingest_products", 2, "succeeded"), ("build", 1, "succeeded")]
    first = workspace.attempts(result.run_id)[0]
    assert "injected failure: attempt 1" in first.error
    assert result.tasks["ingest_products"].rows_written > 0
    assert workspace.store().row_count("silver.products") > 0
    assert time.monotonic() - started >= 0.2  # the backoff was waited


def test_permanent_failure_skips_downstream_and_resume_completes_with_upstream_reused(workspace, jobs_env):
    task = jobs_env.task
    workspace.land_all()
    upstream = list(jobs_env.ingest_tasks())
    workspace.job("medallion", {
        **jobs_env.ingest_tasks(),
        # Fails its two allowed attempts (fail_times counts attempt numbers across the run, so the resumed
        # attempt 3 goes through: the "fix" between the runs).
        "silver": task("build", select="silver", depends_on=upstream, fail_times=2, retries=1, retry_backoff=0.1),
        "gold": task("build", select="gold", depends_on=["silver"]),
        "products_check": task("build", select="silver.products", depends_on=["ingest_products"]),
    }, max_parallel=3)

    failed = workspace.cli("run", "medallion")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed: silver (attempt 2): injected failure: attempt 2" in failed.stderr
    assert "skipped: gold (upstream task silver failed)" in failed.stderr
    run_id = workspace.attempts()[0].run_id
    assert f"shoplake run --resume {run_id}" in failed.stdout
    first = _statuses(workspace.attempts(run_id))
    assert sorted(first) == sorted([
        *[(name, 1, "succeeded") for name in upstream], ("products_check", 1, "succeeded"),
        ("silver", 1, "retrying"), ("silver", 2, "failed"), ("gold", 0, "skipped")])
    before = workspace.versions()
    assert before["gold.daily_funnel"] is None  # gold never ran

    resumed = workspace.cli("run", "--resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    attempts = workspace.attempts(run_id)
    new = _statuses(attempts)[len(first):]
    # Only the failed task and its skipped downstream ran; the attempt count of `silver` continued.
    assert new == [("silver", 3, "succeeded"), ("gold", 1, "succeeded")]
    assert {a.trigger for a in attempts[len(first):]} == {"resume"}
    after = workspace.versions()
    for table in ("bronze.products", "bronze.clickstream", "bronze.retail", "silver.products"):
        assert after[table] == before[table], table  # upstream results reused, not recomputed
    assert all(after[name] is not None for name in jobs_env.GOLD)

    again = _run(workspace, "medallion", resume=run_id)
    assert again.ok and {s.status for s in again.tasks.values()} == {"reused"}
    assert len(workspace.attempts(run_id)) == len(attempts)  # nothing left to run, nothing recorded


def test_timeout_kills_the_attempt(workspace, jobs_env):
    workspace.job("slow", {
        "stuck": jobs_env.task("build", select="silver.products", pause_after="start", pause_seconds=120,
                               timeout=1, retries=0),
        "after": jobs_env.task("build", select="gold.product_sales", depends_on=["stuck"]),
    })
    started = time.monotonic()
    result = _run(workspace, "slow")
    took = time.monotonic() - started
    assert result.status == "failed"
    assert result.tasks["stuck"].error == "timed out after 1s (the attempt was killed)"
    assert result.tasks["after"].status == "skipped"
    assert took < 30, took  # the 120 s pause did not run to its end
    assert workspace.versions()["silver.products"] is None


def test_each_attempt_records_its_processor_time_not_its_waiting(workspace, jobs_env):
    # One attempt in a worker process sleeps 3 s at its start, then ingests; another runs in this process.
    workspace.land("products")
    workspace.job("timed", {
        "ingest_products": jobs_env.task("ingest", source="products", landing="products", pause_after="start",
                                         pause_seconds=3),
    })
    result = _run(workspace, "timed")
    assert result.ok, result.summary_lines()
    (attempt,) = workspace.attempts(result.run_id)
    wall = (attempt.ended_at - attempt.started_at).total_seconds()
    assert wall >= 3
    # what it computed (the ingest, the command line's imports) counts; the 3 s it slept do not
    assert attempt.cpu_seconds is not None and 0 < attempt.cpu_seconds < wall - 2.5, (attempt.cpu_seconds, wall)
    assert result.tasks["ingest_products"].cpu_seconds == attempt.cpu_seconds

    workspace.land("clickstream")
    workspace.job("inline", {"ingest": jobs_env.task("ingest", source="clickstream", landing="clickstream")})
    inline = _run(workspace, "inline", isolation="inline")
    (attempt,) = workspace.attempts(inline.run_id)
    assert attempt.status == "succeeded" and attempt.cpu_seconds is not None and attempt.cpu_seconds > 0


def test_parallel_tasks_never_write_the_same_table_at_once(workspace, jobs_env):
    task = jobs_env.task
    workspace.land_all()
    workspace.job("wide", {
        **jobs_env.ingest_tasks(),
        # Two builds that both write silver.events (and downstream): they must not overlap.
        "events": task("build", select="silver.events", depends_on=["ingest_clickstream"]),
        "events_and_gold": task("build", select="silver.events+", depends_on=["ingest_clickstream"]),
    }, max_parallel=3)
    result = _run(workspace, "wide")
    assert result.ok, result.summary_lines()
    spans = {a.task: (a.started_at, a.ended_at) for a in workspace.attempts(result.run_id)}

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    # The three ingests write different tables: they ran side by side.
    assert overlap("ingest_products", "ingest_clickstream") and overlap("ingest_clickstream", "ingest_retail")
    assert not overlap("events", "events_and_gold")


@dataclass
class _Trained:
    rows_written: int
    model_version: int


def test_daily_runs_ml_tasks_through_shoplake_ml(workspace, monkeypatch):
    """The shipped daily, ML included, with shoplake.ml replaced by a stand-in (tasks run inline)."""
    calls = []
    fake = types.ModuleType("shoplake.ml")

    def train_model(lake, kind, *, run_id, **options):
        calls.append(("train", kind, run_id))
        return _Trained(10, 1)

    def score_models(lake, *, run_id, kinds=None):
        calls.append(("score", kinds, run_id))
        return [_Trained(5, 1), _Trained(7, 1)]

    fake.train_model, fake.score_models = train_model, score_models
    fake.KINDS = ("segments", "rfm", "propensity", "recommender", "clv")
    monkeypatch.setitem(sys.modules, "shoplake.ml", fake)
    workspace.land_all()
    result = _run(workspace, "daily", isolation="inline")
    assert result.ok, result.summary_lines()
    assert sorted(calls) == sorted([("train", "segments", result.run_id), ("train", "rfm", result.run_id),
                                    ("train", "propensity", result.run_id), ("train", "recommender", result.run_id),
                                    ("train", "clv", result.run_id)] +
                                   [("score", [kind], result.run_id) for kind in fake.KINDS])
    assert calls[-1][0] == "score"
    assert result.tasks["score"].rows_written == 12 * 3  # each kind scored on its own
    assert result.tasks["score_propensity"].rows_written == result.tasks["score_recommender"].rows_written == 12
    assert result.tasks["train_rfm"].detail == "trained rfm (model version 1)"


def test_missing_ml_fails_the_ml_tasks_only(workspace, monkeypatch):
    monkeypatch.setitem(sys.modules, "shoplake.ml", None)  # import fails
    workspace.land("products")
    result = _run(workspace, "daily", isolation="inline")
    assert result.status == "failed"
    assert {s.name for s in result.failed()} == {"train_segments", "train_rfm", "train_propensity",
                                                 "train_recommender", "train_clv"}
    assert {s.name for s in result.skipped() if s.blocked} == {"score", "score_propensity", "score_recommender",
                                                                 "maintain", "verify"}
    assert result.tasks["build"].status == "succeeded"
    error = result.tasks["train_rfm"].error
    assert "shoplake.ml" in error and not result.tasks["train_rfm"].retryable
    assert result.tasks["train_rfm"].attempt == 1  # not retried: the same import would fail again


def test_a_deterministic_failure_is_not_retried(workspace, monkeypatch):
    """A leakage refusal is a DeterministicError: the same inputs give the same refusal, so no retry."""
    from shoplake.ml.errors import LeakageError

    calls = []
    fake = types.ModuleType("shoplake.ml")

    def train_model(lake, kind, *, run_id, **options):
        calls.append(kind)
        if kind == "propensity":
            raise LeakageError("a feature query reads gold.product_performance: Gold tables aggregate all time")
        return _Trained(10, 1)

    fake.train_model, fake.score_models = train_model, lambda lake, **options: []
    monkeypatch.setitem(sys.modules, "shoplake.ml", fake)
    workspace.land("products")
    result = _run(workspace, "daily", isolation="inline")  # the shipped daily allows 2 retries per task
    state = result.tasks["train_propensity"]
    assert state.status == "failed" and not state.retryable and state.attempt == 1
    assert calls.count("propensity") == 1
    assert state.error.startswith("a feature query reads gold.product_performance")
    assert result.tasks["train_rfm"].status == "succeeded"
    assert "score_propensity" in {s.name for s in result.skipped()}  # the other models are still scored
    assert result.tasks["score"].status == "succeeded"
    assert [a.status for a in workspace.attempts(result.run_id) if a.task == "train_propensity"] == ["failed"]


def test_a_failed_check_is_attempted_once_and_a_lock_timeout_is_retried(workspace, jobs_env, monkeypatch):
    """The retry policy of a build task: a table whose check failed fails the same way again (no retry); a
    table that timed out waiting for its writer lock may pass next time (retried)."""
    import shoplake.build
    from shoplake.build import BuildResult

    failures = {"checked": BuildResult("silver.products", "failed", message="check not_null_product_id failed"),
                "locked": BuildResult("silver.products", "failed", message="timed out waiting for the writer lock",
                                      transient=True)}
    calls: list[int] = []
    case = ""

    def build_tables(lake, selection=None, *, run_id, on_table=None):
        calls.append(1)
        return [failures[case]] if len(calls) == 1 else []  # the first attempt fails, a second would pass

    monkeypatch.setattr(shoplake.build, "build_tables", build_tables)
    monkeypatch.setattr("shoplake.jobs.tasks._require_source_data", lambda lake, what: None)
    workspace.job("one_build", {"build": jobs_env.task("build", select="silver.products", retries=2,
                                                       retry_backoff=0)})
    for case in ("checked", "locked"):
        calls.clear()
        result = _run(workspace, "one_build", isolation="inline")
        state = result.tasks["build"]
        if case == "checked":
            assert state.status == "failed" and state.attempt == 1 and len(calls) == 1
            assert "check not_null_product_id failed" in state.error
        else:
            assert state.status == "succeeded" and state.attempt == 2 and len(calls) == 2


def test_run_refuses_bad_options_without_writing(workspace):
    result = workspace.cli("run", "daily", "--max-parallel", "0")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --max-parallel must be at least 1"
    assert not workspace.lake_path.exists()


def test_a_bad_landing_file_fails_the_task_naming_it(workspace, jobs_env):
    """A real (not injected) failure: ingesting a file that is not a source file."""
    bad = workspace.landing / "retail" / "broken.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("not,the,retail,header\n1,2,3,4\n")
    workspace.land("retail")
    workspace.job("j", {"ingest_retail": jobs_env.task("ingest", source="retail", landing="retail", retries=0)})
    result = _run(workspace, "j")
    state = result.tasks["ingest_retail"]
    assert state.status == "failed"
    assert "broken.csv" in state.error and "1 file(s) could not be ingested" in state.error
    # The good file of the folder went in; the bad one is named, and will be retried on resume.
    assert workspace.store().row_count("bronze.retail") > 0


def test_a_task_waits_for_tables_locked_by_another_run(workspace, jobs_env):
    """Another job's live run holds silver.products: the task waits for it, then runs."""
    import subprocess
    import threading

    from shoplake import locks

    workspace.land("products")
    workspace.job("t", {"ingest": jobs_env.task("ingest", source="products", landing="products"),
                        "build": jobs_env.task("build", select="silver.products", depends_on=["ingest"])})
    code = ("import time; from pathlib import Path; from shoplake import locks\n"
            f"assert locks.try_acquire(Path({str(workspace.lake_path)!r}), 'run-table-silver.products')\n"
            "print('ready', flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "ready"
    waiting = []

    def on_update(result) -> None:
        detail = result.tasks["build"].detail
        if detail.startswith("waiting: table silver.products is already running") and not waiting:
            waiting.append(time.time())
            threading.Timer(1.0, other.kill).start()  # the other run ends a second later

    try:
        result = _run(workspace, "t", on_update=on_update, isolation="inline")
    finally:
        other.kill()
        other.wait()
    assert result.ok, result.summary_lines()
    assert waiting, "the build never waited"
    build = [a for a in workspace.attempts(result.run_id) if a.task == "build"][0]
    assert build.started_at.timestamp() >= waiting[0] + 0.9  # it started once the other run had ended
    assert locks.is_free(workspace.lake_path, "run-table-silver.products")  # released
