"""Two-proportion z-test and intervals of the difference against statsmodels."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.stats.proportion import Alternative
from experiments.stats.two_proportions import difference_confint, two_proportion_ztest

CASES = [(91, 99, 8712, 9901), (450, 500, 44000, 50000), (30, 40, 25, 40), (880, 1000, 9000, 10000)]


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), CASES)
@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_ztest_matches_statsmodels(s1: int, n1: int, s2: int, n2: int, alternative: Alternative) -> None:
    ours = two_proportion_ztest(s1, n1, s2, n2, alternative)
    z, p = proportions_ztest([s1, s2], [n1, n2], alternative=alternative)
    assert float(ours.statistic) == pytest.approx(z, rel=1e-12)
    assert float(ours.p_value) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize(("s1", "n1", "s2", "n2"), CASES)
@pytest.mark.parametrize("method", ["wald", "newcomb"])
def test_difference_confint_matches_statsmodels(
    s1: int, n1: int, s2: int, n2: int, method: Literal["wald", "newcomb"]
) -> None:
    ours = difference_confint(s1, n1, s2, n2, 0.05, method)
    theirs = confint_proportions_2indep(s1, n1, s2, n2, method=method, compare="diff", alpha=0.05)
    assert ours == pytest.approx(tuple(theirs), abs=1e-12)


def test_ztest_vectorises_for_simulations() -> None:
    z, p = two_proportion_ztest(np.array([10, 20]), np.array([100, 100]), np.array([10, 10]), np.array([100, 100]))
    assert z.shape == (2,)
    assert z[0] == 0 and p[0] == pytest.approx(1.0)
