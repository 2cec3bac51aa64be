"""RFM segments of retail customers: quintile scores (from `gold.customer_rfm`) plus K-means on log-RFM.

The clustering uses recency (days), frequency (invoices) and monetary value net of returns (floored
at 0), each log1p-transformed and standardised (`shoplake.ml.segmentation`). Segments are named from
their profiles by rules applied in order, each naming one segment:

1. Champions: highest mean r_score + f_score + m_score;
2. Hibernating: longest mean recency;
3. (k >= 4) At-Risk: the longest mean recency among the rest (they used to buy, they are slipping);
4. Regular: highest mean frequency among the rest;
5. (k >= 5) New Customers: shortest mean recency among the rest, then Promising, then "Segment <id>".
"""

from __future__ import annotations

import pandas as pd

from shoplake.ml.segmentation import assign_names

RFM_ACTIONS = {
    "Champions": "reward and retain: loyalty perks, early access, ask for reviews and referrals",
    "Regular": "grow the basket: cross-sell and bundles, nudge towards the next tier",
    "Hibernating": "low-cost win-back or let go; exclude from expensive campaigns",
    "At-Risk": "personal reactivation offer before they lapse; find out what changed",
    "New Customers": "onboarding and a second-purchase incentive",
    "Promising": "recommendations based on the first orders, membership offer",
}


def rfm_value(frame: pd.DataFrame) -> pd.Series:
    """What orders RFM segment ids: the summed quintile scores."""
    return frame["r_score"] + frame["f_score"] + frame["m_score"]


def name_rfm_segments(profile: pd.DataFrame) -> dict[int, str]:
    """Names per segment_id from a profile with recency_days, frequency and r/f/m_score means."""
    k = len(profile)
    profile = profile.assign(rfm_total=profile["r_score"] + profile["f_score"] + profile["m_score"])
    rules: list[tuple[str, str, str]] = [("Champions", "rfm_total", "max"), ("Hibernating", "recency_days", "max")]
    if k >= 4:
        rules.append(("At-Risk", "recency_days", "max"))
    rules.append(("Regular", "frequency", "max"))
    extra = [("New Customers", "recency_days", "min"), ("Promising", "rfm_total", "max")]
    return assign_names(profile, rules, extra, k)
