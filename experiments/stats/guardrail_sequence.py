"""Anytime-valid guardrail: is a model-arm error or fallback rate above its limit? (beta-binomial mixture martingale).

Why: `guardrails.rate_above_limit` is a fixed one-sided Wilson test; re-run at every look it
rolls back a model whose error rate is exactly at `max_error_rate` in 62% of A/A experiments
(measured by simulation). Here H0 is "every request errs with probability <= limit". For any p' > limit the
likelihood ratio prod (p'/limit)^x ((1 - p')/(1 - limit))^(1 - x) has expectation <= 1 per request
under H0, so a mixture over p' > limit is a nonnegative supermartingale, and by Ville's inequality
it ever reaches 1/alpha with probability <= alpha, however many looks (Robbins 1970's mixture
method; the beta-binomial form is that of Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021, and of Waudby-
Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS B 2024, which
shows such mixtures are near-optimal for Bernoulli means). With a Beta(a, b) prior truncated to
(limit, 1), after k errors in n requests

    M = B(a + k, b + n - k) / B(a, b) * P(Beta(a + k, b + n - k) > limit) / P(Beta(a, b) > limit)
        / (limit^k (1 - limit)^(n - k)).

The default prior, a = 1 and b = (1 - limit) / limit (mean = limit, "one error's worth"), puts
its mass just above the limit, where excesses are hard to see, and still lets an arm whose every
request fails breach after 4 requests at a 5% limit (M = 48 > 1/0.05). The statistic is also
valid when the true rate changes over time below the limit (stages at different traffic).
"""

from __future__ import annotations

from typing import NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaincc, betaln

from experiments.stats._arrays import AnyArray, Bools, Floats


def _prior(limit: float, prior_a: float | None, prior_b: float | None) -> tuple[float, float]:
    if not 0 < limit < 1:
        raise ValueError(f"a rate limit must be strictly between 0 and 1, got {limit!r}")
    return (1.0 if prior_a is None else prior_a), ((1 - limit) / limit if prior_b is None else prior_b)


@overload
def log_e_value(
    count: float, n: float, limit: float, prior_a: float | None = None, prior_b: float | None = None
) -> float: ...
@overload
def log_e_value(
    count: AnyArray, n: ArrayLike, limit: float, prior_a: float | None = None, prior_b: float | None = None
) -> Floats: ...
@overload
def log_e_value(
    count: ArrayLike, n: ArrayLike, limit: float, prior_a: float | None = None, prior_b: float | None = None
) -> Floats | float: ...
def log_e_value(
    count: ArrayLike, n: ArrayLike, limit: float, prior_a: float | None = None, prior_b: float | None = None
) -> Floats | float:
    """log M: the mixture martingale of H0 "rate <= limit" after `count` events in `n` requests."""
    a, b = _prior(limit, prior_a, prior_b)
    k, m = np.asarray(count, dtype=float), np.asarray(n, dtype=float)
    if np.any(k < 0) or np.any(k > m):
        raise ValueError("counts must lie between 0 and the number of requests")
    with np.errstate(divide="ignore"):
        tail = np.log(betaincc(a + k, b + m - k, limit)) - np.log(betaincc(a, b, limit))
    log_marginal = betaln(a + k, b + m - k) - betaln(a, b) + tail
    log_m: Floats = log_marginal - k * np.log(limit) - (m - k) * np.log1p(-limit)  # scipy.special is untyped
    return log_m[()]


class GuardrailSequence(NamedTuple):
    """Per look (last axis): observed rate, running max of log M, always-valid p-value, breach."""

    rate: Floats
    log_e_value: Floats
    p_value: Floats
    breached: Bools


def guardrail_sequence(
    counts: ArrayLike, ns: ArrayLike, limit: float, alpha: float, prior_a: float | None = None,
    prior_b: float | None = None,
) -> GuardrailSequence:
    """Anytime-valid test of "rate above `limit`" over looks of cumulative counts (last axis).

    Breached from the first look at which M >= 1/alpha, and breached from then on (the running
    maximum of M is what Ville's inequality bounds). The analyzer restarts the count at each
    stage; to keep the whole experiment at alpha it passes alpha / (number of stages), or keeps
    one sequence over all model-arm requests (valid, since H0 allows the rate to vary below the
    limit). A look without requests adds nothing (M = 1).
    """
    k, m = np.asarray(counts, dtype=float), np.asarray(ns, dtype=float)
    log_m = np.maximum.accumulate(np.asarray(log_e_value(k, m, limit, prior_a, prior_b), dtype=float), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(m > 0, k / np.where(m > 0, m, 1), np.nan)
    return GuardrailSequence(rate, log_m, np.minimum(1.0, np.exp(-log_m)), log_m >= np.log(1 / alpha))
