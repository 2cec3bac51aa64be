"""gold.funnel_<name> (declared funnels) and gold.cart_abandonment, on a dozen events worked out by hand."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from shoplake.catalog import catalog_for
from shoplake.catalog.funnels import FunnelDef, funnel_spec, parse_funnels
from shoplake.config import load_settings
from shoplake.errors import ConfigError
from shoplake.lake import Lake

from .shop import CLICKSTREAM_HEADER, Shop

# The project's own funnel file (the shipped funnels are built beside these).
FUNNELS = """
funnels:
  vcp_user:   {steps: [view, cart, purchase], window: 1h, unit: user}
  vcp_excl:
    steps: [view, cart, purchase]
    window: 1h
    exclusions: [{event_type: remove_from_cart, after_step: 2, before_step: 3}]
  vp_same_session: {steps: [view, purchase], window: 1h, unit: session, same_product: true}
  vp_any_session:  {steps: [view, purchase], window: 1h, unit: session}
  vp_any_user:     {steps: [view, purchase], window: 1h, unit: user}
  view_twice:      {steps: [view, view], window: 1h, unit: user}
"""

# products: 1 electronics/apple, 2 appliances/bosch, 3 electronics/no brand, 4 furniture/ikea
P = {1: "1,10,electronics.smartphone,apple,100.0", 2: "2,20,appliances.kitchen,bosch,40.0",
     3: "3,30,electronics.audio,,25.0", 4: "4,40,furniture.chair,ikea,70.0"}


def ev(at: str, kind: str, product: int, user: int, session: str) -> str:
    return f"{at} UTC,{kind},{P[product]},{user},{session}"


ROWS = (
    # user 1 views product 1, carts and buys product 2: any-product yes, same-product no
    ev("2019-10-01 08:00:00", "view", 1, 1, "s1"),
    ev("2019-10-01 08:10:00", "cart", 2, 1, "s1"),
    ev("2019-10-01 08:20:00", "purchase", 2, 1, "s1"),
    # user 2 buys before viewing: the purchase does not count, the cart after the view does
    ev("2019-10-01 09:00:00", "purchase", 1, 2, "s2"),
    ev("2019-10-01 09:05:00", "view", 1, 2, "s2"),
    ev("2019-10-01 09:06:00", "cart", 1, 2, "s2"),
    # user 3 buys one second past the 1 h window
    ev("2019-10-01 10:00:00", "view", 1, 3, "s3"),
    ev("2019-10-01 10:30:00", "cart", 1, 3, "s3"),
    ev("2019-10-01 11:00:01", "purchase", 1, 3, "s3"),
    # user 4 views in one session and buys in another: a user conversion, not a session conversion
    ev("2019-10-01 12:00:00", "view", 3, 4, "s4a"),
    ev("2019-10-01 12:10:00", "purchase", 3, 4, "s4b"),
    # user 5 removes the cart before buying: excluded by vcp_excl
    ev("2019-10-01 13:00:00", "view", 1, 5, "s5"),
    ev("2019-10-01 13:01:00", "cart", 1, 5, "s5"),
    ev("2019-10-01 13:02:00", "remove_from_cart", 1, 5, "s5"),
    ev("2019-10-01 13:03:00", "purchase", 1, 5, "s5"),
    # user 6 buys exactly at the end of the window: counts
    ev("2019-10-01 14:00:00", "view", 4, 6, "s6"),
    ev("2019-10-01 14:30:00", "view", 4, 6, "s6"),  # a second view (view_twice)
    ev("2019-10-01 15:00:00", "purchase", 4, 6, "s6"),
    # cart abandonment's 7-day window: user 7 buys one second late (abandoned), user 8 just in time
    ev("2019-10-02 00:00:00", "cart", 1, 7, "s7"),
    ev("2019-10-09 00:00:01", "purchase", 1, 7, "s7b"),
    ev("2019-10-02 00:00:00", "cart", 2, 8, "s8"),
    ev("2019-10-09 00:00:00", "purchase", 2, 8, "s8b"),
    # a cart whose 7 days reach past the end of the data (2019-10-09 00:00:01)
    ev("2019-10-08 12:00:00", "cart", 4, 9, "s9"),
)


@pytest.fixture(scope="module")
def funnel_shop(module_shop, tmp_path_factory):
    path = tmp_path_factory.mktemp("funnel_file") / "shoplake-funnels.yaml"
    path.write_text(FUNNELS)
    shop = module_shop("funnels", catalog_for(path))
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.results = shop.build("gold.funnel_vcp_user+ silver.events+")
    return shop


def steps(shop, name: str, breakdown: str = "all", value: str = "(all)", day: date = date(2019, 10, 1),
          grain: str = "day"):
    rows = shop.query(f"SELECT * FROM gold.funnel_{name} WHERE grain = '{grain}' AND breakdown = '{breakdown}' "
                      f"AND breakdown_value = '{value}' AND period_start = DATE '{day}' ORDER BY step")
    return rows


def entrants(shop, name: str, **where) -> list[int]:
    return [r["entrants"] for r in steps(shop, name, **where)]


def wilson(x: int, n: int) -> tuple[float, float]:
    """The textbook Wilson score interval, z for 95 %."""
    z = 1.959963984540054
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_funnel_tables_build_from_the_shipped_and_the_project_files(funnel_shop):
    built = {t for t, r in funnel_shop.results.items() if r.status == "built"}
    assert {f"gold.funnel_{n}" for n in ("vcp_user", "vcp_excl", "vp_same_session", "vp_any_session",
                                         "vp_any_user", "view_cart_purchase", "product_view_to_purchase")} <= built
    assert "gold.cart_abandonment" in built


def test_funnel_steps_are_ordered_and_windowed(funnel_shop):
    # step 1: users 1-6. cart after the view within 1 h: users 1, 2, 3, 5. purchase after the cart within
    # 1 h of the view: users 1 and 5 (user 2 bought before viewing, user 3 one second late)
    assert entrants(funnel_shop, "vcp_user") == [6, 4, 2]
    rows = steps(funnel_shop, "vcp_user")
    assert [r["drop_off"] for r in rows] == [0, 2, 2]
    assert [r["conversion_rate"] for r in rows] == [1.0, pytest.approx(4 / 6), 0.5]
    assert [r["overall_conversion_rate"] for r in rows] == [1.0, pytest.approx(4 / 6), pytest.approx(2 / 6)]


def test_funnel_one_second_past_the_window_does_not_count_the_last_second_does(funnel_shop):
    # vp_any_user: users 1 (1200 s), 4 (600 s), 5 (180 s), 6 (exactly 3600 s); not 3 (3601 s), not 2
    assert entrants(funnel_shop, "vp_any_user") == [6, 4]
    rows = steps(funnel_shop, "vp_any_user")
    assert rows[1]["p90_seconds_to_step"] == pytest.approx(1200 + 0.7 * (3600 - 1200))


def test_funnel_same_product_versus_any_product(funnel_shop):
    # same product, per session: s5 (product 1) and s6 (product 4); s1 bought another product
    assert entrants(funnel_shop, "vp_same_session") == [6, 2]
    # any product, per session: s1 too
    assert entrants(funnel_shop, "vp_any_session") == [6, 3]


def test_funnel_session_versus_user_unit(funnel_shop):
    # user 4 viewed in s4a and bought in s4b: a user conversion, not a session one
    assert entrants(funnel_shop, "vp_any_user") == [6, 4]
    assert entrants(funnel_shop, "vp_any_session") == [6, 3]


def test_funnel_a_repeated_step_needs_another_event(funnel_shop):
    # only user 6 viewed twice; every other user's single view cannot also be its second
    assert entrants(funnel_shop, "view_twice") == [6, 1]
    assert steps(funnel_shop, "view_twice")[1]["median_seconds_to_step"] == 1800.0


def test_funnel_exclusion_drops_the_entry(funnel_shop):
    # user 5 removed the cart between cart and purchase: not counted at any step
    assert entrants(funnel_shop, "vcp_excl") == [5, 3, 1]
    (entry,) = funnel_shop.ledger("gold.funnel_vcp_excl_entries")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (6, 5, {"excluded_entry": 1})
    assert entry["is_balanced"] is True
    rows_in, rows_out, written, balanced = funnel_shop.balance("gold.funnel_vcp_excl")
    assert (rows_in, rows_out, balanced) == (5, 5, True)
    assert written == funnel_shop.count("gold.funnel_vcp_excl")


def test_funnel_wilson_bounds_match_hand_computed_values(funnel_shop):
    rows = steps(funnel_shop, "vcp_user")
    # 4 of 6, then 2 of 4; overall 2 of 6
    assert (rows[1]["conversion_low"], rows[1]["conversion_high"]) == pytest.approx(wilson(4, 6))
    assert (rows[1]["conversion_low"], rows[1]["conversion_high"]) == pytest.approx((0.29999, 0.90323), abs=1e-5)
    assert (rows[2]["conversion_low"], rows[2]["conversion_high"]) == pytest.approx((0.15004, 0.84996), abs=1e-5)
    assert (rows[2]["overall_conversion_low"], rows[2]["overall_conversion_high"]) == pytest.approx(wilson(2, 6))
    assert (rows[0]["conversion_low"], rows[0]["conversion_high"]) == pytest.approx(wilson(6, 6))


def test_funnel_time_to_step_median_and_p90(funnel_shop):
    rows = steps(funnel_shop, "vcp_user")
    # seconds to cart: 60 (user 2), 60 (user 5), 600 (user 1), 1800 (user 3)
    assert rows[1]["median_seconds_to_step"] == pytest.approx((60 + 600) / 2)
    assert rows[1]["p90_seconds_to_step"] == pytest.approx(600 + 0.7 * (1800 - 600))
    # seconds to purchase: 180 (user 5), 1200 (user 1)
    assert rows[2]["median_seconds_to_step"] == pytest.approx(690.0)
    assert rows[2]["p90_seconds_to_step"] == pytest.approx(180 + 0.9 * (1200 - 180))
    assert rows[0]["median_seconds_to_step"] == 0.0


def test_funnel_breakdowns_follow_the_entry_event(funnel_shop):
    assert entrants(funnel_shop, "vcp_user", breakdown="category_l1", value="electronics") == [5, 4, 2]
    assert entrants(funnel_shop, "vcp_user", breakdown="category_l1", value="furniture") == [1, 0, 0]
    assert entrants(funnel_shop, "vcp_user", breakdown="brand", value="apple") == [4, 4, 2]
    assert entrants(funnel_shop, "vcp_user", breakdown="brand", value="(none)") == [1, 0, 0]
    furniture = steps(funnel_shop, "vcp_user", breakdown="category_l1", value="furniture")
    assert furniture[2]["conversion_rate"] is None  # 0 of 0
    assert furniture[1]["conversion_low"] == 0.0


def test_funnel_window_completeness(funnel_shop):
    # the data ends on 2019-10-09 00:00:01; the last entry of 2019-10-01 is user 6's view at 14:00, whose
    # 7-day window ends on 2019-10-08 14:00 (complete); an entry on 2019-10-08 would not be
    assert {r["is_window_complete"] for r in steps(funnel_shop, "vcp_user")} == {True}
    assert {r["is_window_complete"] for r in steps(funnel_shop, "view_cart_purchase")} == {True}
    assert funnel_shop.query("SELECT count(*) AS n FROM gold.funnel_view_cart_purchase "
                             "WHERE grain = 'day' AND period_start > DATE '2019-10-01'") == [{"n": 0}]  # no views later


def test_cart_abandonment_counts_carts_without_a_later_purchase_of_the_product(funnel_shop):
    rows = {r["event_date"]: r for r in funnel_shop.query("SELECT * FROM gold.cart_abandonment")}
    first, second, last = rows[date(2019, 10, 1)], rows[date(2019, 10, 2)], rows[date(2019, 10, 8)]
    # 2019-10-01: carts of users 1, 2, 3, 5; only user 2's (bought before the cart) is abandoned
    assert (first["count_carts"], first["count_abandoned_carts"], first["abandoned_value"]) == (4, 1, 100.0)
    assert first["abandonment_rate"] == 0.25
    assert (first["abandonment_low"], first["abandonment_high"]) == pytest.approx(wilson(1, 4))
    assert (first["count_carting_users"], first["count_abandoning_users"]) == (4, 1)
    # 2019-10-02: user 7 bought 7 days and 1 second later (abandoned), user 8 exactly 7 days later
    assert (second["count_carts"], second["count_abandoned_carts"]) == (2, 1)
    assert (last["count_carts"], last["count_abandoned_carts"], last["abandoned_value"]) == (1, 1, 70.0)
    # complete: 2019-10-02 00:00 + 7 days <= 2019-10-09 00:00:01; not: 2019-10-08 12:00 + 7 days
    assert [r["is_window_complete"] for r in (first, second, last)] == [True, True, False]
    assert funnel_shop.balance("gold.cart_abandonment") == (7, 7, 3, True)


def test_funnel_declarations_are_validated():
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        parse_funnels("funnels: {f: {steps: [view, cart], colour: red}}", origin="f.yaml")
    with pytest.raises(ConfigError, match="at least 2 steps"):
        parse_funnels("funnels: {f: {steps: [view]}}", origin="f.yaml")
    with pytest.raises(ConfigError, match="window"):
        parse_funnels("funnels: {f: {steps: [view, cart], window: 7 weeks}}", origin="f.yaml")
    with pytest.raises(ConfigError, match="after_step < before_step"):
        parse_funnels("funnels: {f: {steps: [view, cart], exclusions: [{event_type: cart, after_step: 1, "
                      "before_step: 3}]}}", origin="f.yaml")
    with pytest.raises(ConfigError, match="event_type"):
        parse_funnels("funnels: {f: {steps: [view, checkout]}}", origin="f.yaml")
    spec = funnel_spec(FunnelDef.model_validate({"name": "f", "steps": ["view", "cart"], "window": "2h"}))
    assert (spec.name, spec.grain) == ("gold.funnel_f", ("grain", "period_start", "breakdown", "breakdown_value",
                                                         "step"))
    with pytest.raises(ConfigError, match="may not end in _entries"):
        parse_funnels("funnels: {a_entries: {steps: [view, cart]}}", origin="f.yaml")


def test_project_funnel_file_is_found_in_the_working_directory_and_overrides_by_name(tmp_path):
    (tmp_path / "shoplake-funnels.yaml").write_text(
        "funnels:\n  view_cart_purchase: {steps: [view, purchase], window: 1d, unit: session}\n"
        "  mine: {steps: [cart, purchase]}\n")
    catalog = catalog_for(None, cwd=tmp_path)
    assert "gold.funnel_mine" in catalog
    replaced = catalog.get("gold.funnel_view_cart_purchase")
    assert "unit session, window 1d" in replaced.description
    assert "gold.funnel_mine" not in catalog_for(None, cwd=tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="funnels file .*missing.yaml does not exist"):
        catalog_for(tmp_path / "missing.yaml")


def test_lake_reads_the_funnels_file_setting(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("funnels: {mine: {steps: [view, cart]}}\n")
    lake = Lake(load_settings(env={"SHOPLAKE_FUNNELS_FILE": str(path)}, lake=tmp_path / "lake"))
    assert "gold.funnel_mine" in lake.catalog


# -- weeks and whole-period time to convert ----------------------------------------------------------------
# 2019-09-30 is a Monday: the week of 2019-10-01 runs to Sunday 2019-10-06.
WEEK_FUNNELS = "funnels:\n  vp_day: {steps: [view, purchase], window: 1d, unit: user}\n"
WEEK_ROWS = (
    # user 1 enters on Tuesday and again on Thursday: two daily entries, one weekly entry (Tuesday's), whose
    # 1-day window misses Thursday's purchase
    ev("2019-10-01 10:00:00", "view", 1, 1, "a"),
    ev("2019-10-03 10:00:00", "view", 1, 1, "b"),
    ev("2019-10-03 11:00:00", "purchase", 1, 1, "b"),
    # user 2 enters on Sunday 23:00 and buys on Monday 01:00: the window crosses the week's end
    ev("2019-10-06 23:00:00", "view", 2, 2, "c"),
    ev("2019-10-07 01:00:00", "purchase", 2, 2, "c"),
    # users 3 and 4 convert on Monday 2019-10-07 (the next week)
    ev("2019-10-07 09:00:00", "view", 3, 3, "d"),
    ev("2019-10-07 09:30:00", "purchase", 3, 3, "d"),
    ev("2019-10-07 12:00:00", "view", 4, 4, "e"),
    ev("2019-10-07 12:10:00", "purchase", 4, 4, "e"),
)


@pytest.fixture(scope="module")
def week_shop(module_shop, tmp_path_factory):
    path = tmp_path_factory.mktemp("week_funnel_file") / "shoplake-funnels.yaml"
    path.write_text(WEEK_FUNNELS)
    shop = module_shop("funnel_weeks", catalog_for(path))
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *WEEK_ROWS)
    shop.build("silver.events+")
    return shop


def test_funnel_week_counts_a_unit_entering_on_two_days_once(week_shop):
    # days: 10-01 user 1 (no purchase within 1 day), 10-03 user 1 (bought), 10-06 user 2 (bought)
    daily = week_shop.query("SELECT period_start, entrants FROM gold.funnel_vp_day WHERE grain = 'day' "
                            "AND breakdown = 'all' AND step = 2 ORDER BY 1")
    assert [(r["period_start"], r["entrants"]) for r in daily] == [
        (date(2019, 10, 1), 0), (date(2019, 10, 3), 1), (date(2019, 10, 6), 1), (date(2019, 10, 7), 2)]
    # the week of 2019-09-30: users 1 and 2 enter once each; user 1's week entry is Tuesday's, whose window
    # ends before Thursday's purchase; user 2's window runs past Sunday into Monday's purchase
    assert entrants(week_shop, "vp_day", grain="week", day=date(2019, 9, 30)) == [2, 1]
    week = steps(week_shop, "vp_day", grain="week", day=date(2019, 9, 30))
    assert week[1]["median_seconds_to_step"] == 7200.0
    assert (week[1]["conversion_low"], week[1]["conversion_high"]) == pytest.approx(wilson(1, 2))
    assert entrants(week_shop, "vp_day", grain="week", day=date(2019, 10, 7)) == [2, 2]
    # the breakdowns have weekly rows too: product 1 is electronics, product 2 appliances
    assert entrants(week_shop, "vp_day", grain="week", day=date(2019, 9, 30), breakdown="category_l1",
                    value="electronics") == [1, 0]
    # a week's entrants are the distinct units of its days: fewer than the days' sum when one returns
    assert week_shop.query("SELECT sum(entrants) AS n FROM gold.funnel_vp_day WHERE grain = 'day' "
                           "AND breakdown = 'all' AND step = 1 AND period_start < DATE '2019-10-07'") == [{"n": 3}]


def test_funnel_entries_hold_one_row_per_entry_and_step_reached(week_shop):
    rows = week_shop.query("SELECT period_start, user_id, step, seconds_to_step FROM gold.funnel_vp_day_entries "
                           "WHERE grain = 'day' AND breakdown = 'all' ORDER BY 1, 2, 3")
    assert [(r["period_start"].day, r["user_id"], r["step"], r["seconds_to_step"]) for r in rows] == [
        (1, 1, 1, 0.0), (3, 1, 1, 0.0), (3, 1, 2, 3600.0), (6, 2, 1, 0.0), (6, 2, 2, 7200.0),
        (7, 3, 1, 0.0), (7, 3, 2, 1800.0), (7, 4, 1, 0.0), (7, 4, 2, 600.0)]
    for table in ("gold.funnel_vp_day_entries", "gold.funnel_vp_day"):
        rows_in, rows_out, written, balanced = week_shop.balance(table)
        assert (rows_in, rows_out, written, balanced) == (5, 5, week_shop.count(table), True)


def test_funnel_time_to_convert_over_a_period_is_exact_not_a_median_of_medians(week_shop):
    from shoplake.serve.pages import funnel_time_to_convert
    from shoplake.serve.view import Period, Reader

    reader = Reader(week_shop.lake)
    try:
        (row,) = funnel_time_to_convert(reader, "gold.funnel_vp_day", "day", "all", "(all)",
                                        Period(date(2019, 10, 1), date(2019, 10, 7))).rows
        (week,) = funnel_time_to_convert(reader, "gold.funnel_vp_day", "week", "all", "(all)",
                                         Period(date(2019, 9, 30), date(2019, 10, 7))).rows
    finally:
        reader.close()
    # conversions of the daily entries: 3600 (user 1), 7200 (user 2), 1800 (user 3), 600 (user 4); sorted
    # 600, 1800, 3600, 7200: median (1800 + 3600) / 2, p90 at position 2.7. The daily medians (3600, 7200,
    # 1200) would give 3600.
    assert (row["step_name"], row["entrants"]) == ("purchase", 4)
    assert row["median_seconds_to_step"] == pytest.approx(2700.0)
    assert row["p90_seconds_to_step"] == pytest.approx(3600 + 0.7 * 3600)
    # weekly entries: 7200 (user 2, week of 09-30), 1800 and 600 (week of 10-07)
    assert (week["entrants"], week["median_seconds_to_step"]) == (3, 1800.0)
    assert week["p90_seconds_to_step"] == pytest.approx(1800 + 0.8 * 5400)


def test_funnel_entries_are_stored_in_their_write_order(funnel_shop):
    """The entries lie in the order of the dashboard's filters (grain, breakdown, then the unit), so a page
    reads only the row groups of its slice; the sort runs at write time, on the checked rows."""
    import pyarrow.parquet as pq

    spec = funnel_shop.lake.catalog.get("gold.funnel_vp_same_session_entries")
    assert spec.write_order[:4] == ("grain", "breakdown", "user_id", "session_id")
    table = funnel_shop.lake.store.open(spec.name)
    files = table.file_uris()
    assert len(files) == 1  # so the file's row order is the table's
    stored = pq.read_table(files[0]).select(list(spec.write_order)).to_pylist()
    keys = [tuple(row[c] for c in spec.write_order) for row in stored]
    assert len(keys) > 10 and len({k[:2] for k in keys}) == 6
    assert keys == sorted(keys)


def test_write_order_names_declared_columns_of_a_full_table():
    from shoplake.catalog.spec import TableSpec, col

    def spec(**kwargs):
        return TableSpec(name="gold.things", description="One row per x.", grain=("x",),
                         columns=(col("x", "BIGINT"), col("y", "VARCHAR")), sql_text="SELECT 1 AS x, 'a' AS y",
                         **kwargs)

    assert spec(write_order=("y", "x")).write_order == ("y", "x")
    with pytest.raises(ValueError, match=r"write_order columns \['z'\]"):
        spec(write_order=("y", "z"))
    with pytest.raises(ValueError, match="only full tables"):
        spec(write_order=("x",), build="incremental", source="clickstream")


def test_funnel_entries_built_in_parts_of_users_equal_the_entries_built_at_once(funnel_shop, tmp_path,
                                                                                 monkeypatch, caplog):
    """Over many events the entries are computed in parts of users (each a bounded query) and written as
    one table; every part reads the same input version, and the rows equal those of one query."""
    import logging

    from shoplake.engines.duckdb import DuckDBEngine

    from .shop import Shop

    asked = []

    def three_parts(self, rows):
        asked.append(rows)
        return 3

    monkeypatch.setattr(DuckDBEngine, "parts_for", three_parts)
    split = Shop(tmp_path, funnel_shop.lake.catalog)
    split.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    with caplog.at_level(logging.INFO, logger="shoplake.build"):
        results = split.build("gold.funnel_vcp_user+ silver.events+")
    events = split.count("silver.events")
    assert asked and set(asked) == {events}
    assert "built in 3 parts by user_id" in caplog.text
    for name in ("vp_same_session", "vcp_excl", "view_cart_purchase", "product_view_to_purchase"):
        table = f"gold.funnel_{name}_entries"
        assert results[table].status == "built"
        once, parts = funnel_shop.query(f"SELECT * FROM {table}"), split.query(f"SELECT * FROM {table}")
        assert len(parts) > 5 and sorted(map(repr, parts)) == sorted(map(repr, once))
        users = {row["user_id"] for row in parts}
        assert len({user % 3 for user in users}) == 3  # every part contributed rows
        assert split.balance(table)[3] is True
    # Each part written as soon as it was computed, to files of its own, in write order (so each file's
    # slices still skip row groups); one commit added them all, and nothing else is left in the folder.
    import pyarrow.parquet as pq

    spec = split.lake.catalog.get("gold.funnel_vp_same_session_entries")
    files = split.lake.store.open(spec.name).file_uris()
    parts = set()
    for file in files:
        stored = pq.read_table(file).select(list(spec.write_order)).to_pylist()
        assert len({row["user_id"] % 3 for row in stored}) == 1  # one part per file
        parts.add(stored[0]["user_id"] % 3)
        keys = [tuple(row[c] for c in spec.write_order) for row in stored]
        assert keys == sorted(keys)
    assert parts == {0, 1, 2} and len(files) == 3
    assert sorted(p.name for p in split.lake.store.path(spec.name).glob("*.parquet")) == \
        sorted(file.rsplit("/", 1)[-1] for file in files)
    assert split.lake.store.version(spec.name) == 0  # one commit


@pytest.mark.parametrize("parts", [1, 3])
def test_a_split_table_is_checked_for_duplicates_part_by_part_with_the_same_count(funnel_shop, tmp_path,
                                                                                   monkeypatch, parts):
    """The grain's uniqueness groups by user_id, the split column: its duplicates never span two parts, so a
    split build counts them one part at a time (the whole table's groups need not fit in memory) and finds
    as many as a build at once."""
    from dataclasses import replace

    from shoplake.catalog import Catalog
    from shoplake.engines.duckdb import DuckDBEngine

    from .shop import Shop

    name = "gold.funnel_vp_same_session_entries"
    spec = funnel_shop.lake.catalog.get(name)
    # Every entry of an even user twice: the uniqueness check must fail on exactly those rows.
    doubled = replace(spec, sql_text=f"SELECT * FROM ({spec.sql_text}) AS e UNION ALL "
                                     f"SELECT * FROM ({spec.sql_text}) AS e WHERE user_id % 2 = 0")
    catalog = Catalog(doubled if s.name == name else s for s in funnel_shop.lake.catalog)
    monkeypatch.setattr(DuckDBEngine, "parts_for", lambda self, rows: parts)
    views = []
    define_view = DuckDBEngine.define_view
    monkeypatch.setattr(DuckDBEngine, "define_view",
                        lambda self, view, sql: views.append((view, sql)) or define_view(self, view, sql))
    shop = Shop(tmp_path, catalog)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.build("silver.events")
    result = shop.build(name)[name]
    assert result.status == "failed" and "check failed: unique_" in result.message
    expected = funnel_shop.query(f"SELECT count(*) AS n FROM {name} WHERE user_id % 2 = 0")[0]["n"]
    (failed,) = [r["rows_failed"] for r in shop.query("SELECT * FROM ops.data_quality")
                 if r["table_name"] == name and r["rule"].startswith("unique_")]
    assert expected > 0 and failed == expected
    per_part = [sql for view, sql in views if view == "candidate" and "UNION" not in sql]
    assert per_part == ([] if parts == 1 else [f"SELECT * FROM candidate_part_{i}" for i in range(parts)])
    assert shop.lake.store.version(name) is None  # nothing was written
    # A split build had staged its parts' files already: the failed check removed them.
    assert parts == 1 or not list(shop.lake.store.path(name).glob("*.parquet"))


def test_a_commit_to_the_input_between_two_parts_is_not_read_by_the_build(funnel_shop, tmp_path, monkeypatch):
    """Every part of a split build reads the input versions bound before the first part: another process
    that ingests and builds `silver.events` while the parts run changes nothing in this build (no part
    sees rows the others miss), and the next build sees the new rows."""
    import subprocess
    import sys

    from shoplake.engines.duckdb import DuckDBEngine

    from .shop import Shop

    name = "gold.funnel_vp_same_session_entries"
    monkeypatch.setattr(DuckDBEngine, "parts_for", lambda self, rows: 3)
    shop = Shop(tmp_path / "shop", funnel_shop.lake.catalog)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.build("silver.events")
    bound = shop.lake.store.version("silver.events")
    # User 301 (part 1 of 3) views and buys product 1 in one session: one more entry in every part's view.
    late = shop.csv(CLICKSTREAM_HEADER, ev("2019-10-01 16:00:00", "view", 1, 301, "s301"),
                    ev("2019-10-01 16:05:00", "purchase", 1, 301, "s301"))
    other_writer = [sys.executable, "-m", "shoplake", "--lake", str(shop.lake.settings.lake)]
    materialize = DuckDBEngine.materialize

    def then_another_process_commits(self, table, sql, params=None):
        materialize(self, table, sql, params)
        if table == "candidate_part_0":
            for command in (["ingest", "clickstream", str(late)], ["build", "silver.events"]):
                done = subprocess.run(other_writer + command, capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, done.stderr
            assert shop.lake.store.version("silver.events") > bound  # committed while this build runs

    monkeypatch.setattr(DuckDBEngine, "materialize", then_another_process_commits)
    assert shop.build(name)[name].status == "built"
    monkeypatch.setattr(DuckDBEngine, "materialize", materialize)
    assert not shop.query(f"SELECT * FROM {name} WHERE user_id = 301")
    assert shop.lake.store.last_write(name).meta["inputs"]["silver.events"] == bound
    assert sorted(map(repr, shop.query(f"SELECT * FROM {name}"))) == \
        sorted(map(repr, funnel_shop.query(f"SELECT * FROM {name}")))
    assert shop.build(name)[name].status == "built"  # its input changed: built again, with user 301
    assert {row["step"] for row in shop.query(f"SELECT * FROM {name} WHERE user_id = 301")} == {1, 2}


def test_a_split_build_that_fails_after_its_commit_keeps_the_committed_files(funnel_shop, tmp_path, monkeypatch):
    """The staged parts are removed when a split build fails, but not once its commit has landed: a
    failure after the commit (reading the version back) must not delete files the table now holds."""
    from shoplake.engines.delta import DeltaStore
    from shoplake.engines.duckdb import DuckDBEngine

    from .shop import Shop

    name = "gold.funnel_vp_same_session_entries"
    monkeypatch.setattr(DuckDBEngine, "parts_for", lambda self, rows: 3)
    commit_files = DeltaStore.commit_files

    def commit_then_fail(self, *args, **kwargs):
        commit_files(self, *args, **kwargs)
        raise OSError("the disk went away after the commit")

    shop = Shop(tmp_path, funnel_shop.lake.catalog)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.build("silver.events")
    monkeypatch.setattr(DeltaStore, "commit_files", commit_then_fail)
    with pytest.raises(OSError, match="went away"):
        shop.build(name)
    monkeypatch.setattr(DeltaStore, "commit_files", commit_files)
    assert shop.lake.store.version(name) == 0
    assert sorted(map(repr, shop.query(f"SELECT * FROM {name}"))) == \
        sorted(map(repr, funnel_shop.query(f"SELECT * FROM {name}")))


_KILLED_BEFORE_THE_COMMIT = """
import os, sys
from shoplake.build import build_tables
from shoplake.config import load_settings
from shoplake.engines.delta import DeltaStore
from shoplake.engines.duckdb import DuckDBEngine
from shoplake.lake import Lake

DuckDBEngine.parts_for = lambda self, rows: 3
DeltaStore.commit_files = lambda *args, **kwargs: os._exit(9)  # the process dies with its parts staged
build_tables(Lake(load_settings(env={}, lake=sys.argv[1])), sys.argv[2], run_id="killed")
"""


def test_a_split_build_killed_before_its_commit_leaves_files_no_reader_sees_and_vacuum_removes(tmp_path):
    """A process that dies between staging its parts and committing them: the table shows nothing, the
    next build is whole, and maintenance removes the dead process's files."""
    import subprocess
    import sys

    from shoplake.maintenance import maintain

    from .shop import Shop

    name = "gold.funnel_product_view_to_purchase_entries"
    shop = Shop(tmp_path)
    shop.ingest("clickstream", CLICKSTREAM_HEADER, *ROWS)
    shop.build("silver.events")
    killed = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_THE_COMMIT, str(shop.lake.settings.lake), name],
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == 9, killed.stderr
    folder = shop.lake.store.path(name)
    orphans = set(folder.glob("*.parquet"))
    assert len(orphans) >= 2  # staged parts (a part without rows has no file)
    assert shop.lake.store.version(name) is None  # nothing committed: no reader sees them

    assert shop.build(name)[name].status == "built"
    committed = {uri.rsplit("/", 1)[-1] for uri in shop.lake.store.open(name).file_uris()}
    assert not committed & {p.name for p in orphans}
    rows = shop.query(f"SELECT count(*) AS n FROM {name}")[0]["n"]
    maintain(shop.lake, name, compact=False, retain_hours=0, allow_short_retention=True)
    assert {p.name for p in folder.glob("*.parquet")} == committed
    assert shop.query(f"SELECT count(*) AS n FROM {name}")[0]["n"] == rows > 0



def test_an_exclusion_after_step_1_drops_an_entry_that_never_reaches_step_2(shop, tmp_path):
    """Steps are followed only for units with an event of a later step's or an exclusion's type; a unit
    whose only later event is the excluded one must still be dropped."""
    path = tmp_path / "shoplake-funnels.yaml"
    path.write_text("funnels:\n  vp_no_cart:\n    steps: [view, purchase]\n    window: 1h\n"
                    "    exclusions: [{event_type: cart, after_step: 1, before_step: 2}]\n")
    shop = Shop(tmp_path / "lake", catalog_for(path))
    shop.ingest("clickstream", CLICKSTREAM_HEADER,
                ev("2019-10-01 08:00:00", "view", 1, 1, "a"),  # carts within the window, never buys: dropped
                ev("2019-10-01 08:10:00", "cart", 1, 1, "a"),
                ev("2019-10-01 09:00:00", "view", 2, 2, "b"),  # views only: step 1
                ev("2019-10-01 10:00:00", "view", 3, 3, "c"),  # buys without a cart: steps 1 and 2
                ev("2019-10-01 10:20:00", "purchase", 3, 3, "c"),
                ev("2019-10-01 11:00:00", "view", 4, 4, "d"),  # carts after the window: step 1
                ev("2019-10-01 13:00:00", "cart", 4, 4, "d"))
    built = shop.build("silver.events+")
    assert all(r.status == "built" for r in built.values()), {n: r.message for n, r in built.items()}
    rows = shop.query("SELECT user_id, step, seconds_to_step FROM gold.funnel_vp_no_cart_entries "
                      "WHERE grain = 'day' AND breakdown = 'all' ORDER BY 1, 2")
    assert [(r["user_id"], r["step"], r["seconds_to_step"]) for r in rows] == [
        (2, 1, 0.0), (3, 1, 0.0), (3, 2, 1200.0), (4, 1, 0.0)]
    (entry,) = shop.ledger("gold.funnel_vp_no_cart_entries")
    assert (entry["rows_in"], entry["rows_out"], entry["diverted"]) == (4, 3, {"excluded_entry": 1})


def test_a_session_funnel_leaves_out_events_without_a_session(shop, tmp_path):
    """Sessions are numbered from the distinct (user, session) pairs and the events joined to them: an event
    with no session must still enter no session funnel, and the ledger's rows in must agree."""
    path = tmp_path / "shoplake-funnels.yaml"
    path.write_text("funnels:\n  vp_session: {steps: [view, purchase], window: 1h, unit: session, "
                    "same_product: true}\n")
    shop = Shop(tmp_path / "lake", catalog_for(path))
    shop.ingest("clickstream", CLICKSTREAM_HEADER,
                ev("2019-10-01 08:00:00", "view", 1, 1, "a"),   # a session: steps 1 and 2
                ev("2019-10-01 08:05:00", "purchase", 1, 1, "a"),
                ev("2019-10-01 09:00:00", "view", 2, 2, ""),    # no session: no entry
                ev("2019-10-01 09:05:00", "purchase", 2, 2, ""))
    built = shop.build("silver.events+")
    assert all(r.status == "built" for r in built.values()), {n: r.message for n, r in built.items()}
    rows = shop.query("SELECT user_id, session_id, step FROM gold.funnel_vp_session_entries "
                      "WHERE grain = 'day' AND breakdown = 'all' ORDER BY 1, 3")
    assert [(r["user_id"], r["session_id"], r["step"]) for r in rows] == [(1, "a", 1), (1, "a", 2)]
    (entry,) = shop.ledger("gold.funnel_vp_session_entries")
    assert (entry["rows_in"], entry["rows_out"], entry["is_balanced"]) == (1, 1, True)

# -- entries against a direct computation, on random events whose units enter on several days ------------
ORACLE_FUNNELS = """
funnels:
  o_same_session: {steps: [view, purchase], window: 1d, unit: session, same_product: true}
  o_any_user:     {steps: [view, purchase], window: 2d, unit: user}
"""


def _random_events(seed: int, n: int = 400) -> list[tuple[datetime, str, int, int, str]]:
    """(time, type, product, user, session): 40 users over 10 days (one or several days per user and week), sessions
    of a few hours that often cross midnight, so both a unit's one-day weeks and its several-day weeks occur."""
    rng = random.Random(seed)
    start = datetime(2019, 9, 30, tzinfo=UTC)  # a Monday
    events = []
    for _ in range(n):
        user = rng.randint(1, 40)
        day = rng.randint(0, 9)
        session = f"u{user}d{day}" if rng.random() < 0.8 else f"u{user}d{max(day - 1, 0)}"  # some span two days
        at = start + timedelta(days=day, hours=rng.choice([0, 1, 10, 22, 23]), minutes=rng.randint(0, 59))
        events.append((at, rng.choice(["view", "view", "purchase"]), rng.randint(1, 4), user, session))
    return events


def _expected_entries(events, *, unit: str, same_product: bool, window: timedelta) -> set[tuple]:
    """The `all` rows of a [view, purchase] funnel's entries, straight from the definition: per period, unit
    and product key, the first view; the earliest purchase of the same key at or after it within the window;
    a unit's row takes its latest entry and its quickest purchase."""
    out = set()
    for grain in ("day", "week"):
        firsts: dict[tuple, datetime] = {}
        for at, kind, product, user, session in events:
            if kind != "view":
                continue
            day = at.date()
            period = day if grain == "day" else day - timedelta(days=day.weekday())
            key = (period, user, session if unit == "session" else None, product if same_product else 0)
            firsts[key] = min(firsts.get(key, at), at)
        units: dict[tuple, list] = {}
        for (period, user, session, product), at_1 in firsts.items():
            bought = [at for at, kind, p, u, s in events if kind == "purchase" and u == user
                      and (unit == "user" or s == session) and (not same_product or p == product)
                      and at_1 <= at <= at_1 + window]
            seconds = (min(bought) - at_1).total_seconds() if bought else None
            row = units.setdefault((period, user, session), [at_1, seconds])
            row[0] = max(row[0], at_1)
            if seconds is not None and (row[1] is None or seconds < row[1]):
                row[1] = seconds
        for (period, user, session), (entered, seconds) in units.items():
            out.add((grain, period, user, session, 1, 0.0, entered))
            if seconds is not None:
                out.add((grain, period, user, session, 2, seconds, entered))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_funnel_entries_equal_a_direct_computation_over_days_and_weeks(module_shop, tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("oracle_funnel_file") / "shoplake-funnels.yaml"
    path.write_text(ORACLE_FUNNELS)
    shop = module_shop(f"funnel_oracle_{seed}", catalog_for(path))
    events = _random_events(seed)
    shop.ingest("clickstream", CLICKSTREAM_HEADER,
                *(ev(at.strftime("%Y-%m-%d %H:%M:%S"), kind, p, u, s) for at, kind, p, u, s in events))
    built = shop.build("silver.events+")
    assert all(r.status == "built" for r in built.values()), {n: r.message for n, r in built.items()}
    for name, unit, same, window in (("o_same_session", "session", True, timedelta(days=1)),
                                     ("o_any_user", "user", False, timedelta(days=2))):
        # both kinds of (unit, week) occur: entered on one day only, and on several days
        days = {}
        for at, kind, _, user, session in events:
            if kind == "view":
                week = at.date() - timedelta(days=at.weekday())
                days.setdefault((user, session if unit == "session" else None, week), set()).add(at.date())
        assert min(map(len, days.values())) == 1 < max(map(len, days.values())), name
        got = {(r["grain"], r["period_start"], r["user_id"], r["session_id"], r["step"], r["seconds_to_step"],
                r["entered_at"])
               for r in shop.query(f"SELECT * FROM gold.funnel_{name}_entries WHERE breakdown = 'all'")}
        want = _expected_entries(events, unit=unit, same_product=same, window=window)
        assert got == want, (name, sorted(got ^ want, key=str)[:5])
