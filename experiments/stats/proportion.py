"""One proportion: the offline gate's one-sided z-test against a target, and its confidence interval."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri  # normal cdf and inverse; scipy.stats.norm is much slower per call
from typing_extensions import NamedTuple  # a generic NamedTuple needs Python 3.11 in typing

from experiments.stats._arrays import AnyArray, Floats

Alternative = Literal["larger", "smaller", "two-sided"]


#: float for one test, Floats for a vectorised one (`two_proportions.two_proportion_ztest` of arrays).
Value = TypeVar("Value", bound="Floats | float", covariant=True)


class ZTest(NamedTuple, Generic[Value]):
    """A z statistic and its p-value."""

    statistic: Value
    p_value: Value


@overload
def p_value_from_z(z: float, alternative: Alternative) -> float: ...
@overload
def p_value_from_z(z: AnyArray, alternative: Alternative) -> Floats: ...
def p_value_from_z(z: AnyArray | float, alternative: Alternative) -> Floats | float:
    """The p-value of a standard normal statistic for the given alternative hypothesis."""
    p: Floats | float  # scipy.special has no type information: its ufuncs return Any
    if alternative == "larger":
        p = ndtr(-z)
    elif alternative == "smaller":
        p = ndtr(z)
    elif alternative == "two-sided":
        p = 2 * ndtr(-np.abs(z))
    else:
        raise ValueError(f"alternative must be larger, smaller or two-sided, got {alternative!r}")
    return p


def one_proportion_ztest(
    successes: int, n: int, target: float, alternative: Alternative = "larger", *, null_variance: bool = False
) -> ZTest[float]:
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


@overload
def proportion_confint(
    successes: float, n: float, alpha: float = 0.05, method: Literal["wilson", "normal"] = "wilson"
) -> tuple[float, float]: ...
@overload
def proportion_confint(
    successes: AnyArray, n: ArrayLike, alpha: float = 0.05, method: Literal["wilson", "normal"] = "wilson"
) -> tuple[Floats, Floats]: ...
@overload
def proportion_confint(
    successes: ArrayLike, n: ArrayLike, alpha: float = 0.05, method: Literal["wilson", "normal"] = "wilson"
) -> tuple[Floats | float, Floats | float]: ...
def proportion_confint(
    successes: ArrayLike, n: ArrayLike, alpha: float = 0.05, method: Literal["wilson", "normal"] = "wilson"
) -> tuple[Floats | float, Floats | float]:
    """Two-sided (1 - alpha) interval of a proportion, as statsmodels' `proportion_confint`.

    Wilson's score interval is the default because it stays inside [0, 1] and keeps its coverage
    for small samples and rates near 0 or 1 (a 1% arm early in the experiment); `normal` is the
    Wald interval, clipped to [0, 1] like statsmodels does.
    """
    s = np.asarray(successes, dtype=float)
    trials = np.asarray(n, dtype=float)
    z = -ndtri(alpha / 2)
    p = s / trials
    if method == "normal":
        half = z * np.sqrt(p * (1 - p) / trials)
        return np.clip(p - half, 0, 1), np.clip(p + half, 0, 1)
    if method == "wilson":
        z2 = z * z
        centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
        half = z * np.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
        return centre - half, centre + half
    raise ValueError(f"method must be wilson or normal, got {method!r}")
