"""The legacy system's recipe: the hand-written churn rule the model has to beat.

The retention team's rule of thumb, in use before any model: a customer is at risk after four or
more calls to customer service (the strongest single signal in this data), or when their daytime
usage is very high (their bill is high), or when they pay for an international plan and still use
many international minutes (they are price sensitive there). It is a sensible rule, not a straw
man: about 88% accurate on this data, against 86% for always predicting "no churn".

A missing number (NaN) meets no threshold (every comparison with NaN is false): the rule flags
the customer only on the signals it has, as the retention team did with an unknown value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVICE_CALLS_AT_RISK = 4
DAY_MINUTES_AT_RISK = 265.0
INTL_MINUTES_AT_RISK = 13.0

REQUIRED = {
    "number_customer_service_calls": (int, float),
    "total_day_minutes": (int, float),
    "international_plan": (str,),
    "total_intl_minutes": (int, float),
}


def reasons(features: Mapping[str, Any]) -> list[str]:
    """Why the rule flags this customer (an empty list means: not at risk)."""
    found = []
    if features["number_customer_service_calls"] >= SERVICE_CALLS_AT_RISK:
        found.append(f"{features['number_customer_service_calls']:g} customer service calls (>= {SERVICE_CALLS_AT_RISK})")
    if features["total_day_minutes"] > DAY_MINUTES_AT_RISK:
        found.append(f"{features['total_day_minutes']:g} day minutes (> {DAY_MINUTES_AT_RISK:g})")
    if features["international_plan"] == "yes" and features["total_intl_minutes"] > INTL_MINUTES_AT_RISK:
        found.append(f"international plan with {features['total_intl_minutes']:g} intl minutes (> {INTL_MINUTES_AT_RISK:g})")
    return found


def predict(features: Mapping[str, Any]) -> dict[str, Any]:
    """The rule's answer for one customer: churn flag, a 0/1 probability, and its reasons.

    `features` holds JSON values; the legacy app checks them against REQUIRED before calling.
    """
    why = reasons(features)
    return {"churn": bool(why), "probability": 1.0 if why else 0.0, "reasons": why}
