"""Power and sample size against statsmodels' NormalIndPower."""

from __future__ import annotations

import pytest
from statsmodels.stats.power import NormalIndPower, normal_power
from statsmodels.stats.proportion import proportion_effectsize

from experiments.stats.power import (
    effect_size,
    effective_sample,
    mde_effect_size,
    needed_effective_sample,
    power,
    seconds_to_reach,
)


def test_effect_size_is_cohens_h() -> None:
    assert effect_size(0.85, 0.88) == pytest.approx(proportion_effectsize(0.85, 0.88), rel=1e-12)


def test_mde_effect_size_takes_the_harder_direction() -> None:
    h = mde_effect_size(0.88, 0.03)
    assert h == pytest.approx(abs(proportion_effectsize(0.85, 0.88)), rel=1e-12)
    assert h < abs(proportion_effectsize(0.91, 0.88))


@pytest.mark.parametrize(("n_model", "n_legacy"), [(99, 9901), (1000, 1000), (5000, 20000), (250, 750)])
def test_power_matches_normal_ind_power(n_model: int, n_legacy: int) -> None:
    h = proportion_effectsize(0.85, 0.88)
    theirs = NormalIndPower().power(h, nobs1=n_model, alpha=0.05, ratio=n_legacy / n_model)
    assert power(h, effective_sample(n_model, n_legacy), 0.05) == pytest.approx(theirs, rel=1e-10)
    assert power(h, effective_sample(n_model, n_legacy), 0.05) == pytest.approx(
        normal_power(h, effective_sample(n_model, n_legacy), 0.05), rel=1e-10
    )


@pytest.mark.parametrize("ratio", [1.0, 4.0, 99.0])
def test_sample_size_matches_solve_power(ratio: float) -> None:
    h = proportion_effectsize(0.85, 0.88)
    n1 = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=ratio)
    assert needed_effective_sample(h, 0.05, 0.8) * (1 + 1 / ratio) == pytest.approx(n1, rel=1e-6)


def test_seconds_to_reach() -> None:
    assert seconds_to_reach(1000, 400, 2.0) == pytest.approx(300)
    assert seconds_to_reach(1000, 1200, 2.0) == 0
    assert seconds_to_reach(1000, 400, 0.0) is None
