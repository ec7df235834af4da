"""Two proportions, model minus legacy: the pooled z-test and confidence intervals of the difference."""

from __future__ import annotations

from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtri  # inverse normal cdf; scipy.stats.norm is much slower per call

from experiments.stats._arrays import AnyArray, Floats
from experiments.stats.proportion import Alternative, ZTest, p_value_from_z, proportion_confint


@overload
def two_proportion_ztest(
    s1: float, n1: float, s2: float, n2: float, alternative: Alternative = "two-sided"
) -> ZTest[float]: ...
@overload
def two_proportion_ztest(
    s1: AnyArray, n1: ArrayLike, s2: ArrayLike, n2: ArrayLike, alternative: Alternative = "two-sided"
) -> ZTest[Floats]: ...
@overload
def two_proportion_ztest(
    s1: ArrayLike, n1: ArrayLike, s2: ArrayLike, n2: ArrayLike, alternative: Alternative = "two-sided"
) -> ZTest[Floats | float]: ...
def two_proportion_ztest(
    s1: ArrayLike, n1: ArrayLike, s2: ArrayLike, n2: ArrayLike, alternative: Alternative = "two-sided"
) -> ZTest[Floats | float]:
    """Fixed-horizon z-test of p1 - p2 = 0 with the pooled variance.

    Same numbers as statsmodels' `proportions_ztest([s1, s2], [n1, n2])`. Valid for one look
    only: the analyzer reports it for reference and decides with `sequential` instead.
    """
    a1, m1, a2, m2 = (np.asarray(x, dtype=float) for x in (s1, n1, s2, n2))
    pooled = (a1 + a2) / (m1 + m2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / m1 + 1 / m2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z: Floats = np.asarray((a1 / m1 - a2 / m2) / se)
    # [()] turns 0-d arrays into numpy floats (a float subclass) and leaves arrays alone.
    return ZTest(z[()], np.asarray(p_value_from_z(z, alternative))[()])


def difference_confint(
    s1: int, n1: int, s2: int, n2: int, alpha: float = 0.05, method: Literal["wald", "newcomb"] = "newcomb"
) -> tuple[float, float]:
    """Two-sided (1 - alpha) interval of p1 - p2, as statsmodels' `confint_proportions_2indep`.

    `newcomb` (statsmodels' default; Newcombe 1998, method 10) combines the two Wilson intervals
    and behaves well for small arms; `wald` is the textbook p1 - p2 +- z * se with unpooled
    variances, the same standard error the stratified and sequential estimators use.
    """
    p1, p2 = s1 / n1, s2 / n2
    if method == "wald":
        half = -ndtri(alpha / 2) * np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
        return float(p1 - p2 - half), float(p1 - p2 + half)
    if method == "newcomb":
        l1, u1 = proportion_confint(s1, n1, alpha, "wilson")
        l2, u2 = proportion_confint(s2, n2, alpha, "wilson")
        d = p1 - p2
        lower = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        upper = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
        return float(lower), float(upper)
    raise ValueError(f"method must be wald or newcomb, got {method!r}")
