"""Power at the minimum detectable effect, the sample it needs, and the time to collect it.

Effect sizes are Cohen's h (arcsine transform), the convention of statsmodels'
`proportion_effectsize` and `NormalIndPower`, whose numbers these functions reproduce. Unequal
arms enter through the effective sample n_eff = n1 * n2 / (n1 + n2), the sample per arm of a
balanced design with the same precision; statsmodels' `NormalIndPower().power(h, nobs1=n1,
ratio=n2 / n1)` is `normal_power(h, n_eff)`. This is fixed-horizon power; the sequential test
needs more information for the same power (`sequential.needed_information`).
"""

from __future__ import annotations

from typing import overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri  # normal cdf and inverse; scipy.stats.norm is much slower per call

from experiments.stats._arrays import AnyArray, Floats


@overload
def effect_size(p1: float, p2: float) -> float: ...
@overload
def effect_size(p1: AnyArray, p2: ArrayLike) -> Floats: ...
@overload
def effect_size(p1: ArrayLike, p2: ArrayLike) -> Floats | float: ...
def effect_size(p1: ArrayLike, p2: ArrayLike) -> Floats | float:
    """Cohen's h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p2)), as statsmodels' `proportion_effectsize`."""
    h: Floats | float = 2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p2))  # numpy's ufuncs return Any
    return h


def mde_effect_size(base_rate: float, mde: float) -> float:
    """|h| of an absolute change of `mde` around `base_rate`, the smaller of the two directions.

    The arcsine scale is not symmetric, so a drop and a rise of the same size have different h;
    taking the smaller one plans for the harder of the two to detect.
    """
    sizes = [abs(effect_size(min(max(base_rate + sign * mde, 0.0), 1.0), base_rate)) for sign in (-1, 1)]
    return float(min(s for s in sizes if s > 0) if any(sizes) else 0.0)


@overload
def effective_sample(n1: float, n2: float) -> float: ...
@overload
def effective_sample(n1: AnyArray, n2: ArrayLike) -> Floats: ...
@overload
def effective_sample(n1: ArrayLike, n2: ArrayLike) -> Floats | float: ...
def effective_sample(n1: ArrayLike, n2: ArrayLike) -> Floats | float:
    """n1 * n2 / (n1 + n2): the per-arm size of a balanced design with the same precision."""
    a, b = np.asarray(n1, dtype=float), np.asarray(n2, dtype=float)
    total = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, a * b / np.where(total > 0, total, 1), 0.0)[()]


def power(h: float, n_eff: float, alpha: float) -> float:
    """Power of the two-sided z-test at effect size `h` with effective sample `n_eff`.

    Equals statsmodels' `normal_power(h, n_eff, alpha)`, both tails included.
    """
    crit = -ndtri(alpha / 2)
    shift = abs(h) * np.sqrt(n_eff)
    return float(ndtr(shift - crit) + ndtr(-crit - shift))


def needed_effective_sample(h: float, alpha: float, target_power: float) -> float:
    """The n_eff at which `power` reaches `target_power` (solved exactly, like statsmodels).

    For arms of sizes n1 and n2 = ratio * n1, n1 = n_eff * (1 + 1 / ratio); that is what
    `NormalIndPower().solve_power(h, alpha=alpha, power=target_power, ratio=ratio)` returns.
    """
    if h == 0:
        return float("inf")
    approx = ((-ndtri(alpha / 2) + ndtri(target_power)) / abs(h)) ** 2
    return float(brentq(lambda n: power(h, n, alpha) - target_power, approx / 2, approx * 2, xtol=1e-10, rtol=1e-12))


def seconds_to_reach(needed: float, have: float, per_second: float) -> float | None:
    """Seconds until `needed` units at `per_second`; 0 if already there, None if the rate is unknown."""
    if have >= needed:
        return 0.0
    if not np.isfinite(needed) or per_second <= 0:
        return None
    return float((needed - have) / per_second)
