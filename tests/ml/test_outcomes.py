"""Outcomes and monitoring in the lake, on a lake whose last week is held out.

The session's generated clickstream (1M events, seed 7) is split at the midnight one horizon before its
end: the first part is ingested, propensity trained and scored (predictions for the held-out week); then
the held-out week arrives, and the next scoring joins those predictions to what happened
(`gold.prediction_outcomes`). Every scoring appends its drift rows to `ops.model_monitoring`.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from shoplake.build import build_tables
from shoplake.ingest import ingest_files
from shoplake.ml import score_models, train_model
from shoplake.ml.features import WindowSettings
from shoplake.ml.params import PropensityParams

from .lakes import open_lake, rows


def _split(source, before: str, after: str, cut: str) -> None:
    """Lines whose event_time (first 19 characters) is before `cut` go to `before`, the rest to `after`."""
    with gzip.open(source, "rt") as lines, gzip.open(before, "wt") as early, gzip.open(after, "wt") as late:
        header = next(lines)
        early.write(header)
        late.write(header)
        for line in lines:
            (early if line[:19] < cut else late).write(line)


@pytest.fixture(scope="module")
def held_out(shop_lake, tmp_path_factory):
    _, data = shop_lake
    root = tmp_path_factory.mktemp("held_out")
    with gzip.open(data / "clickstream.csv.gz", "rt") as lines:
        next(lines)
        last = max(line[:19] for line in lines)
    end = datetime.fromisoformat(last).replace(tzinfo=UTC).replace(hour=0, minute=0, second=0) + timedelta(days=1)
    hold = end - timedelta(days=7)
    _split(data / "clickstream.csv.gz", root / "first.csv.gz", root / "last_week.csv.gz",
           hold.strftime("%Y-%m-%d %H:%M:%S"))
    lake = open_lake(root / "lake")
    ingest_files(lake, "clickstream", [str(root / "first.csv.gz")], run_id="ingest-first")
    assert not [r for r in build_tables(lake, "silver.events", run_id="build-first") if r.status == "failed"]
    # 23 days before the held-out week: training cutoffs every day, so that some fit and some calibrate
    params = PropensityParams(window=WindowSettings(step_days=1))
    trained = train_model(lake, "propensity", run_id="train-first", params=params)
    first = score_models(lake, run_id="score-first", kinds=["propensity"])
    ingest_files(lake, "clickstream", [str(root / "last_week.csv.gz")], run_id="ingest-last-week")
    assert not [r for r in build_tables(lake, "silver.events", run_id="build-last-week") if r.status == "failed"]
    second = score_models(lake, run_id="score-second", kinds=["propensity"])
    return lake, hold, trained, first, second


def test_outcomes_join_the_held_out_week_to_its_predictions(held_out):
    lake, hold, trained, _, _ = held_out
    outcomes = rows(lake, "SELECT * FROM gold.prediction_outcomes ORDER BY rank_from")
    assert {r["cutoff_at"] for r in outcomes} == {hold}  # the second scoring's week has not happened yet
    assert {r["model_version"] for r in outcomes} == {trained.version}
    assert [(r["rank_from"], r["rank_to"]) for r in outcomes][:4] == [(1, 10), (11, 100), (101, 1000), (1001, 10000)]
    # independent counts from silver.events and the predictions of that cutoff (time travel)
    conversions = rows(lake, f"""SELECT count(*) AS n FROM (SELECT DISTINCT user_id, product_id FROM silver.events
                                 WHERE event_type = 'purchase' AND event_at >= TIMESTAMPTZ '{hold.isoformat()}'
                                 AND event_at < TIMESTAMPTZ '{(hold + timedelta(days=7)).isoformat()}')""")[0]["n"]
    version = outcomes[0]["predictions_version"]
    top = rows(lake, f"""SELECT p.user_id, p.product_id, e.user_id IS NOT NULL AS bought
                         FROM gold.conversion_predictions VERSION AS OF {version} AS p
                         LEFT JOIN (SELECT DISTINCT user_id, product_id FROM silver.events
                                    WHERE event_type = 'purchase' AND event_at >= TIMESTAMPTZ '{hold.isoformat()}'
                                    AND event_at < TIMESTAMPTZ '{(hold + timedelta(days=7)).isoformat()}') AS e
                         USING (user_id, product_id)
                         ORDER BY p.probability DESC, p.user_id, p.product_id""")
    first = outcomes[0]
    assert first["conversions"] == conversions > 0
    assert first["candidates"] == len(top) and first["candidate_conversions"] == sum(r["bought"] for r in top)
    assert first["precision_at_100"] == sum(r["bought"] for r in top[:100]) / 100
    assert sum(r["realised_purchases"] for r in outcomes) == first["candidate_conversions"]
    assert sum(r["bin_candidates"] for r in outcomes) == len(top)


def test_realised_precision_and_top_bin_calibration_are_within_the_reported_intervals(held_out):
    """Generous but real: the held-out week against what training reported on its validation week."""
    _, _, trained, _, _ = held_out
    lake = held_out[0]
    outcomes = rows(lake, "SELECT * FROM gold.prediction_outcomes ORDER BY rank_from")
    reported = trained.details["assessment"].estimates[trained.details["chosen"]]
    interval = reported["precision_at_100"]
    realised = outcomes[0]["precision_at_100"]
    print(f"\nheld-out week: realised precision@100 {realised:.3f}, validation reported {interval.as_text()}; "
          + "; ".join(f"ranks {r['rank_from']}-{r['rank_to']}: predicted {r['predicted_purchases']:.1f} "
                      f"(sd {r['predicted_purchases_sd']:.1f}), realised {r['realised_purchases']}" for r in outcomes))
    # the validation interval, widened by its half-width on each side (a different week, other users)
    assert interval.low - interval.half_width <= realised <= interval.high + interval.half_width
    for r in outcomes[:3]:  # the top 1000: where the list is acted on
        # predicted counts are right within 3 standard deviations plus 2 purchases of slack
        assert abs(r["realised_purchases"] - r["predicted_purchases"]) <= 3 * r["predicted_purchases_sd"] + 2, r


def test_monitoring_rows_for_every_input_and_the_predictions(held_out):
    lake, _, trained, first, second = held_out
    monitored = rows(lake, "SELECT * FROM ops.model_monitoring ORDER BY run_id, input_name")
    by_run = {}
    for r in monitored:
        by_run.setdefault(r["run_id"], {})[r["input_name"]] = r
    assert set(by_run) == {"score-first", "score-second"}
    for run_id, result in (("score-first", first[0]), ("score-second", second[0])):
        found = by_run[run_id]
        assert set(found) == set(result.drift) | {"_prediction"}
        for name, psi in result.drift.items():
            assert found[name]["psi"] == pytest.approx(psi) and found[name]["is_drifted"] == (psi > 0.2)
            assert found[name]["model_version"] == trained.version
        prediction = found["_prediction"]
        assert prediction["psi"] is not None and prediction["rows"] == result.rows_written
        assert 0 <= prediction["p50"] <= prediction["p90"] <= prediction["p99"] <= 1
    # the tables hold exactly their declared columns
    for name in ("gold.prediction_outcomes", "ops.model_monitoring"):
        assert lake.store.open(name).schema().to_arrow().names == lake.catalog.get(name).column_names


def test_data_health_page_flags_drift_above_the_threshold(held_out):
    """Last in this file: it appends a monitoring row of its own (a real PSI on a shifted input)."""
    from shoplake.ml import drift, monitoring
    from shoplake.serve.pages import build_page
    from shoplake.serve.view import Filters

    lake = held_out[0]
    section = next(s for s in build_page(lake, "health", Filters()).sections if s.id == "health-model-drift")
    latest = rows(lake, "SELECT * FROM ops.model_monitoring WHERE run_id = 'score-second'")
    assert len(section.grid.rows) == len(latest)  # the latest scoring of the one model scored here
    drifted = [r for r in latest if r["is_drifted"]]
    assert section.note.startswith(f"DRIFT: {len(drifted)} input(s)") if drifted else \
        section.note == "no input above the PSI threshold in the latest scoring of each model"

    rng = np.random.default_rng(1)
    training = pd.DataFrame({"basket_value": rng.normal(50, 10, 5000)})
    shifted = training + 30  # three standard deviations: far outside the training bins
    psi = drift.psi_by_feature(drift.references(training, ["basket_value"]), shifted)
    assert psi["basket_value"] > drift.PSI_WARNING
    monitoring.record_monitoring(lake, run_id="shifted", kind="propensity", model_name="shoplake-drift-probe",
                                 model_version=1, scored_at=datetime.now(UTC), inputs=shifted, psi=psi)
    section = next(s for s in build_page(lake, "health", Filters()).sections if s.id == "health-model-drift")
    assert section.note.startswith("DRIFT: ")
    assert f"shoplake-drift-probe: basket_value (PSI {psi['basket_value']:.2f})" in section.note
    assert section.grid.rows[0][section.grid.columns.index("input_name")].text == "basket_value"  # drifted rows first
