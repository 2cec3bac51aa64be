"""RFM segments of retail customers: quintile scores (from `gold.customer_rfm`) plus K-means on log-RFM.

The clustering uses recency (days), frequency (invoices) and monetary value net of returns (floored
at 0), each log1p-transformed and standardised (`shoplake.ml.segmentation`). Segments are named from
their profiles *relative to each other*:

1. Champions: highest mean r_score + f_score + m_score;
2. Hibernating: longest mean recency;
3. every other segment by where it stands against the median segment: recent (mean recency at most the
   median of the segments' mean recencies) or not, frequent (mean frequency at least the median) or not:
   recent and frequent = Regular, recent but few invoices = New Customers (recent-but-few is not
   "Regular"), frequent but slipping = At-Risk, neither = Lapsing. A name taken twice gets a number.
"""

from __future__ import annotations

import pandas as pd

RFM_ACTIONS = {
    "Champions": "reward and retain: loyalty perks, early access, ask for reviews and referrals",
    "Regular": "grow the basket: cross-sell and bundles, nudge towards the next tier",
    "Hibernating": "low-cost win-back or let go; exclude from expensive campaigns",
    "At-Risk": "personal reactivation offer before they lapse; find out what changed",
    "New Customers": "onboarding and a second-purchase incentive",
    "Lapsing": "reactivation campaign with a reason to come back; then low-cost contact only",
}


def rfm_value(frame: pd.DataFrame) -> pd.Series:
    """What orders RFM segment ids: the summed quintile scores."""
    return frame["r_score"] + frame["f_score"] + frame["m_score"]


def name_rfm_segments(profile: pd.DataFrame) -> dict[int, str]:
    """Names per segment_id from a profile with recency_days, frequency and r/f/m_score means."""
    total = profile["r_score"] + profile["f_score"] + profile["m_score"]
    names: dict[int, str] = {int(total.idxmax()): "Champions"}  # idxmax: ties to the first (lower) id
    rest = profile.drop(index=list(names))
    if not rest.empty:
        names[int(rest["recency_days"].idxmax())] = "Hibernating"
    recent_cut, frequent_cut = profile["recency_days"].median(), profile["frequency"].median()
    for segment_id in profile.index:
        if int(segment_id) in names:
            continue
        row = profile.loc[segment_id]
        recent, frequent = row["recency_days"] <= recent_cut, row["frequency"] >= frequent_cut
        base = {(True, True): "Regular", (True, False): "New Customers", (False, True): "At-Risk",
                (False, False): "Lapsing"}[(bool(recent), bool(frequent))]
        taken = sum(1 for name in names.values() if name == base or name.startswith(base + " "))
        names[int(segment_id)] = base if taken == 0 else f"{base} {taken + 1}"
    return names
