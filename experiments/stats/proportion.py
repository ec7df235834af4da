"""One proportion: the offline gate's one-sided z-test against a target, and its confidence interval."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
from scipy.special import ndtr, ndtri  # normal cdf and inverse; scipy.stats.norm is much slower per call

Alternative = Literal["larger", "smaller", "two-sided"]


class ZTest(NamedTuple):
    """A z statistic and its p-value."""

    statistic: float
    p_value: float


def p_value_from_z(z: np.ndarray | float, alternative: Alternative) -> np.ndarray | float:
    """The p-value of a standard normal statistic for the given alternative hypothesis."""
    if alternative == "larger":
        return ndtr(-z)
    if alternative == "smaller":
        return ndtr(z)
    if alternative == "two-sided":
        return 2 * ndtr(-np.abs(z))
    raise ValueError(f"alternative must be larger, smaller or two-sided, got {alternative!r}")


def one_proportion_ztest(
    successes: int, n: int, target: float, alternative: Alternative = "larger", *, null_variance: bool = False
) -> ZTest:
    """z-test of a proportion against `target`; the gate asks whether accuracy is larger than the target.

    By default the standard error uses the observed proportion, exactly as statsmodels'
    `proportions_ztest(successes, n, value=target)`; `null_variance=True` uses the target's
    variance instead (the score test, `prop_var=target` in statsmodels), which holds its level
    better when the observed proportion is near 0 or 1.
    """
    if n <= 0:
        raise ValueError("a proportion test needs at least one observation")
    p = successes / n
    p_var = target if null_variance else p
    se = np.sqrt(p_var * (1 - p_var) / n)
    if se == 0:
        raise ValueError(f"the standard error is zero ({successes}/{n}); use null_variance=True")
    z = (p - target) / se
    return ZTest(float(z), float(p_value_from_z(z, alternative)))


def proportion_confint(
    successes: np.ndarray | int, n: np.ndarray | int, alpha: float = 0.05, method: Literal["wilson", "normal"] = "wilson"
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided (1 - alpha) interval of a proportion, as statsmodels' `proportion_confint`.

    Wilson's score interval is the default because it stays inside [0, 1] and keeps its coverage
    for small samples and rates near 0 or 1 (a 1% arm early in the experiment); `normal` is the
    Wald interval, clipped to [0, 1] like statsmodels does.
    """
    s = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = -ndtri(alpha / 2)
    p = s / n
    if method == "normal":
        half = z * np.sqrt(p * (1 - p) / n)
        return np.clip(p - half, 0, 1), np.clip(p + half, 0, 1)
    if method == "wilson":
        z2 = z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return centre - half, centre + half
    raise ValueError(f"method must be wilson or normal, got {method!r}")
