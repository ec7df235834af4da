"""Guardrail rates: is a model-arm error or fallback rate above its configured limit?

A rate from a handful of requests is noise (1 error in 3 requests is 33%), and a rollback on
noise wastes the experiment; a rate from thousands must not hide behind a small excess either.
So a rate counts as breached when the one-sided (1 - alpha) Wilson lower bound of the rate is
above the limit: the rate is above the limit beyond reasonable doubt, at any sample size. This
errs on the side of safety for repeated looks in a way that matters little here: a false breach
costs a rollback, never a bad launch.
"""

from __future__ import annotations

from typing import NamedTuple

from experiments.stats.proportion import proportion_confint


class RateCheck(NamedTuple):
    """Observed rate, its one-sided lower bound, and whether that bound is above the limit."""

    rate: float
    lower: float
    breached: bool


def rate_above_limit(count: int, n: int, limit: float, alpha: float) -> RateCheck:
    """Check `count / n` against `limit` with a one-sided Wilson lower bound at level `alpha`."""
    if n <= 0:
        raise ValueError("a rate needs at least one request")
    # A two-sided interval at 2 * alpha has a one-sided lower bound at alpha.
    lower, _ = proportion_confint(count, n, 2 * alpha, "wilson")
    return RateCheck(count / n, float(lower), bool(lower > limit))
