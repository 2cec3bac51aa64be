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
- **gold**, per table: its totals equal the Silver snapshot it was built from (events, revenue, lines).

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
    check: str  # ingest | silver | ledger | gold
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
