"""One-proportion z-test and intervals against statsmodels."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint as sm_confint
from statsmodels.stats.proportion import proportions_ztest

from experiments.stats.proportion import Alternative, one_proportion_ztest, proportion_confint


@pytest.mark.parametrize(("successes", "n"), [(850, 1000), (412, 500), (81, 100), (7900, 10000)])
@pytest.mark.parametrize("alternative", ["larger", "smaller", "two-sided"])
def test_gate_ztest_matches_statsmodels(successes: int, n: int, alternative: Alternative) -> None:
    ours = one_proportion_ztest(successes, n, 0.80, alternative)
    z, p = proportions_ztest(successes, n, value=0.80, alternative=alternative)
    assert ours.statistic == pytest.approx(z, rel=1e-12)
    assert ours.p_value == pytest.approx(p, rel=1e-12)


def test_null_variance_matches_prop_var() -> None:
    ours = one_proportion_ztest(850, 1000, 0.80, "larger", null_variance=True)
    z, p = proportions_ztest(850, 1000, value=0.80, alternative="larger", prop_var=0.80)
    assert (ours.statistic, ours.p_value) == pytest.approx((z, p), rel=1e-12)


def test_gate_seed_000_numbers() -> None:
    # 830 of 1000 right against a target of 0.80: passes one-sided at alpha 0.05.
    result = one_proportion_ztest(830, 1000, 0.80)
    assert result.p_value < 0.05
    assert one_proportion_ztest(810, 1000, 0.80).p_value > 0.05


def test_zero_standard_error_is_an_error() -> None:
    with pytest.raises(ValueError, match="standard error is zero"):
        one_proportion_ztest(100, 100, 0.80)


@pytest.mark.parametrize("method", ["wilson", "normal"])
@pytest.mark.parametrize(("successes", "n"), [(91, 99), (0, 20), (20, 20), (8712, 9901), (3, 7)])
def test_confint_matches_statsmodels(method: Literal["wilson", "normal"], successes: int, n: int) -> None:
    lo, hi = proportion_confint(successes, n, 0.05, method)
    slo, shi = sm_confint(successes, n, alpha=0.05, method=method)
    assert (float(lo), float(hi)) == pytest.approx((slo, shi), abs=1e-12)


def test_confint_vectorises() -> None:
    lo, hi = proportion_confint(np.array([1, 50]), np.array([10, 100]), 0.1)
    assert lo.shape == hi.shape == (2,)
    assert np.all(lo < hi)
