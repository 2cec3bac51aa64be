"""Declared funnels: a funnel file (YAML) validated into pydantic models, each funnel a Gold table.

The funnel file shipped with shoplake (`shoplake/layers/funnels.yaml`) is read first; the project's own
file (`shoplake-funnels.yaml` in the working directory, or the file named by the `funnels_file` setting)
then overrides funnels of the same name and adds new ones. Each funnel becomes `gold.funnel_<name>`,
declared like every other table (a `TableSpec` whose SQL is generated here, in DuckDB's dialect) and built
by the same build runner on either engine.

```yaml
funnels:
  view_cart_purchase:
    description: Any product viewed, carted, then bought by the same user within 7 days.
    steps: [view, cart, purchase]          # or [{event_type: view}, ...]
    window: 7d                             # s, m, h or d
    unit: user                             # user or session
    same_product: false
    exclusions: [{event_type: remove_from_cart, after_step: 2, before_step: 3}]
```

How a funnel is counted (exact definitions in docs/DATA_CONTRACT.md):
- A unit is a user (`user_id`) or a session (`user_id`, `session_id`; events without a session are left
  out). An *entry* is the unit's first step-1 event of a period: a UTC day, and (in the `week` grain rows)
  a Monday-to-Sunday week (per product for same-product funnels, per breakdown value for the breakdown
  rows). Each period's entry is judged on its own; its window may run past the period's end.
- `gold.funnel_<name>_entries` holds one row per entry and step it reached (with the seconds to it);
  `gold.funnel_<name>` aggregates it. The dashboard reads the entries for what cannot be summed from the
  funnel's rows: quantiles over several periods, and a breakdown by the users' segment (scored after the
  build, so joined at query time).
- Step k is reached at the earliest matching event at or after step k-1's time (strictly after when step
  k repeats step k-1's event type) and at most `window` after the entry (ordered: an event before the
  previous step never counts). Same-product funnels require the
  entry's product at every step; a unit reaches step k when any of its products does.
- An exclusion drops the entry when the unit has the excluded event strictly after `after_step` and
  strictly before `before_step` (or, when that step is not reached, within the window).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shoplake.catalog.spec import TableSpec, accepted_values, col, in_range, query_rule, unique
from shoplake.errors import ConfigError

USER_FUNNELS_FILE = "shoplake-funnels.yaml"
EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")
BREAKDOWNS = ("category_l1", "brand")
# The normal quantile of a two-sided 95 % interval, written out so both engines use the same constant.
Z95 = 1.959963984540054
_WINDOW = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FunnelStep(_Model):
    """One ordered step: an event predicate."""

    event_type: Literal["view", "cart", "remove_from_cart", "purchase"]
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.event_type


class Exclusion(_Model):
    """Drop an entry whose unit did `event_type` strictly between two steps (1-based)."""

    event_type: Literal["view", "cart", "remove_from_cart", "purchase"]
    after_step: int = Field(ge=1)
    before_step: int = Field(ge=2)


class FunnelDef(_Model):
    """One declared funnel."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,60}$")
    description: str = ""
    steps: tuple[FunnelStep, ...]
    window: str = "7d"
    unit: Literal["user", "session"] = "user"
    same_product: bool = False
    exclusions: tuple[Exclusion, ...] = ()

    @field_validator("steps", mode="before")
    @classmethod
    def _short_steps(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple({"event_type": v} if isinstance(v, str) else v for v in value)
        return value

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not _WINDOW.match(str(value)):
            raise ValueError(f"window {value!r} must be a whole number of s, m, h or d, such as 7d")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FunnelDef:
        if len(self.steps) < 2:
            raise ValueError("a funnel needs at least 2 steps")
        if self.name.endswith("_entries"):  # gold.funnel_<name>_entries is another funnel's entries table
            raise ValueError(f"a funnel name may not end in _entries ({self.name!r}): rename it")
        for exclusion in self.exclusions:
            if not exclusion.after_step < exclusion.before_step <= len(self.steps):
                raise ValueError(f"exclusion of {exclusion.event_type}: need after_step < before_step <= "
                                 f"{len(self.steps)} (the number of steps)")
        return self

    @property
    def window_seconds(self) -> int:
        match = _WINDOW.match(self.window)
        assert match is not None, "validated"
        return int(match.group(1)) * _SECONDS[match.group(2)]

    @property
    def table_name(self) -> str:
        return f"gold.funnel_{self.name}"

    @property
    def entries_table(self) -> str:
        return f"gold.funnel_{self.name}_entries"


class _FunnelFile(_Model):
    version: Literal[1] = 1
    funnels: dict[str, dict[str, Any]] = Field(default_factory=dict)


def shipped_text() -> str:
    """The funnel file shipped inside the package."""
    return resources.files("shoplake.layers").joinpath("funnels.yaml").read_text()


def parse_funnels(text: str, *, origin: str) -> dict[str, FunnelDef]:
    """Parse one funnel file.

    Raises:
        ConfigError: one error listing every problem in the file.
    """
    try:
        data = yaml.safe_load(text) or {}
        file = _FunnelFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{origin}: invalid funnel file: {' '.join(str(exc).split())}") from exc
    funnels: dict[str, FunnelDef] = {}
    problems: list[str] = []
    for name, raw in file.funnels.items():
        try:
            funnels[name] = FunnelDef.model_validate({**raw, "name": name})
        except ValidationError as exc:
            problems.append(f"funnel {name!r}: " + "; ".join(_problem(e) for e in exc.errors(include_url=False)))
    if problems:
        raise ConfigError(f"{origin}: invalid funnel definitions: " + "; ".join(problems))
    return funnels


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown option {where!r}"
    return f"{where or 'funnel'}: {error['msg'].removeprefix('Value error, ')}"


def user_funnels_file(funnels_file: Path | None, cwd: Path | None = None) -> Path | None:
    """The project's funnel file: the `funnels_file` setting, else `shoplake-funnels.yaml` when it exists."""
    if funnels_file is not None:
        if not Path(funnels_file).is_file():
            raise ConfigError(f"funnels file {funnels_file} does not exist (setting funnels_file / "
                              f"SHOPLAKE_FUNNELS_FILE)")
        return Path(funnels_file)
    candidate = (cwd or Path.cwd()) / USER_FUNNELS_FILE
    return candidate if candidate.is_file() else None


def load_funnels(user_file: Path | None = None) -> dict[str, FunnelDef]:
    """The shipped funnels, overridden and extended by name by `user_file`."""
    funnels = parse_funnels(shipped_text(), origin="the shipped funnel file")
    if user_file is not None:
        funnels.update(parse_funnels(user_file.read_text(), origin=str(user_file)))
    return funnels


# -- the generated table ---------------------------------------------------------------------------------

def wilson_sql(successes: str, trials: str, side: Literal["low", "high"]) -> str:
    """The Wilson score 95 % bound of successes / trials as SQL (NULL when trials is 0).

    centre = (x + z²/2) / (n + z²), half width = z / (n + z²) · sqrt(x (n − x) / n + z²/4), clamped to [0, 1].
    """
    x, n, z2 = f"CAST({successes} AS DOUBLE)", f"CAST({trials} AS DOUBLE)", repr(Z95 * Z95)
    centre = f"({x} + {z2} / 2) / ({n} + {z2})"
    half = f"{Z95!r} / ({n} + {z2}) * sqrt({x} * ({n} - {x}) / {n} + {z2} / 4)"
    bound = f"greatest(0.0, {centre} - {half})" if side == "low" else f"least(1.0, {centre} + {half})"
    return f"CASE WHEN {trials} > 0 THEN {bound} END"


def _quantile_sql(column: str, rank: str, count: str, tenths: int) -> str:
    """The linear-interpolation quantile (tenths/10) of `column` within a group, from its 0-based row
    `rank` and the group's row `count`: integer positions, so no floating point picks the wrong row."""
    position = f"(({count} - 1) * {tenths})"
    low = f"max({column}) FILTER (WHERE {rank} = {position} // 10)"
    high = (f"max({column}) FILTER (WHERE {rank} = {position} // 10 "
            f"+ CASE WHEN {position} % 10 > 0 THEN 1 ELSE 0 END)")
    fraction = f"max({position} % 10) / 10.0"
    return f"{low} + {fraction} * ({high} - {low})"


# Entries are judged per period of each grain; a week starts on Monday (ISO), like the retention cohorts.
GRAINS = {"day": "event_date", "week": "CAST(date_trunc('week', event_date) AS DATE)"}
# Inside the entries query a grain and a breakdown are numbers, named only in its last SELECT: grouping and
# joining millions of rows on small integers instead of text took 11-15 % less time (bench/RESULTS.md).
_GRAIN_CODES = {grain: code for code, grain in enumerate(GRAINS)}
_BREAKDOWN_CODES = {breakdown: code for code, breakdown in enumerate(("all", *BREAKDOWNS))}


def _named_sql(column: str, codes: dict[str, int]) -> str:
    """The name of a coded value (`_GRAIN_CODES`, `_BREAKDOWN_CODES`) as SQL."""
    whens = " ".join(f"WHEN {code} THEN '{name}'" for name, code in codes.items())
    return f"CASE {column} {whens} END AS {column}"


def _next_event_sql(probes: str, event_type: str, probe_time: str, *, strictly_after: bool,
                    carried: list[str]) -> str:
    """For each probe row of `probes`, the unit's earliest `event_type` event at or after (strictly after)
    its `probe_time`, as `next_at`: one sort of the probes and those events per unit, where a range join
    would pair every probe with every later event of its unit.

    Probes and events are put in one time order; at equal times a probe comes before the events when they
    count (at or after) and after them when they do not (strictly after). Then the earliest event time at or
    after a row is a minimum over the rows that follow it.
    """
    unit = "user_id, unit_session, product_key"
    probe_order, event_order = (1, 0) if strictly_after else (0, 1)
    columns = ", ".join(carried)
    nulls = ", ".join(f"CAST(NULL AS TIMESTAMPTZ) AS {c}" for c in carried if c not in unit.split(", "))
    return (
        f"SELECT {columns}, CASE WHEN {probe_time} IS NOT NULL THEN next_at END AS next_at FROM ("
        f"SELECT {columns}, is_probe, min(event_at) OVER (PARTITION BY {unit} ORDER BY t, tie "
        f"ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS next_at FROM ("
        f"SELECT {columns}, TRUE AS is_probe, {probe_time} AS t, {probe_order} AS tie, "
        f"CAST(NULL AS TIMESTAMPTZ) AS event_at FROM {probes} "
        f"UNION ALL SELECT {unit}, {nulls}, FALSE AS is_probe, event_at AS t, {event_order} AS tie, event_at "
        f"FROM ev WHERE event_type = '{event_type}') AS merged) AS ordered WHERE is_probe")


def _same_unit(a: str, b: str) -> str:
    """SQL: rows `a` and `b` have the same unit and product key."""
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in ("user_id", "unit_session", "product_key"))


def entries_sql(funnel: FunnelDef) -> str:
    """The DuckDB-dialect SQL of `gold.funnel_<name>_entries`: one row per entry (unit, grain, period and
    breakdown value) and step it reached, with the seconds from the entry to that step.

    Which steps an entry reaches depends only on its unit (and product) and its step-1 time, not on its
    grain or breakdown value: the chains of steps are followed once per distinct (unit, product, step-1
    time), the *probes*, and every entry then takes its probe's step times. Probes are made only for the
    units (and products) with an event of a later step's or an exclusion's type; an entry of any other unit
    reaches step 1 only (demo: the product funnel's query 6.6-6.9 -> 3.3-3.4 s, bench/RESULTS.md).
    """
    steps, window = funnel.steps, funnel.window_seconds
    n = len(steps)
    types = sorted({s.event_type for s in steps} | {e.event_type for e in funnel.exclusions})
    listed = ", ".join(f"'{t}'" for t in types)
    # Keys are numbers: a session is numbered within its user (exact, and both engines have row_number),
    # since grouping and joining tens of millions of rows on (user, session id text) took twice as long.
    session = "row_number() OVER (PARTITION BY user_id ORDER BY session_id)"
    events = f"event_type IN ({listed})" + (" AND session_id IS NOT NULL" if funnel.unit == "session" else "")
    product = "product_id" if funnel.same_product else "CAST(0 AS BIGINT)"
    unit = "user_id, unit_session, product_key"
    first = steps[0].event_type
    later = ", ".join(f"'{t}'" for t in sorted({s.event_type for s in steps[1:]} |
                                                 {e.event_type for e in funnel.exclusions}))
    daily = []
    for breakdown, value in (("all", "'(all)'"), *((b, f"coalesce({b}, '(none)')") for b in BREAKDOWNS)):
        by_value = "" if breakdown == "all" else f"{value}, "
        daily.append(
            f"SELECT {_GRAIN_CODES['day']} AS grain, {GRAINS['day']} AS period_start, "
            f"{_BREAKDOWN_CODES[breakdown]} AS breakdown, {value} AS breakdown_value, {unit}, "
            f"min(event_at) AS at_1 FROM ev "
            f"WHERE event_type = '{first}' GROUP BY {GRAINS['day']}, {by_value}{unit}")

    def week(period: str) -> str:
        return GRAINS["week"].replace("event_date", period)

    day_code, week_code = _GRAIN_CODES["day"], _GRAIN_CODES["week"]
    if funnel.unit == "session":
        # A session is numbered among its user's distinct sessions (a few per user), then the events take
        # their session's number by a join: numbering every event (dense_rank) sorted all of them (demo: the
        # product funnel's query 3.3 -> 2.9 s).
        ctes = [f"session_ids AS (SELECT user_id, session_id, {session} AS unit_session FROM "
                f"(SELECT DISTINCT user_id, session_id FROM silver.events WHERE {events}) AS sessions)",
                f"ev AS (SELECT e.user_id, s.unit_session, {product} AS product_key, event_type, event_at, "
                f"event_date, category_l1, brand FROM silver.events AS e JOIN session_ids AS s "
                f"ON s.user_id = e.user_id AND s.session_id = e.session_id WHERE event_type IN ({listed}))"]
    else:
        ctes = [f"ev AS (SELECT user_id, CAST(0 AS BIGINT) AS unit_session, {product} AS product_key, event_type, "
                f"event_at, event_date, category_l1, brand FROM silver.events WHERE {events})"]
    ctes += [
        "daily AS (" + " UNION ALL ".join(daily) + ")",
        # The (unit, week)s with step-1 events on more than one day. In every other week a unit's weekly
        # entries are its one day's entries (a session's week is almost always one day: 99.9 % of the demo's),
        # so their rows are copied from the day rows after the steps are followed (`unit_rows`).
        f"spans AS (SELECT user_id, unit_session, {week('period_start')} AS week_start FROM daily "
        f"WHERE breakdown = {_BREAKDOWN_CODES['all']} GROUP BY user_id, unit_session, {week('period_start')} "
        f"HAVING min(period_start) < max(period_start))",
        # A weekly entry is the week's first daily entry of the same key and breakdown value (same step-1
        # time, so the same steps reached).
        f"entries AS (SELECT * FROM daily UNION ALL SELECT {week_code} AS grain, s.week_start AS period_start, "
        f"d.breakdown, d.breakdown_value, d.user_id, d.unit_session, d.product_key, min(d.at_1) AS at_1 "
        f"FROM daily AS d JOIN spans AS s ON s.user_id = d.user_id AND s.unit_session = d.unit_session "
        f"AND s.week_start = {week('d.period_start')} "
        f"GROUP BY s.week_start, d.breakdown, d.breakdown_value, d.user_id, d.unit_session, d.product_key)",
        # Only a unit (and product) with an event of a later step's or an exclusion's type can reach step 2
        # or be excluded: the steps are followed for those *candidates* alone (a small share: most units
        # that view never cart or buy), and every other entry reaches step 1 only.
        f"candidates AS (SELECT DISTINCT {unit} FROM ev WHERE event_type IN ({later}))",
        f"probe_1 AS (SELECT DISTINCT d.user_id, d.unit_session, d.product_key, d.at_1 FROM daily AS d "
        f"JOIN candidates AS c ON {_same_unit('c', 'd')})",
    ]
    carried = [*unit.split(", "), "at_1"]
    for k in range(2, n + 1):
        step_type = steps[k - 1].event_type
        # A step repeating the previous step's event type needs a later event, not the same one again.
        nearest = _next_event_sql(f"probe_{k - 1}", step_type, f"at_{k - 1}",
                                  strictly_after=step_type == steps[k - 2].event_type, carried=carried)
        ctes.append(f"probe_{k} AS (SELECT {', '.join(carried)}, CASE WHEN epoch(next_at) <= epoch(at_1) + "
                    f"{window} THEN next_at END AS at_{k} FROM ({nearest}) AS nearest)")
        carried.append(f"at_{k}")
    last = f"probe_{n}"
    for i, exclusion in enumerate(funnel.exclusions, start=1):
        a, b = exclusion.after_step, exclusion.before_step
        # The earliest excluded event after step a is the one to test: if it is not before step b (or,
        # step b not reached, inside the window), none is.
        nearest = _next_event_sql(last, exclusion.event_type, f"at_{a}", strictly_after=True, carried=carried)
        ctes.append(
            f"excluded_{i} AS (SELECT {', '.join(carried)} FROM ({nearest}) AS nearest WHERE next_at IS NULL "
            f"OR (at_{b} IS NOT NULL AND next_at >= at_{b}) "
            f"OR (at_{b} IS NULL AND epoch(next_at) > epoch(at_1) + {window}))")
        last = f"excluded_{i}"
    unit_keys = "grain, period_start, breakdown, breakdown_value, user_id, unit_session"
    seconds = ", ".join(f"epoch({'e' if k == 1 else 'p'}.at_{k}) - epoch(e.at_1) AS seconds_{k}"
                        for k in range(1, n + 1))
    # An entry without a probe row reaches step 1 only, unless it is a candidate's that an exclusion dropped.
    dropped = ""
    if funnel.exclusions:
        dropped = (f" LEFT JOIN candidates AS c ON {_same_unit('c', 'e')} "
                   f"WHERE p.user_id IS NOT NULL OR c.user_id IS NULL")
    ctes.append(f"reached_by_product AS (SELECT e.grain, e.period_start, e.breakdown, e.breakdown_value, "
                f"e.user_id, e.unit_session, e.at_1, {seconds} FROM entries AS e LEFT JOIN {last} AS p "
                f"ON {_same_unit('p', 'e')} AND p.at_1 = e.at_1{dropped})")
    if funnel.same_product:
        # A unit's entry of a row spans its products: it reaches a step when any product does, at the
        # smallest time from its entry.
        reached = ", ".join(f"min(seconds_{k}) AS seconds_{k}" for k in range(1, n + 1))
        ctes.append(f"units AS (SELECT {unit_keys}, max(at_1) AS entered_at, {reached} FROM reached_by_product "
                    f"GROUP BY {unit_keys})")
    else:
        ctes.append(f"units AS (SELECT {unit_keys}, at_1 AS entered_at, "
                    f"{', '.join(f'seconds_{k}' for k in range(1, n + 1))} FROM reached_by_product)")
    # The weekly rows of a (unit, week) with step-1 events on one day only: its day rows, in that week.
    copied = ", ".join(f"u.seconds_{k}" for k in range(1, n + 1))
    ctes.append(f"unit_rows AS (SELECT * FROM units UNION ALL SELECT {week_code} AS grain, "
                f"{week('u.period_start')} AS period_start, u.breakdown, u.breakdown_value, u.user_id, "
                f"u.unit_session, u.entered_at, {copied} FROM units AS u LEFT JOIN spans AS s "
                f"ON s.user_id = u.user_id AND s.unit_session = u.unit_session "
                f"AND s.week_start = {week('u.period_start')} WHERE u.grain = {day_code} AND s.user_id IS NULL)")
    if funnel.unit == "session":
        units, session_out = "unit_rows JOIN session_ids USING (user_id, unit_session)", "session_id"
    else:
        units, session_out = "unit_rows", "CAST(NULL AS VARCHAR)"
    step_seconds = " ".join(f"WHEN {k} THEN seconds_{k}" for k in range(1, n + 1))
    step_numbers = ", ".join(f"({k})" for k in range(1, n + 1))
    ctes.append(
        f"reached AS (SELECT grain, period_start, breakdown, breakdown_value, user_id, unit_session, "
        f"{session_out} AS session_id, step, CAST(CASE step {step_seconds} END AS DOUBLE) AS seconds_to_step, "
        f"entered_at FROM {units} "
        f"CROSS JOIN (VALUES {step_numbers}) AS steps (step))")
    return (
        f"-- {funnel.entries_table}: generated from the funnel declaration {funnel.name!r} "
        f"(shoplake.catalog.funnels).\nWITH " + ",\n".join(ctes) + "\nSELECT "
        f"{_named_sql('grain', _GRAIN_CODES)}, period_start, {_named_sql('breakdown', _BREAKDOWN_CODES)}, "
        "breakdown_value, user_id, session_id, step, seconds_to_step, entered_at FROM reached "
        "WHERE seconds_to_step IS NOT NULL\n")


def funnel_sql(funnel: FunnelDef) -> str:
    """The DuckDB-dialect SQL of `gold.funnel_<name>` (one row per grain, period, breakdown value and step),
    aggregated from the funnel's entries table."""
    steps, window = funnel.steps, funnel.window_seconds
    n = len(steps)
    group = "grain, period_start, breakdown, breakdown_value"
    sums = ", ".join(f"count(*) FILTER (WHERE step = {k}) AS n_{k}" for k in range(1, n + 1))
    ctes = [
        "data_end AS (SELECT max(event_at) AS end_at FROM silver.events)",
        f"counts AS (SELECT {group}, max(entered_at) AS last_entry_at, {sums} FROM {funnel.entries_table} "
        f"GROUP BY {group})",
        # Every step-1 row has 0 seconds (the entry itself), so only the rows of later steps (a few per cent
        # of an entries table) are ranked: ranking the step-1 rows too sorted the whole table.
        f"ranked AS (SELECT {group}, step, seconds_to_step AS seconds, row_number() OVER (PARTITION BY {group}, "
        f"step ORDER BY seconds_to_step) - 1 AS rn, count(*) OVER (PARTITION BY {group}, step) AS cnt "
        f"FROM {funnel.entries_table} WHERE step > 1)",
        f"times AS (SELECT {group}, step, {_quantile_sql('seconds', 'rn', 'cnt', 5)} AS median_seconds, "
        f"{_quantile_sql('seconds', 'rn', 'cnt', 9)} AS p90_seconds FROM ranked GROUP BY {group}, step)",
        "grid AS (" + " UNION ALL ".join(
            f"SELECT {group}, last_entry_at, {k} AS step, '{steps[k - 1].label}' AS step_name, n_{k} AS entrants, "
            f"n_{max(k - 1, 1)} AS previous_entrants, n_1 AS first_entrants FROM counts"
            for k in range(1, n + 1)) + ")",
    ]
    return (
        f"-- {funnel.table_name}: generated from the funnel declaration {funnel.name!r} "
        f"(shoplake.catalog.funnels).\nWITH " + ",\n".join(ctes) + f"""
SELECT g.grain, g.period_start, g.breakdown, g.breakdown_value, g.step, g.step_name, g.entrants,
       g.previous_entrants - g.entrants AS drop_off,
       CAST(g.entrants AS DOUBLE) / NULLIF(g.previous_entrants, 0) AS conversion_rate,
       {wilson_sql('g.entrants', 'g.previous_entrants', 'low')} AS conversion_low,
       {wilson_sql('g.entrants', 'g.previous_entrants', 'high')} AS conversion_high,
       CAST(g.entrants AS DOUBLE) / NULLIF(g.first_entrants, 0) AS overall_conversion_rate,
       {wilson_sql('g.entrants', 'g.first_entrants', 'low')} AS overall_conversion_low,
       {wilson_sql('g.entrants', 'g.first_entrants', 'high')} AS overall_conversion_high,
       CASE WHEN g.step = 1 THEN 0.0 ELSE t.median_seconds END AS median_seconds_to_step,
       CASE WHEN g.step = 1 THEN 0.0 ELSE t.p90_seconds END AS p90_seconds_to_step,
       epoch(g.last_entry_at) + {window} <= epoch(d.end_at) AS is_window_complete
FROM grid AS g
CROSS JOIN data_end AS d
LEFT JOIN times AS t
  ON t.grain = g.grain AND t.period_start = g.period_start AND t.breakdown = g.breakdown
 AND t.breakdown_value = g.breakdown_value AND t.step = g.step
""")


_RATES = ("conversion_rate", "conversion_low", "conversion_high", "overall_conversion_rate",
          "overall_conversion_low", "overall_conversion_high")
_ENTRIES = "grain = 'day' AND breakdown = 'all' AND step = 1"


def _entries_accounting_sql(funnel: FunnelDef) -> str:
    """Rows in: the funnel's daily entries (distinct unit and date with a step-1 event); rows out: the
    step-1 rows of the day grain and `all` breakdown; entries dropped by an exclusion are diverted as
    `excluded_entry`."""
    unit = "user_id, session_id" if funnel.unit == "session" else "user_id"
    session = " AND session_id IS NOT NULL" if funnel.unit == "session" else ""
    rows_in = (f"(SELECT count(*) FROM (SELECT DISTINCT {unit}, event_date FROM silver.events "
               f"WHERE event_type = '{funnel.steps[0].event_type}'{session}) AS entries)")
    rows_out = f"(SELECT count(*) FROM candidate WHERE {_ENTRIES})"
    excluded = f", {rows_in} - {rows_out} AS excluded_entry" if funnel.exclusions else ""
    return f"SELECT {rows_in} AS rows_in, {rows_out} AS rows_out{excluded}"


def _accounting_sql(funnel: FunnelDef) -> str:
    """Rows in: the daily entries of the `all` breakdown in the entries table; rows out: the step-1 entrants
    of the day grain and `all` breakdown."""
    return (f"SELECT (SELECT count(*) FROM {funnel.entries_table} WHERE {_ENTRIES}) AS rows_in, "
            "(SELECT coalesce(sum(entrants), 0) FROM candidate WHERE grain = 'day' AND breakdown = 'all' "
            "AND step = 1) AS rows_out")


_PERIOD_COLUMNS = (
    col("grain", "VARCHAR", "day or week (Monday to Sunday): the period an entry is judged in"),
    col("period_start", "DATE", "the UTC day of the entry, or the Monday of its week"),
    col("breakdown", "VARCHAR", "all, category_l1 or brand (of the entry event)"),
    col("breakdown_value", "VARCHAR", "(all) for breakdown all; (none) when the entry event has none"),
)


def _describe(funnel: FunnelDef) -> str:
    steps = " → ".join(s.label for s in funnel.steps)
    return (f"{steps}; {'same product' if funnel.same_product else 'any product'}, unit {funnel.unit}, "
            f"window {funnel.window}")


def entries_spec(funnel: FunnelDef) -> TableSpec:
    """The per-entry table of a funnel: what the funnel table aggregates, and what the dashboard reads for
    quantiles over a whole period and for breakdowns known only after the build (the users' segment)."""
    unit = ("user_id", "session_id") if funnel.unit == "session" else ("user_id",)
    return TableSpec(
        name=funnel.entries_table,
        description=(f"One row per (grain, period_start, breakdown, breakdown_value, unit, step) of the funnel "
                     f"{funnel.name} ({_describe(funnel)}): an entry of the unit in the period and each step it "
                     f"reached, with the seconds from the entry to the step."),
        grain=("grain", "period_start", "breakdown", "breakdown_value", *unit, "step"),
        columns=(
            *_PERIOD_COLUMNS,
            col("user_id", "BIGINT"),
            col("session_id", "VARCHAR", "the unit's session (session funnels; NULL for user funnels)"),
            col("step", "INTEGER", "a step the entry reached (1-based; every entry has step 1)"),
            col("seconds_to_step", "DOUBLE", "seconds from the entry to reaching the step (0 at step 1)"),
            col("entered_at", "TIMESTAMPTZ", "the entry's time (same-product funnels: its latest product's)"),
        ),
        inputs=("silver.events",),
        sql_text=entries_sql(funnel),
        accounting_sql=_entries_accounting_sql(funnel),
        checks=(unique("grain", "period_start", "breakdown", "breakdown_value", *unit, "step"),
                accepted_values("grain", tuple(GRAINS), action="fail")),
        # In the order of the dashboard's filters (grain, breakdown), so a page reads only the row groups of
        # its slice; inside a slice a unit's rows lie side by side, where its session id and entry time
        # repeat and compress to little (written unordered, the session ids made most of the bytes). Sorted
        # inside the query, the rows ran the 10M-event build out of memory.
        write_order=("grain", "breakdown", "user_id", "session_id", "period_start", "breakdown_value", "step"),
        # Every entry comes from its own user's events: many events are built in parts of users.
        split_by="user_id",
    )


def funnel_spec(funnel: FunnelDef) -> TableSpec:
    """The Gold table a funnel declaration becomes."""
    return TableSpec(
        name=funnel.table_name,
        description=(f"One row per (grain, period_start, breakdown, breakdown_value, step) of the funnel "
                     f"{funnel.name} ({_describe(funnel)}): entrants, conversion with Wilson 95 % "
                     f"intervals, time to step, drop-off. {funnel.description}").strip(),
        grain=("grain", "period_start", "breakdown", "breakdown_value", "step"),
        columns=(
            *_PERIOD_COLUMNS,
            col("step", "INTEGER", "1-based step number"),
            col("step_name", "VARCHAR"),
            col("entrants", "BIGINT", "units reaching this step (step 1: units entering)"),
            col("drop_off", "BIGINT", "entrants of the previous step - entrants (0 at step 1)"),
            col("conversion_rate", "DOUBLE", "entrants / entrants of the previous step (1 at step 1; NULL when 0)"),
            col("conversion_low", "DOUBLE", "Wilson 95 % lower bound of conversion_rate"),
            col("conversion_high", "DOUBLE", "Wilson 95 % upper bound of conversion_rate"),
            col("overall_conversion_rate", "DOUBLE", "entrants / entrants of step 1"),
            col("overall_conversion_low", "DOUBLE", "Wilson 95 % lower bound of overall_conversion_rate"),
            col("overall_conversion_high", "DOUBLE", "Wilson 95 % upper bound of overall_conversion_rate"),
            col("median_seconds_to_step", "DOUBLE", "median seconds from entry to this step, units reaching it"),
            col("p90_seconds_to_step", "DOUBLE", "90th percentile (linear interpolation) of the same"),
            col("is_window_complete", "BOOLEAN",
                "every entry of the row had its whole window inside the data (latest entry + window <= "
                "latest event_at in silver.events)"),
        ),
        inputs=("silver.events", funnel.entries_table),
        sql_text=funnel_sql(funnel),
        accounting_sql=_accounting_sql(funnel),
        checks=(
            unique("grain", "period_start", "breakdown", "breakdown_value", "step"),
            *(in_range(rate, low=0.0, high=1.0, action="fail") for rate in _RATES),
            query_rule("entrants_never_grow",
                       "SELECT * FROM candidate WHERE drop_off < 0", action="fail"),
        ),
    )


def funnel_specs(funnels: Mapping[str, FunnelDef]) -> tuple[TableSpec, ...]:
    """Two tables per funnel (its entries, then the funnel), in name order."""
    return tuple(spec for name in sorted(funnels) for spec in (entries_spec(funnels[name]), funnel_spec(funnels[name])))
