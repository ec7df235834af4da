"""Mantel-Haenszel difference: one stratum is the Wald difference; many strata beat Simpson's paradox."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import confint_proportions_2indep

from experiments.stats.stratified import stratified_difference


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), [(91, 99, 8712, 9901), (0, 1, 90, 99), (400, 500, 7000, 8000)])
def test_one_stratum_is_the_raw_difference_with_agresti_caffo_variance(s1: int, n1: int, s2: int, n2: int) -> None:
    est = stratified_difference([s1], [n1], [s2], [n2], min_expected=0)
    assert est.difference == pytest.approx(s1 / n1 - s2 / n2, abs=1e-12)
    lo, hi = confint_proportions_2indep(s1, n1, s2, n2, method="agresti-caffo")
    assert norm.isf(0.025) * np.sqrt(est.variance) == pytest.approx((hi - lo) / 2, rel=1e-10)
    assert est.effective_sample == pytest.approx(n1 * n2 / (n1 + n2))


def test_no_variance_until_each_arm_expects_five_successes_and_failures() -> None:
    # Pooled failure rate 10%: 40 model-arm units expect 4 failures (too few), 60 expect 6.
    assert np.isnan(stratified_difference([36], [40], [900], [1000]).variance)
    assert np.isfinite(stratified_difference([54], [60], [900], [1000]).variance)
    # A model failing everything is judged once its arm is large enough, not held back by its own zero.
    assert np.isfinite(stratified_difference([0], [60], [900], [1000]).variance)


def test_strata_without_both_arms_are_ignored() -> None:
    with_empty = stratified_difference([91, 0, 500], [99, 0, 600], [8712, 10, 0], [9901, 12, 0])
    alone = stratified_difference([91], [99], [8712], [9901])
    assert with_empty == pytest.approx(alone)
    none = stratified_difference([5], [10], [0], [0])
    assert np.isnan(none.difference) and none.effective_sample == 0


def simulate(effect: float, runs: int, rng: np.random.Generator):
    """Ramp 1/5/20/50% while the base rate climbs from 0.70 to 0.90: late traffic succeeds more."""
    model_share = np.array([0.01, 0.05, 0.20, 0.50])
    base = np.array([0.70, 0.76, 0.83, 0.90])
    units = 20_000
    nm = rng.binomial(units, model_share, size=(runs, 4))
    nl = units - nm
    sm = rng.binomial(nm, np.clip(base + effect, 0, 1))
    sl = rng.binomial(nl, base)
    naive = sm.sum(-1) / nm.sum(-1) - sl.sum(-1) / nl.sum(-1)
    return naive, stratified_difference(sm, nm, sl, nl)


@pytest.mark.parametrize("effect", [0.0, -0.03, 0.02])
def test_simpson_naive_pooling_is_biased_and_stratified_is_not(effect: float) -> None:
    rng = np.random.default_rng(4)
    naive, strat = simulate(effect, 2000, rng)
    se_naive = naive.std() / np.sqrt(len(naive))
    se_strat = strat.difference.std() / np.sqrt(len(naive))
    # Pooling credits the model with the drift (~ +0.07): dozens of standard errors off.
    assert naive.mean() - effect > 0.05
    assert abs(naive.mean() - effect) > 20 * se_naive
    # Stratified: unbiased within Monte Carlo error.
    assert abs(strat.difference.mean() - effect) < 4 * se_strat
    # And its variance is honest: the z scores around the truth have unit spread.
    z = (strat.difference - effect) / np.sqrt(strat.variance)
    assert z.std() == pytest.approx(1.0, abs=0.06)
