"""Two processes writing the same lake at once leave exactly what one after the other would.

Real processes, started together: two `build`s, two `ingest`s of the same file (20 rounds each), an
`ingest` during a `build`, and `ml score` during a `build`. Every table must equal a serial run (for a
mixed pair: one of the two serial orders) and `verify` must pass.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .conftest import ROUNDS, assert_same_lake, assert_verified, cli, finish, snapshot, start

pytestmark = pytest.mark.slow  # rounds of two real processes at once


def _together(lake: Path, first: tuple[str, ...], second: tuple[str, ...]) -> list[tuple[int, str, str]]:
    procs = [start(lake, *first), start(lake, *second)]
    return [finish(p) for p in procs]


def test_two_builds_at_once(tmp_path, ingested):
    serial = tmp_path / "serial"
    shutil.copytree(ingested, serial)
    cli(serial, "build")
    cli(serial, "build")
    serial_rows = snapshot(serial)
    for round_ in range(ROUNDS):
        lake = tmp_path / f"round{round_}"
        shutil.copytree(ingested, lake)
        outcomes = _together(lake, ("build",), ("build",))
        assert [code for code, _, _ in outcomes] == [0, 0], outcomes
        assert_same_lake(lake, serial_rows)
        assert_verified(lake)
        shutil.rmtree(lake)


def test_two_ingests_of_the_same_file_at_once(tmp_path, inputs):
    serial = tmp_path / "serial"
    cli(serial, "ingest", "clickstream", str(inputs.clickstream))
    serial_rows = snapshot(serial)
    for round_ in range(ROUNDS):
        lake = tmp_path / f"round{round_}"
        outcomes = _together(lake, ("ingest", "clickstream", str(inputs.clickstream)),
                             ("ingest", "clickstream", str(inputs.clickstream)))
        assert [code for code, _, _ in outcomes] == [0, 0], outcomes
        assert "Traceback" not in "".join(err for _, _, err in outcomes)
        # One of the two ingested it; the other found it done.
        statuses = sorted("skipped" in out for _, out, _ in outcomes)
        assert statuses == [False, True], outcomes
        assert_same_lake(lake, serial_rows)
        assert_verified(lake)
        shutil.rmtree(lake)


def _second_file(folder: Path) -> Path:
    path = folder / "late.csv"
    path.write_text("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                    "2019-10-30 10:00:00 UTC,view,1,2,a.b,x,1.5,7,s1\n"
                    "2019-10-30 10:01:00 UTC,cart,1,2,a.b,x,1.5,7,s1\n"
                    "2019-10-30 10:02:00 UTC,purchase,1,2,a.b,x,1.5,7,s1\n")
    return path


def _matches_one_of(lake: Path, *references: Path) -> None:
    got = snapshot(lake)
    for reference in references:
        if got == snapshot(reference):
            return
    # Show the difference against the first order.
    assert_same_lake(lake, references[0])


def test_ingest_during_build(tmp_path, ingested):
    late = _second_file(tmp_path)
    # The two serial orders, each followed by a build that consumes whatever is left.
    build_first, ingest_first = tmp_path / "build-first", tmp_path / "ingest-first"
    for lake, order in ((build_first, (("build",), ("ingest", "clickstream", str(late)))),
                        (ingest_first, (("ingest", "clickstream", str(late)), ("build",)))):
        shutil.copytree(ingested, lake)
        for args in order:
            cli(lake, *args)
        cli(lake, "build")
    lake = tmp_path / "together"
    shutil.copytree(ingested, lake)
    outcomes = _together(lake, ("build",), ("ingest", "clickstream", str(late)))
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    cli(lake, "build")
    _matches_one_of(lake, build_first, ingest_first)
    assert_verified(lake)


def test_score_during_build(tmp_path, ingested):
    trained = tmp_path / "trained"
    shutil.copytree(ingested, trained)
    cli(trained, "build")
    cli(trained, "ml", "train", "rfm")
    late = tmp_path / "late-retail.csv"
    late.write_text("InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
                    "990001,85123A,LATE LINE,3,2011-01-29 10:00:00,2.55,17850,United Kingdom\n")
    cli(trained, "ingest", "retail", str(late))
    build_first, score_first = tmp_path / "build-first", tmp_path / "score-first"
    for lake, order in ((build_first, (("build",), ("ml", "score", "--kind", "rfm"))),
                        (score_first, (("ml", "score", "--kind", "rfm"), ("build",)))):
        shutil.copytree(trained, lake)
        for args in order:
            cli(lake, *args)
    lake = tmp_path / "together"
    shutil.copytree(trained, lake)
    outcomes = _together(lake, ("build",), ("ml", "score", "--kind", "rfm"))
    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    _matches_one_of(lake, build_first, score_first)
    assert_verified(lake)
