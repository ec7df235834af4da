"""Sample ratio mismatch against scipy.stats.chisquare."""

from __future__ import annotations

import pytest
from scipy.stats import chisquare

from experiments.stats.srm import sample_ratio_mismatch


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([9901, 99], [0.99, 0.01]), ([9850, 150], [0.99, 0.01]), ([50210, 49790], [0.5, 0.5]), ([8000, 2000], [0.8, 0.2])],
)
def test_matches_scipy(observed: list[int], weights: list[float]) -> None:
    ours = sample_ratio_mismatch(observed, weights)
    expected = [w * sum(observed) for w in weights]
    theirs = chisquare(observed, expected)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)


def test_clear_mismatch_is_below_growthbook_threshold() -> None:
    assert sample_ratio_mismatch([9850, 150], [0.99, 0.01]).p_value < 0.001
    assert sample_ratio_mismatch([9901, 99], [0.99, 0.01]).p_value > 0.5


def test_zero_expected_cells() -> None:
    assert sample_ratio_mismatch([100, 5], [1.0, 0.0]).p_value == 0.0
    assert sample_ratio_mismatch([100, 0], [1.0, 0.0]).p_value == 1.0


def test_needs_data() -> None:
    with pytest.raises(ValueError, match="needs exposures"):
        sample_ratio_mismatch([0, 0], [0.5, 0.5])
