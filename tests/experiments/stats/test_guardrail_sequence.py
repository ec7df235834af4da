"""Anytime-valid guardrail: the mixture pinned to numerical integration with scipy.stats; A/A exactly
at the limit over many looks within alpha; an arm whose requests all fail breaches at once."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import ArrayLike
from scipy.integrate import quad
from scipy.stats import beta, binom

from experiments.stats.guardrail_sequence import guardrail_sequence, log_e_value
from experiments.stats.proportion import proportion_confint

ALPHA, LIMIT = 0.05, 0.05


def mc(runs: ArrayLike) -> str:
    x = np.asarray(runs)
    return f"{x.mean():.4f} +- {np.sqrt(x.mean() * (1 - x.mean()) / len(x)):.4f} (n={len(x)})"


@pytest.mark.parametrize(("k", "n", "limit"), [(0, 10, 0.05), (3, 20, 0.05), (60, 1000, 0.05), (12, 100, 0.2), (5, 5, 0.01)])
def test_closed_form_is_the_truncated_beta_mixture_of_likelihood_ratios(k: int, n: int, limit: float) -> None:
    a, b = 1.0, (1 - limit) / limit

    def integrand(p: float) -> float:
        return binom.pmf(k, n, p) / binom.pmf(k, n, limit) * beta.pdf(p, a, b) / beta.sf(limit, a, b)

    numeric, _ = quad(integrand, limit, 1, points=[min(max(k / n, limit + 1e-9), 1 - 1e-9)], limit=200)
    assert np.exp(log_e_value(k, n, limit)) == pytest.approx(numeric, rel=1e-7)


def test_no_requests_no_evidence_and_bad_counts() -> None:
    assert log_e_value(0, 0, LIMIT) == 0.0
    with pytest.raises(ValueError, match="between 0"):
        log_e_value(5, 3, LIMIT)
    with pytest.raises(ValueError, match="strictly between"):
        log_e_value(0, 3, 0.0)


def test_an_arm_whose_requests_all_fail_breaches_after_four_requests() -> None:
    n = np.arange(1, 11)
    seq = guardrail_sequence(n, n, LIMIT, ALPHA)
    assert seq.breached.tolist() == [False] * 3 + [True] * 7
    # At the strict alpha / 5 (one test per stage of a five-stage ramp), after five.
    assert int(np.argmax(guardrail_sequence(n, n, LIMIT, ALPHA / 5).breached)) + 1 == 5


def simulate(rates: np.ndarray, rng: np.random.Generator, runs: int, per_look: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (errors, requests) over looks with per-look error rate `rates`."""
    errors = np.cumsum(rng.binomial(per_look, rates, (runs, len(rates))), axis=1)
    return errors, np.broadcast_to(per_look * np.arange(1, len(rates) + 1), errors.shape)


def test_aa_exactly_at_the_limit_over_300_looks_breaches_in_at_most_alpha() -> None:
    rng = np.random.default_rng(31)
    errors, n = simulate(np.full(300, LIMIT), rng, 2000, 50)  # 15,000 model-arm requests
    ours = np.asarray(guardrail_sequence(errors, n, LIMIT, ALPHA).breached.any(-1))  # one per run
    lower, _ = proportion_confint(errors, n, 2 * ALPHA, "wilson")
    fixed = (lower > LIMIT).any(-1)  # the one-sided Wilson test re-run at every look
    assert ours.mean() <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(ours)), f"sequential: {mc(ours)}"
    assert fixed.mean() > 3 * ALPHA, f"fixed Wilson re-run at every look: {mc(fixed)}"


def test_a_rate_that_varies_below_the_limit_keeps_alpha() -> None:
    rng = np.random.default_rng(32)
    rates = np.concatenate([np.full(100, 0.02), np.full(200, LIMIT)])
    errors, n = simulate(rates, rng, 2000, 50)
    x = np.asarray(guardrail_sequence(errors, n, LIMIT, ALPHA).breached.any(-1))
    assert x.mean() <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(x)), mc(x)


@pytest.mark.parametrize(("rate", "requests"), [(0.10, 1000), (0.30, 100), (0.08, 4000)])
def test_a_real_excess_breaches(rate: float, requests: int) -> None:
    rng = np.random.default_rng(int(rate * 1000))
    per_look = 25
    errors, n = simulate(np.full(requests // per_look, rate), rng, 2000, per_look)
    x = guardrail_sequence(errors, n, LIMIT, ALPHA).breached[:, -1]
    assert x.mean() >= 0.9, f"error rate {rate} breached within {requests} requests in {mc(x)}"
