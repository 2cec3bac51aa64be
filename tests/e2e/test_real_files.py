"""End-to-end truth on the real third-party files in ../shared/data/real (see its PROVENANCE.md).

Each data set is ingested and built once per module (through the Python API the CLI wraps); the tests
then check the published figures that follow from the data contract, and that every row is accounted.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest

from shoplake.build import build_tables
from shoplake.ingest import ingest_files
from shoplake.lake import new_run_id
from shoplake.layers.gold import RFM_SEGMENTS

pytestmark = pytest.mark.slow  # a label only: these run by default

RETAIL_FILE = ("online_retail", "online_retail_uci_2010-12_2011-12.csv.gz")
OCT_FILE = ("rees46_multicategory", "2019-Oct_head_17434rows.csv.gz")
NOV_FILE = ("rees46_multicategory", "2019-Nov_head_683rows.csv.gz")
COSMETICS = "rees46_cosmetics_42variant"
COSMETICS_MONTHS = ("data_2022_oct", "data_2022_nov", "data_2022_dec", "data_2023_jan", "data_2023_feb")
MALFORMED_SESSION = "091e110c-f7bd-47b5-bed8-3a3aba4232ddgg"

RETAIL_SOURCE_COLUMNS = ("InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, "
                         "Country")
CLICK_SOURCE_COLUMNS = ("event_time, event_type, product_id, category_id, category_code, brand, price, "
                        "user_id, user_session")


def _build_all(lake) -> None:
    results = build_tables(lake, run_id=new_run_id())
    failed = [f"{r.table}: {r.message}" for r in results if r.status == "failed"]
    assert not failed, failed


def _assert_ledger_balances(e2e, lake) -> None:
    entries = e2e.rows(lake, "SELECT table_name, rows_in, rows_out, rows_diverted, diverted, is_balanced "
                             "FROM ops.ledger")
    assert entries
    for entry in entries:
        assert entry["rows_in"] == entry["rows_out"] + entry["rows_diverted"], entry
        assert entry["rows_diverted"] == sum(json.loads(entry["diverted"]).values()), entry
        assert entry["is_balanced"], entry


def _duplicates(e2e, lake, table: str) -> int:
    """Exact duplicates removed by the silver builds of `table`, summed over its ledger entries."""
    total = 0
    for entry in e2e.rows(lake, f"SELECT diverted FROM ops.ledger WHERE table_name = '{table}'"):
        total += json.loads(entry["diverted"]).get("duplicate", 0)
    return total


# -- UCI Online Retail (complete) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def retail_lake(e2e, tmp_path_factory):
    path = e2e.real_file(*RETAIL_FILE)
    lake = e2e.open_lake(tmp_path_factory.mktemp("retail") / "lake")
    results = ingest_files(lake, "retail", [str(path)], run_id=new_run_id())
    assert [r.status for r in results] == ["ingested"]
    _build_all(lake)
    return lake


def test_retail_bronze_has_every_row_of_the_file(e2e, retail_lake):
    assert e2e.scalar(retail_lake, "SELECT count(*) FROM bronze.retail") == 541_909
    assert e2e.scalar(retail_lake, "SELECT count(*) FROM quarantine.retail WHERE _stage = 'ingest'") == 0


def test_retail_bronze_matches_published_figures(e2e, retail_lake):
    (facts,) = e2e.rows(retail_lake, """
        SELECT count(DISTINCT CustomerID)                                  AS customers,
               count(DISTINCT Country)                                     AS countries,
               count(DISTINCT InvoiceNo)                                   AS invoices,
               count(DISTINCT StockCode)                                   AS stock_codes,
               count(*) FILTER (WHERE CustomerID IS NULL)                  AS without_customer,
               count(*) FILTER (WHERE CustomerID IS NOT NULL)              AS with_customer,
               count(*) FILTER (WHERE Description IS NULL)                 AS empty_description,
               count(*) FILTER (WHERE starts_with(InvoiceNo, 'C'))         AS cancellations,
               count(*) FILTER (WHERE Quantity <= 0)                       AS non_positive_quantity,
               count(*) FILTER (WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C'))
                                                                           AS customer_not_cancelled,
               count(*) FILTER (WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C')
                                  AND Quantity > 0 AND UnitPrice > 0)      AS customer_clean,
               sum(Quantity * UnitPrice)                                   AS total_value,
               strftime(min(InvoiceDate), '%Y-%m-%d %H:%M')                AS first_at,
               strftime(max(InvoiceDate), '%Y-%m-%d %H:%M')                AS last_at
        FROM bronze.retail
    """)
    assert facts["customers"] == 4_372
    assert facts["countries"] == 38
    assert facts["invoices"] == 25_900
    assert facts["stock_codes"] == 4_070
    assert facts["without_customer"] == 135_080
    assert facts["with_customer"] == 406_829
    assert facts["empty_description"] == 1_454
    assert facts["cancellations"] == 9_288
    assert facts["non_positive_quantity"] == 10_624
    assert facts["customer_not_cancelled"] == 397_924
    assert facts["customer_clean"] == 397_884
    assert facts["total_value"] == pytest.approx(9_747_747.934, abs=0.01)
    assert (facts["first_at"], facts["last_at"]) == ("2010-12-01 08:26", "2011-12-09 12:50")


def test_retail_bronze_is_never_deduplicated(e2e, retail_lake):
    distinct = e2e.scalar(retail_lake, f"SELECT count(*) FROM (SELECT DISTINCT {RETAIL_SOURCE_COLUMNS} "
                                       f"FROM bronze.retail) AS d")
    assert 541_909 - distinct == 5_268  # exact-duplicate rows in the raw file, as published


def test_retail_sales_with_customer_match_published_clean_count(e2e, retail_lake):
    # 397,884 clean lines with a customer, 392,692 after dropping exact duplicates.
    sql = "SELECT count(*) FROM silver.sales WHERE customer_id IS NOT NULL"
    assert e2e.scalar(retail_lake, sql) == 392_692
    assert e2e.scalar(retail_lake, "SELECT count(DISTINCT customer_id) FROM silver.sales") == 4_338


def test_retail_customer_rfm_has_published_customer_count(e2e, retail_lake):
    (rfm,) = e2e.rows(retail_lake, """
        SELECT count(*) AS customers, count(DISTINCT customer_id) AS distinct_customers,
               sum(count_sale_lines) AS sale_lines, min(snapshot_date) AS first_snapshot,
               max(snapshot_date) AS last_snapshot, min(recency_days) AS min_recency,
               count(*) FILTER (WHERE r_score NOT BETWEEN 1 AND 5 OR f_score NOT BETWEEN 1 AND 5
                                   OR m_score NOT BETWEEN 1 AND 5) AS bad_scores,
               count(*) FILTER (WHERE returns_value > 0
                                   OR abs(net_monetary - (monetary + returns_value)) > 1e-6) AS bad_money
        FROM gold.customer_rfm
    """)
    assert rfm["customers"] == rfm["distinct_customers"] == 4_338
    assert rfm["sale_lines"] == 392_692
    assert str(rfm["first_snapshot"]) == str(rfm["last_snapshot"]) == "2011-12-10"  # day after 2011-12-09
    assert rfm["min_recency"] >= 1
    assert rfm["bad_scores"] == 0
    assert rfm["bad_money"] == 0


def test_retail_every_bronze_row_is_accounted_across_the_split(e2e, retail_lake):
    counts = e2e.rows(retail_lake, """
        SELECT (SELECT count(*) FROM bronze.retail)     AS bronze,
               (SELECT count(*) FROM silver.sales)      AS sales,
               (SELECT count(*) FROM silver.returns)    AS returns,
               (SELECT count(*) FROM quarantine.retail) AS quarantined
    """)[0]
    duplicates = sum(_duplicates(e2e, retail_lake, t) for t in ("silver.sales", "silver.returns"))
    assert duplicates > 0
    assert counts["bronze"] == counts["sales"] + counts["returns"] + counts["quarantined"] + duplicates
    # Silver owners partition bronze: every row goes to exactly one of sales or returns.
    split = e2e.rows(retail_lake, """
        SELECT sum(rows_in) FILTER (WHERE table_name = 'silver.sales')   AS sales_in,
               sum(rows_in) FILTER (WHERE table_name = 'silver.returns') AS returns_in
        FROM ops.ledger
    """)[0]
    assert split["sales_in"] + split["returns_in"] == 541_909
    assert split["returns_in"] == 10_624  # cancellations and negative quantities (all non-positive here)


def test_retail_returns_hold_every_cancellation(e2e, retail_lake):
    (r,) = e2e.rows(retail_lake, f"""
        SELECT (SELECT count(*) FROM (SELECT DISTINCT {RETAIL_SOURCE_COLUMNS} FROM bronze.retail
                                      WHERE starts_with(InvoiceNo, 'C')) AS d) AS distinct_cancellations,
               (SELECT count(*) FROM silver.returns
                 WHERE starts_with(invoice_id, 'C'))                         AS returned_cancellations,
               (SELECT count(*) FROM silver.returns WHERE line_revenue > 0)              AS positive_returns,
               (SELECT count(*) FROM silver.sales
                 WHERE starts_with(invoice_id, 'C') OR quantity <= 0 OR unit_price <= 0) AS invalid_sales
    """)
    assert r["returned_cancellations"] == r["distinct_cancellations"]
    assert r["positive_returns"] == 0
    assert r["invalid_sales"] == 0


def test_retail_quarantine_records_reasons(e2e, retail_lake):
    reasons = e2e.rows(retail_lake, "SELECT reason, _stage, count(*) AS n FROM quarantine.retail "
                                    "GROUP BY ALL")
    assert reasons, "zero-price, non-return lines must be quarantined"
    assert {r["reason"] for r in reasons} <= {"non_positive_unit_price", "non_positive_quantity"}
    assert all(r["_stage"] == "silver" for r in reasons)
    entry = e2e.rows(retail_lake, "SELECT diverted FROM ops.ledger WHERE table_name = 'silver.sales'")[0]
    diverted = json.loads(entry["diverted"])
    assert {k: v for k, v in diverted.items() if k.startswith("quarantine:")} == {
        f"quarantine:{r['reason']}": r["n"] for r in reasons}


def test_retail_gold_reconciles_with_silver(e2e, retail_lake):
    (r,) = e2e.rows(retail_lake, """
        SELECT (SELECT sum(gross_revenue) FROM gold.daily_sales_by_country)  AS gold_gross,
               (SELECT sum(line_revenue) FROM silver.sales)                  AS silver_gross,
               (SELECT sum(returns_value) FROM gold.daily_sales_by_country)  AS gold_returns,
               (SELECT sum(line_revenue) FROM silver.returns)                AS silver_returns,
               (SELECT sum(count_sale_lines + count_return_lines)
                  FROM gold.daily_sales_by_country)                          AS gold_lines,
               (SELECT count(*) FROM silver.sales)
                 + (SELECT count(*) FROM silver.returns)                     AS silver_lines,
               (SELECT sum(units) FROM gold.product_sales)                   AS product_units,
               (SELECT sum(quantity) FROM silver.sales)                      AS silver_units
    """)
    assert r["gold_gross"] == pytest.approx(r["silver_gross"])
    assert r["gold_returns"] == pytest.approx(r["silver_returns"])
    assert r["gold_lines"] == r["silver_lines"]
    assert r["product_units"] == r["silver_units"]


def _average_rank_scores(values: list) -> list[int]:
    """Quintile scores 1-5 (5 = highest value): ties take the average of their places, score = ceil(5 x
    average place / n); exact fractions, so a boundary lands where it should."""
    order = sorted(values)
    first: dict = {}
    count: dict = {}
    for place, value in enumerate(order, start=1):
        first.setdefault(value, place)
        count[value] = count.get(value, 0) + 1
    n = len(values)
    scores = []
    for value in values:
        average = Fraction(2 * first[value] + count[value] - 1, 2)
        scores.append(math.ceil(5 * average / n))
    return scores


def _segment(r: int, fm: int) -> str:
    """The R x FM grid of docs/DATA_CONTRACT.md, written as its table."""
    grid = {5: ["New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"],
            4: ["Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"],
            3: ["About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"],
            2: ["Hibernating", "Hibernating", "At risk", "At risk", "Can't lose them"],
            1: ["Lost", "Lost", "At risk", "At risk", "Can't lose them"]}
    return grid[r][fm - 1]


def test_retail_rfm_segment_shares_match_an_independent_computation(e2e, retail_lake):
    """Standard RFM segments on the whole UCI file, recomputed here from silver.sales and silver.returns."""
    sales = e2e.rows(retail_lake, "SELECT customer_id, invoice_id, invoice_date, line_revenue FROM silver.sales "
                                  "WHERE customer_id IS NOT NULL")
    returns = e2e.rows(retail_lake, "SELECT customer_id, line_revenue FROM silver.returns "
                                    "WHERE customer_id IS NOT NULL")
    snapshot = max(r["invoice_date"] for r in e2e.rows(retail_lake, "SELECT invoice_date FROM silver.sales"))
    last: dict = {}
    invoices: dict = {}
    net: dict = {}
    for r in sales:
        c = r["customer_id"]
        last[c] = max(last.get(c, r["invoice_date"]), r["invoice_date"])
        invoices.setdefault(c, set()).add(r["invoice_id"])
        net[c] = net.get(c, 0.0) + r["line_revenue"]
    for r in returns:
        if r["customer_id"] in net:
            net[r["customer_id"]] += r["line_revenue"]
    customers = sorted(last)
    # recency: fewer days is better, so rank the negated days
    r_scores = _average_rank_scores([-((snapshot - last[c]).days + 1) for c in customers])
    f_scores = _average_rank_scores([len(invoices[c]) for c in customers])
    # net revenue summed in another order than the engine's: round away float noise before ranking
    m_scores = _average_rank_scores([round(net[c], 6) for c in customers])
    expected: dict[str, int] = {}
    for r, f, m in zip(r_scores, f_scores, m_scores, strict=True):
        name = _segment(r, math.ceil((f + m) / 2))
        expected[name] = expected.get(name, 0) + 1
    got = {row["rfm_segment"]: row["n"] for row in e2e.rows(
        retail_lake, "SELECT rfm_segment, count(*) AS n FROM gold.customer_rfm GROUP BY rfm_segment")}
    n = len(customers)
    assert sum(got.values()) == n == 4338
    assert {k: round(v / n, 4) for k, v in got.items()} == {k: round(v / n, 4) for k, v in expected.items()}
    assert got == expected
    assert set(got) == set(RFM_SEGMENTS)  # every named segment occurs on the real file


def test_retail_ledger_balances(e2e, retail_lake):
    _assert_ledger_balances(e2e, retail_lake)


# -- REES46 multi-category heads -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def rees46_lake(e2e, tmp_path_factory):
    oct_file, nov_file = e2e.real_file(*OCT_FILE), e2e.real_file(*NOV_FILE)
    lake = e2e.open_lake(tmp_path_factory.mktemp("rees46") / "lake")
    results = ingest_files(lake, "clickstream", [str(oct_file), str(nov_file)], run_id=new_run_id())
    assert [(r.status, r.rows_bronze) for r in results] == [("ingested", 17_434), ("ingested", 683)]
    _build_all(lake)
    return lake


def test_rees46_bronze_counts_per_file(e2e, rees46_lake):
    counts = {r["file"]: r["n"] for r in e2e.rows(
        rees46_lake, "SELECT regexp_extract(_source_file, '[^/]+$') AS file, count(*) AS n "
                     "FROM bronze.clickstream GROUP BY 1")}
    assert counts == {OCT_FILE[1]: 17_434, NOV_FILE[1]: 683}


def test_rees46_bronze_event_types_match_published(e2e, rees46_lake):
    by_file = {}
    for r in e2e.rows(rees46_lake, "SELECT regexp_extract(_source_file, '[^/]+$') AS file, event_type, "
                                   "count(*) AS n FROM bronze.clickstream GROUP BY ALL"):
        by_file.setdefault(r["file"], {})[r["event_type"]] = r["n"]
    assert by_file[OCT_FILE[1]] == {"view": 17_055, "purchase": 214, "cart": 165}
    assert by_file[NOV_FILE[1]] == {"view": 678, "cart": 3, "purchase": 2}
    (oct_,) = e2e.rows(rees46_lake, f"SELECT count(DISTINCT user_id) AS users, "
                                    f"count(DISTINCT user_session) AS s FROM bronze.clickstream "
                                    f"WHERE _source_file LIKE '%{OCT_FILE[1]}'")
    assert (oct_["users"], oct_["s"]) == (4_504, 5_066)


def test_rees46_silver_events_are_bronze_without_exact_duplicates(e2e, rees46_lake):
    bronze = {(str(r["d"]), r["event_type"]): r for r in e2e.rows(rees46_lake, f"""
        SELECT CAST(event_time AS DATE) AS d, event_type, count(*) AS n,
               count(DISTINCT ({CLICK_SOURCE_COLUMNS})) AS distinct_n
        FROM bronze.clickstream GROUP BY ALL""")}
    silver = {(str(r["d"]), r["event_type"]): r["n"] for r in e2e.rows(
        rees46_lake, "SELECT event_date AS d, event_type, count(*) AS n FROM silver.events GROUP BY ALL")}
    assert set(silver) == set(bronze)
    for key, b in bronze.items():
        assert silver[key] == b["distinct_n"], key
    # Published raw counts = silver counts + exact duplicates removed (of the same type).
    day = "2019-10-01"
    oct_counts = {t: silver[(day, t)] + bronze[(day, t)]["n"] - bronze[(day, t)]["distinct_n"]
                  for t in ("view", "purchase", "cart")}
    assert oct_counts == {"view": 17_055, "purchase": 214, "cart": 165}
    duplicates = sum(b["n"] - b["distinct_n"] for b in bronze.values())
    assert _duplicates(e2e, rees46_lake, "silver.events") == duplicates
    assert e2e.scalar(rees46_lake, "SELECT count(*) FROM quarantine.clickstream") == 0
    assert e2e.scalar(rees46_lake, "SELECT count(*) FROM silver.events") + duplicates == 17_434 + 683


def test_rees46_silver_events_columns_are_derived(e2e, rees46_lake):
    (r,) = e2e.rows(rees46_lake, """
        SELECT count(*) FILTER (WHERE event_date <> CAST(event_at AS DATE)
                                   OR event_hour <> hour(event_at)
                                   OR day_of_week <> isodow(event_at)) AS bad_time,
               count(*) FILTER (WHERE category_code IS NOT NULL
                                  AND category_l1 IS DISTINCT FROM split_part(category_code, '.', 1))
                                                                       AS bad_l1,
               count(*) FILTER (WHERE category_code IS NULL AND category_l1 IS NOT NULL) AS l1_without_code,
               count(*) FILTER (WHERE category_l3 IS NOT NULL) AS with_l3
        FROM silver.events
    """)
    assert r == {"bad_time": 0, "bad_l1": 0, "l1_without_code": 0, "with_l3": r["with_l3"]}
    assert r["with_l3"] > 0  # e.g. appliances.kitchen.washer


def test_rees46_daily_funnel_matches_silver_events(e2e, rees46_lake):
    expected = {str(r["event_date"]): r for r in e2e.rows(rees46_lake, """
        SELECT event_date,
               count(*) FILTER (WHERE event_type = 'view')             AS count_views,
               count(*) FILTER (WHERE event_type = 'cart')             AS count_carts,
               count(*) FILTER (WHERE event_type = 'remove_from_cart') AS count_remove_from_cart,
               count(*) FILTER (WHERE event_type = 'purchase')         AS count_purchases,
               count(DISTINCT user_id)                                 AS count_users,
               count(DISTINCT (user_id, session_id)) FILTER (WHERE session_id IS NOT NULL) AS count_sessions,
               count(DISTINCT (user_id, session_id))
                   FILTER (WHERE session_id IS NOT NULL AND event_type = 'purchase')
                                                                       AS count_purchasing_sessions,
               coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0) AS revenue
        FROM silver.events GROUP BY event_date""")}
    funnel = {str(r["event_date"]): r for r in e2e.rows(rees46_lake, "SELECT * FROM gold.daily_funnel")}
    assert set(funnel) == set(expected) == {"2019-10-01", "2019-11-01"}
    for day, want in expected.items():
        got = funnel[day]
        for column in ("count_views", "count_carts", "count_remove_from_cart", "count_purchases",
                       "count_users", "count_sessions", "count_purchasing_sessions"):
            assert got[column] == want[column], (day, column)
        assert got["revenue"] == pytest.approx(want["revenue"])
        assert got["view_to_cart_rate"] == pytest.approx(want["count_carts"] / want["count_views"])
        assert got["cart_to_purchase_rate"] == pytest.approx(want["count_purchases"] / want["count_carts"])
        assert got["view_to_purchase_rate"] == pytest.approx(want["count_purchases"] / want["count_views"])
        assert got["session_conversion_rate"] == pytest.approx(
            want["count_purchasing_sessions"] / want["count_sessions"])
    october = funnel["2019-10-01"]
    assert october["count_users"] == 4_504
    # A session is (user_id, session_id): one session string is reused by two users in this sample.
    assert october["count_sessions"] == 5_067
    assert october["count_remove_from_cart"] == 0
    assert october["cart_to_purchase_rate"] > 1  # an event ratio; purchases need no cart event
    assert e2e.scalar(rees46_lake, "SELECT sum(count_events) FROM gold.daily_funnel") == e2e.scalar(
        rees46_lake, "SELECT count(*) FROM silver.events")


def _wilson(x: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# Plain SQL over silver.events: each user's (session's) first view of 2019-10-01, then the earliest
# later cart and purchase within 7 days of that view, found by correlated subqueries.
FUNNEL_BY_HAND = {
    "view_cart_purchase": """
        WITH v AS (SELECT user_id, min(event_at) AS t1 FROM silver.events
                   WHERE event_type = 'view' AND event_date = DATE '2019-10-01' GROUP BY user_id),
        c AS (SELECT v.*, (SELECT min(e.event_at) FROM silver.events AS e WHERE e.user_id = v.user_id
                           AND e.event_type = 'cart' AND e.event_at >= v.t1
                           AND e.event_at <= v.t1 + INTERVAL 7 DAY) AS t2 FROM v),
        p AS (SELECT c.*, (SELECT min(e.event_at) FROM silver.events AS e WHERE e.user_id = c.user_id
                           AND e.event_type = 'purchase' AND e.event_at >= c.t2
                           AND e.event_at <= c.t1 + INTERVAL 7 DAY) AS t3 FROM c)
        SELECT count(*) AS n1, count(t2) AS n2, count(t3) AS n3,
               quantile_cont(epoch(t2) - epoch(t1), 0.5) AS median2,
               quantile_cont(epoch(t2) - epoch(t1), 0.9) AS p90_2,
               quantile_cont(epoch(t3) - epoch(t1), 0.5) AS median3,
               quantile_cont(epoch(t3) - epoch(t1), 0.9) AS p90_3
        FROM p""",
    # per session and product: a session converts when any product it viewed is bought after the view
    "product_view_to_purchase": """
        WITH v AS (SELECT user_id, session_id, product_id, min(event_at) AS t1 FROM silver.events
                   WHERE event_type = 'view' AND event_date = DATE '2019-10-01' AND session_id IS NOT NULL
                   GROUP BY ALL),
        p AS (SELECT v.*, (SELECT min(e.event_at) FROM silver.events AS e WHERE e.user_id = v.user_id
                           AND e.session_id = v.session_id AND e.product_id = v.product_id
                           AND e.event_type = 'purchase' AND e.event_at >= v.t1
                           AND e.event_at <= v.t1 + INTERVAL 7 DAY) AS t2 FROM v),
        s AS (SELECT user_id, session_id, min(epoch(t2) - epoch(t1)) AS seconds FROM p GROUP BY ALL)
        SELECT count(*) AS n1, count(seconds) AS n2, quantile_cont(seconds, 0.5) AS median2,
               quantile_cont(seconds, 0.9) AS p90_2
        FROM s""",
}


@pytest.mark.parametrize("funnel", sorted(FUNNEL_BY_HAND))
def test_rees46_funnel_of_2019_10_01_matches_plain_sql(e2e, rees46_lake, funnel):
    (hand,) = e2e.rows(rees46_lake, FUNNEL_BY_HAND[funnel])
    rows = e2e.rows(rees46_lake, f"SELECT * FROM gold.funnel_{funnel} WHERE grain = 'day' "
                                 f"AND breakdown = 'all' AND period_start = DATE '2019-10-01' ORDER BY step")
    counts = [hand[f"n{k}"] for k in range(1, len(rows) + 1)]
    assert [r["entrants"] for r in rows] == counts
    assert counts[0] > 4000 and counts[-1] > 50  # the comparison is not over empty sets
    for k in range(2, len(rows) + 1):
        row = rows[k - 1]
        assert row["conversion_rate"] == pytest.approx(counts[k - 1] / counts[k - 2])
        assert (row["conversion_low"], row["conversion_high"]) == pytest.approx(
            _wilson(counts[k - 1], counts[k - 2]))
        assert (row["overall_conversion_low"], row["overall_conversion_high"]) == pytest.approx(
            _wilson(counts[k - 1], counts[0]))
        assert row["median_seconds_to_step"] == pytest.approx(hand[f"median{k}"])
        assert row["p90_seconds_to_step"] == pytest.approx(hand[f"p90_{k}"])
    # every breakdown partitions nothing away: its step-1 entrants are at least the day's
    by_breakdown = e2e.rows(rees46_lake, f"SELECT breakdown, sum(entrants) AS n FROM gold.funnel_{funnel} "
                                         f"WHERE grain = 'day' AND period_start = DATE '2019-10-01' AND step = 1 "
                                         f"GROUP BY ALL")
    assert all(r["n"] >= counts[0] for r in by_breakdown)


def test_rees46_ledger_balances(e2e, rees46_lake):
    _assert_ledger_balances(e2e, rees46_lake)


# -- REES46 cosmetics, 42-school variant (events without category columns + products file) ------------

@pytest.fixture(scope="module")
def cosmetics_lake(e2e, tmp_path_factory):
    item = e2e.real_file(COSMETICS, "item.csv.gz")
    months = [e2e.real_file(COSMETICS, f"{m}.csv.gz") for m in COSMETICS_MONTHS]
    lake = e2e.open_lake(tmp_path_factory.mktemp("cosmetics") / "lake")
    products = ingest_files(lake, "products", [str(item)], run_id=new_run_id())
    assert [(r.status, r.rows_bronze) for r in products] == [("ingested", 109_579)]
    events = ingest_files(lake, "clickstream", [str(m) for m in months], run_id=new_run_id())
    assert [(r.status, r.rows_bronze, r.rows_quarantined) for r in events] == [("ingested", 999, 0)] * 5
    _build_all(lake)
    return lake


def test_cosmetics_bronze_counts(e2e, cosmetics_lake):
    (r,) = e2e.rows(cosmetics_lake, """
        SELECT (SELECT count(*) FROM bronze.products)                    AS products,
               (SELECT count(DISTINCT product_id) FROM bronze.products)  AS distinct_products,
               (SELECT count(*) FROM silver.products WHERE is_current)   AS current_products,
               (SELECT count(*) FROM bronze.clickstream)                 AS events,
               (SELECT count(*) FROM bronze.clickstream
                 WHERE category_id IS NOT NULL OR category_code IS NOT NULL
                    OR brand IS NOT NULL)                                AS with_catalog
    """)
    assert r == {"products": 109_579, "distinct_products": 54_043, "current_products": 54_043,
                 "events": 5 * 999, "with_catalog": 0}
    october = {x["event_type"]: x["n"] for x in e2e.rows(
        cosmetics_lake, "SELECT event_type, count(*) AS n FROM bronze.clickstream "
                        "WHERE _source_file LIKE '%data_2022_oct.csv.gz' GROUP BY 1")}
    assert october == {"view": 319, "cart": 287, "remove_from_cart": 252, "purchase": 141}


def test_cosmetics_events_take_category_and_brand_from_current_product(e2e, cosmetics_lake):
    (r,) = e2e.rows(cosmetics_lake, """
        SELECT count(*)                                                  AS events,
               count(p.product_id)                                       AS with_product,
               count(*) FILTER (WHERE e.category_id IS DISTINCT FROM p.category_id
                                   OR e.category_code IS DISTINCT FROM p.category_code
                                   OR e.brand IS DISTINCT FROM p.brand)  AS mismatches,
               count(e.brand)                                            AS with_brand,
               count(e.category_id)                                      AS with_category_id,
               count(*) FILTER (WHERE e.category_code IS NOT NULL
                                  AND e.category_l1 IS DISTINCT FROM split_part(e.category_code, '.', 1))
                                                                         AS bad_l1
        FROM silver.events AS e
        LEFT JOIN (SELECT * FROM silver.products WHERE is_current) AS p USING (product_id)
    """)
    assert r["with_product"] == r["events"]  # every event's product is in item.csv
    assert r["mismatches"] == 0
    assert r["with_brand"] > 0 and r["with_category_id"] > 0
    assert r["bad_l1"] == 0


def test_cosmetics_remove_from_cart_reaches_silver_and_gold(e2e, cosmetics_lake):
    silver = {x["event_type"]: x["n"] for x in e2e.rows(
        cosmetics_lake, "SELECT event_type, count(*) AS n FROM silver.events GROUP BY 1")}
    assert set(silver) == {"view", "cart", "remove_from_cart", "purchase"}
    assert silver["remove_from_cart"] > 0
    assert e2e.scalar(cosmetics_lake, "SELECT sum(count_remove_from_cart) FROM gold.daily_funnel") == \
        silver["remove_from_cart"]
    assert e2e.scalar(cosmetics_lake, "SELECT sum(count_remove_from_cart) FROM gold.user_features") == \
        silver["remove_from_cart"]


def test_cosmetics_malformed_session_row_is_accounted(e2e, cosmetics_lake):
    in_bronze = e2e.scalar(cosmetics_lake, f"SELECT count(*) FROM bronze.clickstream "
                                           f"WHERE user_session = '{MALFORMED_SESSION}'")
    in_silver = e2e.scalar(cosmetics_lake, f"SELECT count(*) FROM silver.events "
                                           f"WHERE session_id = '{MALFORMED_SESSION}'")
    quarantined = e2e.scalar(cosmetics_lake, f"SELECT count(*) FROM quarantine.clickstream "
                                             f"WHERE user_session = '{MALFORMED_SESSION}'")
    assert in_bronze == 1
    assert len(MALFORMED_SESSION) == 38
    # A 38-character session id is still a valid string: it is kept, not lost.
    assert (in_silver, quarantined) == (1, 0)


def test_cosmetics_every_event_is_accounted(e2e, cosmetics_lake):
    silver = e2e.scalar(cosmetics_lake, "SELECT count(*) FROM silver.events")
    quarantined = e2e.scalar(cosmetics_lake, "SELECT count(*) FROM quarantine.clickstream")
    duplicates = _duplicates(e2e, cosmetics_lake, "silver.events")
    distinct = e2e.scalar(cosmetics_lake, f"SELECT count(*) FROM (SELECT DISTINCT {CLICK_SOURCE_COLUMNS} "
                                          f"FROM bronze.clickstream) AS d")
    assert silver + quarantined + duplicates == 5 * 999
    assert duplicates == 5 * 999 - distinct
    _assert_ledger_balances(e2e, cosmetics_lake)
