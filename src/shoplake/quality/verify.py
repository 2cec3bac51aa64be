"""`shoplake verify`: reconcile the lake across tables, counting independently of the ledger.

The ledger says, per write, rows in = rows out + diverted. That holds by construction inside one row;
what it cannot show is that the rows are really where it says. `verify` counts them in the tables:

- **ingest**, per batch: the ledger entry's rows = the batch's bronze rows + its ingest-quarantine rows,
  each counted in its table; and the file's physical data lines (counted by the line scan, independently
  of the CSV parser) = the lines those rows span (`_source_lines`), summed in the tables;
- **silver**, per incremental table: the bronze rows of the batches it consumed (the rows it owns) = its
  rows + the rows quarantined by its checks (counted in quarantine) + the exact duplicates removed
  (the one figure only the ledger knows); no batch consumed twice;
- **ledger**, per table: every commit that carries a ledger entry has its row in `ops.ledger`, once;
  every bronze batch has its ingest entry;
- **gold**, per table: its totals equal the Silver snapshot it was built from (events, revenue, lines);
- **ml**, the ML tables derived from other rows (their writes carry ledger entries since issue 15):
  `ops.model_decisions` holds one row per ledgered decision and no version twice; `ops.model_monitoring`
  holds the rows each scoring's entry says, and the rows it summarised equal the rows that scoring wrote
  to the model's prediction table (per its entry); `gold.prediction_outcomes` holds the rows its last
  entry says, and each scoring it evaluates has as many candidates in its bins as
  `gold.conversion_predictions` held at that version (counted in the Delta log).

Each finding names what was compared, the expected and the found figure.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from shoplake.engines.base import Capability
from shoplake.engines.delta import batch_commits, consumed_batches
from shoplake.lake import Lake
from shoplake.quality.ledger import ledgered_commits

# Gold totals that must equal their Silver inputs: (table, what, gold SQL, silver SQL).
GOLD_RECONCILIATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("gold.daily_funnel", "events", "SELECT sum(count_events) FROM gold.daily_funnel",
     "SELECT count(*) FROM silver.events"),
    ("gold.daily_funnel", "purchases", "SELECT sum(count_purchases) FROM gold.daily_funnel",
     "SELECT count(*) FROM silver.events WHERE event_type = 'purchase'"),
    ("gold.daily_funnel", "revenue", "SELECT sum(revenue) FROM gold.daily_funnel",
     "SELECT sum(price) FROM silver.events WHERE event_type = 'purchase'"),
    ("gold.product_performance", "events", "SELECT sum(count_events) FROM gold.product_performance",
     "SELECT count(*) FROM silver.events"),
    ("gold.product_performance", "revenue", "SELECT sum(revenue) FROM gold.product_performance",
     "SELECT sum(price) FROM silver.events WHERE event_type = 'purchase'"),
    ("gold.user_features", "events", "SELECT sum(count_events) FROM gold.user_features",
     "SELECT count(*) FROM silver.events"),
    ("gold.daily_sales_by_country", "sale lines", "SELECT sum(count_sale_lines) FROM gold.daily_sales_by_country",
     "SELECT count(*) FROM silver.sales"),
    ("gold.daily_sales_by_country", "gross revenue", "SELECT sum(gross_revenue) FROM gold.daily_sales_by_country",
     "SELECT sum(line_revenue) FROM silver.sales"),
    ("gold.daily_sales_by_country", "returns value", "SELECT sum(returns_value) FROM gold.daily_sales_by_country",
     "SELECT sum(line_revenue) FROM silver.returns"),
    ("gold.customer_rfm", "sale lines", "SELECT sum(count_sale_lines) FROM gold.customer_rfm",
     "SELECT count(*) FROM silver.sales WHERE customer_id IS NOT NULL"),
    ("gold.customer_rfm", "gross revenue", "SELECT sum(monetary) FROM gold.customer_rfm",
     "SELECT sum(line_revenue) FROM silver.sales WHERE customer_id IS NOT NULL"),
    ("gold.product_sales", "sale lines", "SELECT sum(count_sale_lines) FROM gold.product_sales",
     "SELECT count(*) FROM silver.sales"),
    ("gold.product_sales", "gross revenue", "SELECT sum(gross_revenue) FROM gold.product_sales",
     "SELECT sum(line_revenue) FROM silver.sales"),
)


@dataclass(frozen=True)
class Finding:
    check: str  # ingest | silver | ledger | gold | ml
    subject: str  # the table, batch or key concerned
    what: str
    expected: float | int | str | None
    found: float | int | str | None

    @property
    def ok(self) -> bool:
        if isinstance(self.expected, float) or isinstance(self.found, float):
            if self.expected is None or self.found is None:
                return self.expected is None and self.found is None
            return math.isclose(float(self.expected), float(self.found), rel_tol=1e-9, abs_tol=1e-6)
        return self.expected == self.found


@dataclass
class Verification:
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def verdict(self) -> str:
        if self.ok:
            return f"verify: all {len(self.findings)} reconciliations hold"
        return f"verify: {len(self.failures)} of {len(self.findings)} reconciliations FAIL (run `shoplake verify`)"


def verify_lake(lake: Lake) -> Verification:
    """Run every reconciliation on the current snapshot of the lake (reads only)."""
    findings: list[Finding] = []
    with lake.engine(Capability.EMBEDDED_SQL) as engine:
        for spec in lake.catalog.ordered():
            if lake.store.exists(spec.name):
                engine.bind(spec)
        ledger = _ledger_rows(lake, engine)
        findings += _check_ledger(lake, ledger)
        findings += _check_ingest(lake, engine, ledger)
        findings += _check_silver(lake, engine, ledger)
        findings += _check_gold(lake, engine)
        findings += _check_ml(lake, engine, ledger)
    return Verification(findings)


def _ledger_rows(lake: Lake, engine) -> list[dict]:
    if not lake.store.exists("ops.ledger"):
        return []
    rows = engine.table("SELECT * FROM ops.ledger").to_pylist()
    for row in rows:
        row["diverted"] = json.loads(row["diverted"] or "{}")
        row["inputs"] = json.loads(row["inputs"] or "{}")
    return rows


def _check_ledger(lake: Lake, ledger: list[dict]) -> list[Finding]:
    findings = []
    counts = Counter(r["write_key"] for r in ledger)
    for key, n in sorted(counts.items()):
        if n > 1:
            findings.append(Finding("ledger", key, "ledger rows with this write key", 1, n))
    recorded = set(counts)
    carried = ledgered_commits(lake.store, lake.ledgered_tables())
    missing = [e.write_key for e in carried if e.write_key not in recorded]
    findings.append(Finding("ledger", "ops.ledger", "commits whose ledger entry is missing", 0, len(missing)))
    findings.append(Finding("ledger", "ops.ledger", "unbalanced entries", 0,
                            sum(1 for r in ledger if not r["is_balanced"])))
    return findings


def _count_by(engine, sql: str) -> dict:
    return {row[0]: row[1] for row in engine.rows(sql)}


def _check_ingest(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    findings = []
    for spec in lake.catalog.ordered():
        if spec.build != "ingest" or not lake.store.exists(spec.name):
            continue
        quarantine = f"quarantine.{spec.source}"
        bronze_rows = _count_by(engine, f"SELECT _batch_id, count(*) FROM {spec.name} GROUP BY 1")
        ingest_bad = (_count_by(engine, f"SELECT _batch_id, count(*) FROM {quarantine} "
                                        f"WHERE _stage = 'ingest' GROUP BY 1")
                      if lake.store.exists(quarantine) else {})
        # Physical lines the rows span (a quoted field over two lines is one row of two lines).
        lines = _count_by(engine, f"SELECT _batch_id, sum(n) FROM ("
                                  f"SELECT _batch_id, _source_lines AS n FROM {spec.name} UNION ALL "
                                  f"SELECT _batch_id, _source_lines FROM {quarantine} WHERE _stage = 'ingest') "
                                  f"GROUP BY 1") if lake.store.exists(quarantine) else {}
        entries = {r["inputs"].get("batch_id"): r for r in ledger
                   if r["table_name"] == spec.name and r["write_key"].startswith("ingest:")}
        batches = [c.meta["write_key"] for c in batch_commits(lake.store.commits(spec.name))]
        for batch in batches:
            entry = entries.get(batch)
            if entry is None:
                findings.append(Finding("ingest", batch, f"{spec.name} batch has an ingest ledger entry",
                                        "yes", "no"))
                continue
            good, bad = bronze_rows.get(batch, 0), ingest_bad.get(batch, 0)
            findings.append(Finding("ingest", batch, f"rows in {spec.name}", entry["rows_out"], good))
            findings.append(Finding("ingest", batch, f"ingest rows in {quarantine}", entry["rows_diverted"], bad))
            findings.append(Finding("ingest", batch, "rows read = bronze + quarantine", entry["rows_in"], good + bad))
            physical = entry["inputs"].get("physical_lines")
            if physical is not None:  # counted by the line scan; None for Parquet (rows, no lines)
                findings.append(Finding("ingest", batch, "physical data lines of the file = lines in bronze + "
                                        "quarantine", int(physical), int(lines.get(batch) or 0)))
        stray = sorted(set(bronze_rows) - set(batches))
        findings.append(Finding("ingest", spec.name, "bronze rows outside any committed batch", 0,
                                sum(bronze_rows[b] for b in stray)))
    return findings


def _check_silver(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    findings = []
    for spec in lake.catalog.ordered():
        if spec.build != "incremental" or not lake.store.exists(spec.name):
            continue
        bronze, quarantine = spec.inputs[0], f"quarantine.{spec.source}"
        commits = list(lake.store.commits(spec.name))
        per_commit = [b for c in commits for b in (c.meta.get("batches") or [])]
        twice = [b for b, n in Counter(per_commit).items() if n > 1]
        findings.append(Finding("silver", spec.name, "bronze batches consumed more than once", 0, len(twice)))
        consumed = sorted(consumed_batches(commits))
        if not consumed:
            continue
        owns = f" AND ({spec.owns_rows})" if spec.owns_rows else ""
        # The batch ids are data: bound as a relation, not spliced into the SQL.
        engine.bind_arrow("verify_consumed_batches", pa.table({"_batch_id": pa.array(consumed, pa.string())}))
        listed = "SELECT _batch_id FROM verify_consumed_batches"
        bronze_in = engine.rows(f"SELECT count(*) FROM {bronze} WHERE _batch_id IN ({listed}){owns}")[0][0]
        # Silver-stage quarantine rows of this table: those of its batches whose bronze row it owns.
        quarantined = engine.rows(
            f"SELECT count(*) FROM {quarantine} AS q JOIN (SELECT _batch_id, _source_row FROM {bronze} "
            f"WHERE _batch_id IN ({listed}){owns}) AS b USING (_batch_id, _source_row) "
            f"WHERE q._stage = 'silver'")[0][0] if lake.store.exists(quarantine) else 0
        rows = engine.rows(f"SELECT count(*) FROM {spec.name}")[0][0]
        entries = [r for r in ledger if r["table_name"] == spec.name]
        duplicates = sum(r["diverted"].get("duplicate", 0) for r in entries)
        ledger_quarantine = sum(v for r in entries for k, v in r["diverted"].items() if k.startswith("quarantine:"))
        findings += [
            Finding("silver", spec.name, f"rows in ({bronze}, consumed batches) per ledger",
                    bronze_in, sum(r["rows_in"] for r in entries)),
            Finding("silver", spec.name, "rows in the table per ledger", rows, sum(r["rows_out"] for r in entries)),
            Finding("silver", spec.name, f"rows quarantined by its checks (in {quarantine}) per ledger",
                    quarantined, ledger_quarantine),
            Finding("silver", spec.name, "bronze rows = table + quarantine + duplicates",
                    bronze_in, rows + quarantined + duplicates),
        ]
    return findings


def _check_gold(lake: Lake, engine) -> list[Finding]:
    findings = []
    for table, what, gold_sql, silver_sql in GOLD_RECONCILIATIONS:
        if not lake.store.exists(table):
            continue
        last = lake.store.last_write(table)
        inputs = (last.meta.get("inputs") if last else None) or {}
        # Compare with the Silver snapshots the table was built from (Silver may have moved on since; an
        # optimize + vacuum may have replaced that snapshot's files by the same rows in fewer files).
        for name, version in inputs.items():
            if version is not None:
                engine.bind(lake.catalog.get(name), version=lake.store.readable_version(name, int(version)))
            else:
                engine.bind_arrow(name, lake.catalog.get(name).arrow_schema.empty_table())
        gold_value = engine.rows(gold_sql)[0][0]
        silver_value = engine.rows(silver_sql)[0][0]
        if isinstance(gold_value, float) or isinstance(silver_value, float):
            gold_value, silver_value = float(gold_value or 0), float(silver_value or 0)
        else:
            gold_value, silver_value = int(gold_value or 0), int(silver_value or 0)
        findings.append(Finding("gold", table, f"{what} = silver", silver_value, gold_value))
        for name in inputs:
            engine.bind(lake.catalog.get(name))  # back to the latest snapshot
    return findings


def _entries(ledger: list[dict], table: str) -> list[dict]:
    return [r for r in ledger if r["table_name"] == table]


def _check_ml(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    findings: list[Finding] = []
    findings += _check_model_decisions(lake, engine, ledger)
    findings += _check_model_monitoring(lake, engine, ledger)
    findings += _check_prediction_outcomes(lake, engine, ledger)
    return findings


def _check_model_decisions(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    name = "ops.model_decisions"
    entries = _entries(ledger, name)
    if not lake.store.exists(name) or not entries:
        return []
    rows = Counter(f"{m}/{v}" for m, v in engine.rows(f"SELECT model_name, model_version FROM {name}"))
    return [
        Finding("ml", name, "decision rows of the ledgered versions per ledger",
                sum(r["rows_out"] for r in entries), sum(rows.get(r["inputs"].get("model"), 0) for r in entries)),
        Finding("ml", name, "model versions with more than one decision", 0, sum(1 for n in rows.values() if n > 1)),
    ]


def _check_model_monitoring(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    from shoplake.catalog.models import model_spec

    name = "ops.model_monitoring"
    entries = _entries(ledger, name)
    if not lake.store.exists(name) or not entries:
        return []
    counted = {(run, model): (n, scored) for run, model, n, scored in engine.rows(
        f"SELECT run_id, model_name, count(*), max(rows) FROM {name} GROUP BY 1, 2 HAVING min(rows) = max(rows)")}
    mixed = engine.rows(f"SELECT count(*) FROM (SELECT 1 FROM {name} GROUP BY run_id, model_name "
                        f"HAVING min(rows) <> max(rows))")[0][0]
    found = [counted.get((r["run_id"], str(r["inputs"].get("model", "")).rpartition("/")[0]), (0, None))
             for r in entries]
    # The prediction table entry of the same run and model version: its rows in are the rows scored.
    written = {(r["run_id"], r["table_name"], r["inputs"].get("model")): r["rows_in"] for r in ledger
               if r["write_key"].startswith("ml:")}
    expected_scored = found_scored = 0
    for entry, (_, scored) in zip(entries, found, strict=True):
        output = model_spec(str(entry["inputs"].get("kind"))).outputs[0]
        key = (entry["run_id"], output, entry["inputs"].get("model"))
        if key in written:
            expected_scored += written[key]
            found_scored += int(scored or 0)
    return [
        Finding("ml", name, "rows of the ledgered scorings per ledger", sum(r["rows_out"] for r in entries),
                sum(n for n, _ in found)),
        Finding("ml", name, "scorings whose rows disagree on the rows scored", 0, mixed),
        Finding("ml", name, "rows scored = rows in of the same run's prediction table per ledger",
                expected_scored, found_scored),
    ]


def _check_prediction_outcomes(lake: Lake, engine, ledger: list[dict]) -> list[Finding]:
    name, predictions = "gold.prediction_outcomes", "gold.conversion_predictions"
    if not lake.store.exists(name):
        return []
    findings = []
    # The table is overwritten: its newest ledgered write says what it holds (a later write without an entry,
    # behind shoplake's back, shows as a difference).
    entry = max(_entries(ledger, name), key=lambda r: r["table_version"] or -1, default=None)
    bins, written = engine.rows(f"SELECT coalesce(sum(bin_candidates), 0), count(*) FROM {name}")[0]
    if entry is not None:
        findings += [
            Finding("ml", name, "predictions folded into the rank bins per ledger", entry["rows_out"], int(bins)),
            Finding("ml", name, "rows in the table per ledger", entry["rows_written"], int(written)),
        ]
    per_scoring = engine.rows(f"SELECT predictions_version, sum(bin_candidates), min(candidates), max(candidates), "
                              f"sum(realised_purchases), min(candidate_conversions) FROM {name} GROUP BY 1")
    # Counted in the Delta log of gold.conversion_predictions (no data file read: a vacuum cannot hide it).
    expected = sum(lake.store.row_count(predictions, int(version)) for version, *_ in per_scoring)
    findings += [
        Finding("ml", name, f"candidates of the evaluated scorings = rows of {predictions} at their versions",
                expected, int(sum(b for _, b, *_ in per_scoring))),
        Finding("ml", name, "scorings whose bins disagree with their candidates or conversions", 0,
                sum(1 for _, b, lo, hi, realised, conv in per_scoring if not b == lo == hi or realised != conv)),
    ]
    return findings
