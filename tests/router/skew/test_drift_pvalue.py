"""The drift job's chi-square p-value, computed without SciPy, agrees with SciPy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import chdtrc

from router.skew.drift import chi2_pvalue, chi2_sf


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 19, 20, 33, 50, 63, 100, 255])
def test_chi2_survival_matches_scipy_over_the_whole_range(df):
    xs = np.concatenate([[0.0, 1e-8, 1e-3], np.linspace(0.01, 4 * df + 50, 400), [df * 10.0 + 500, 2000.0]])
    for x in xs:
        ours, theirs = chi2_sf(df, float(x)), float(chdtrc(df, x))
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-15), (df, x)


def test_chi2_pvalue_is_scipys_contingency_test_without_correction():
    rng = np.random.default_rng(7)
    for k in (2, 5, 12, 40):
        expected = rng.integers(0, 500, size=k)
        actual = rng.integers(0, 500, size=k)
        table = np.vstack([expected, actual])
        table = table[:, table.sum(axis=0) > 0]
        reference = stats.chi2_contingency(table, correction=False).pvalue
        assert chi2_pvalue(expected, actual) == pytest.approx(reference, rel=1e-9, abs=1e-15)


def test_an_empty_side_or_a_single_bin_is_no_evidence():
    assert chi2_pvalue([10, 0], [0, 0]) == 1.0
    assert chi2_pvalue([10, 0, 0], [3, 0, 0]) == 1.0
