"""Plain-text reports over the lake (used by `shoplake summary` and `make demo`)."""

from __future__ import annotations

from dataclasses import dataclass

from shoplake.lake import Lake
from shoplake.quality.verify import verify_lake
from shoplake.query import run_query


@dataclass
class LakeSummary:
    lake: str
    tables: list[tuple[str, int | None, int | None]]
    kpis: list[tuple[str, str]]
    ledger_line: str
    verify_line: str = ""


def _scalar(lake: Lake, sql: str):
    table = run_query(lake, sql)
    return table.to_pylist()[0] if table.num_rows else {}


def lake_summary(lake: Lake) -> LakeSummary:
    tables = []
    for spec in lake.catalog.ordered():
        exists = lake.store.exists(spec.name)
        tables.append((spec.name, lake.store.row_count(spec.name) if exists else None,
                       lake.store.version(spec.name) if exists else None))
    kpis: list[tuple[str, str]] = []
    if lake.store.exists("gold.daily_funnel"):
        f = _scalar(lake, """
            SELECT sum(count_views) AS views, sum(count_carts) AS carts, sum(count_purchases) AS purchases,
                   sum(revenue) AS revenue, sum(count_purchases) / NULLIF(sum(count_views), 0) AS v2p,
                   sum(count_purchasing_sessions) / NULLIF(sum(count_sessions), 0) AS sconv,
                   min(event_date) AS first_day, max(event_date) AS last_day
            FROM gold.daily_funnel""")
        if f.get("views") is not None:
            kpis += [("clickstream days", f"{f['first_day']} .. {f['last_day']}"),
                     ("views / carts / purchases", f"{f['views']:,} / {f['carts']:,} / {f['purchases']:,}"),
                     ("purchase revenue", f"{f['revenue']:,.2f}"),
                     ("view-to-purchase rate", f"{(f['v2p'] or 0):.2%}"),
                     ("session conversion rate", f"{(f['sconv'] or 0):.2%}")]
    if lake.store.exists("gold.daily_sales_by_country"):
        s = _scalar(lake, """
            SELECT sum(gross_revenue) AS gross, sum(returns_value) AS returns, sum(net_revenue) AS net,
                   (SELECT count(*) FROM gold.customer_rfm) AS customers
            FROM gold.daily_sales_by_country""")
        if s.get("gross") is not None:
            kpis += [("retail gross / returns / net revenue",
                      f"{s['gross']:,.2f} / {s['returns']:,.2f} / {s['net']:,.2f}"),
                     ("retail customers (RFM)", f"{s['customers']:,}")]
    ledger = _scalar(lake, """
        SELECT count(*) AS entries, count(*) FILTER (WHERE NOT is_balanced) AS unbalanced FROM ops.ledger""") \
        if lake.store.exists("ops.ledger") else {}
    if ledger:
        ledger_line = (f"ledger: {ledger['entries']} entries, "
                       + ("all balanced (rows in = rows out + diverted)" if not ledger["unbalanced"]
                          else f"[red]{ledger['unbalanced']} UNBALANCED[/red]"))
    else:
        ledger_line = "ledger: empty"
    # The ledger balances inside each row by construction; verify counts the rows where they are.
    verification = verify_lake(lake)
    verify_line = verification.verdict() if verification.ok else f"[red]{verification.verdict()}[/red]"
    return LakeSummary(str(lake.settings.lake.resolve()), tables, kpis, ledger_line, verify_line)
