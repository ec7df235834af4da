"""One-sided mixture SPRT (half-normal mixture) for non-inferiority and for harm, tuned to the margin.

Why: `ship` needs "model - legacy > -margin" (non-inferiority); an early stage only needs "no
significant harm". Reading both off one two-sided sequence tuned to the MDE spends alpha on a
side that is not asked and centres the mixture on effects of the wrong size, so the A/A ramp
waited at 1% for most of the experiment. A one-sided test of H0: theta <=
theta0 against H1: theta > theta0 mixes the likelihood ratios of H1's alternatives only, with a
half-normal N+(theta0, tau^2) mixing density. With estimate d, variance V and x = d - theta0,

    Lambda = 2 * Phi(x tau / sqrt(V (V + tau^2))) * sqrt(V / (V + tau^2)) * exp(tau^2 x^2 / (2 V (V + tau^2))),

the two-sided normal mixture (`sequential`) times 2 Phi(.) (closed form checked against numerical
integration in the tests). Each likelihood ratio with theta > theta0 is a nonnegative
supermartingale under any theta <= theta0, so is the mixture, and by Ville's inequality it
exceeds 1/alpha with probability at most alpha however often one looks (Robbins 1970; Howard,
Ramdas, McAuliffe & Sekhon, Annals of Statistics 2021; Johari et al., Operations Research 2022).
Lambda increases in x, so the rejected theta0 form a half-line and the lower confidence bound is
d - z_one(V) sqrt(V). `tuned_tau2` chooses tau so the boundary is tightest at the information
the fixed-horizon one-sided test would need for the margin (Howard et al. 2021, section 3.5).
"""

from __future__ import annotations

from typing import Literal, NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import log_ndtr, ndtri

from experiments.stats._arrays import AnyArray, Floats
from experiments.stats.sequential import boundary_z

Side = Literal["greater", "less"]


@overload
def log_likelihood_ratio(
    difference: float, variance: float, tau2: float, theta0: float = 0.0, side: Side = "greater"
) -> float: ...
@overload
def log_likelihood_ratio(
    difference: AnyArray, variance: ArrayLike, tau2: float, theta0: float = 0.0, side: Side = "greater"
) -> Floats: ...
@overload
def log_likelihood_ratio(
    difference: ArrayLike, variance: ArrayLike, tau2: float, theta0: float = 0.0, side: Side = "greater"
) -> Floats | float: ...
def log_likelihood_ratio(
    difference: ArrayLike, variance: ArrayLike, tau2: float, theta0: float = 0.0, side: Side = "greater"
) -> Floats | float:
    """log Lambda of H1: theta > theta0 ("greater") or theta < theta0 ("less"); 0 without information."""
    d, v = np.asarray(difference, dtype=float), np.asarray(variance, dtype=float)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(d)
    safe_v, safe_d = np.where(ok, v, 1.0), np.where(ok, d, theta0)
    x = safe_d - theta0 if side == "greater" else theta0 - safe_d
    two = 0.5 * np.log(safe_v / (safe_v + tau2)) + tau2 * x * x / (2 * safe_v * (safe_v + tau2))
    llr = np.log(2.0) + log_ndtr(x * np.sqrt(tau2 / (safe_v * (safe_v + tau2)))) + two
    return np.where(ok, llr, 0.0)[()]


@overload
def boundary_z_one_sided(variance: float, tau2: float, alpha: float) -> float: ...
@overload
def boundary_z_one_sided(variance: AnyArray, tau2: float, alpha: float) -> Floats: ...
@overload
def boundary_z_one_sided(variance: ArrayLike, tau2: float, alpha: float) -> Floats | float: ...
def boundary_z_one_sided(variance: ArrayLike, tau2: float, alpha: float) -> Floats | float:
    """The z = x / sqrt(V) at which the one-sided Lambda reaches 1/alpha; inf without information.

    Lambda is increasing in x, and 1 <= 2 Phi(.) <= 2 for x >= 0, so the root lies between the
    two-sided boundaries at 2 alpha and at alpha; 60 vectorised bisection steps find it to 1e-15.
    """
    v = np.asarray(variance, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    safe = np.where(ok, v, 1.0)
    lo = np.asarray(boundary_z(safe, tau2, min(2 * alpha, 0.999)), dtype=float)
    hi = np.asarray(boundary_z(safe, tau2, alpha), dtype=float)
    target = np.log(1 / alpha)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = np.asarray(log_likelihood_ratio(mid * np.sqrt(safe), safe, tau2)) >= target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    return np.where(ok, hi, np.inf)[()]


class OneSidedResult(NamedTuple):
    """Always-valid p-value of H0 and the one-sided confidence bound at each look (last axis).

    `bound` is a lower bound for side "greater", an upper bound for "less"; `boundary` is z_one(V).
    """

    p_value: Floats
    bound: Floats
    boundary: Floats


def one_sided_sequence(
    differences: ArrayLike, variances: ArrayLike, tau2: float, alpha: float, theta0: float = 0.0,
    side: Side = "greater",
) -> OneSidedResult:
    """One-sided always-valid p-values (H0 at theta0) and confidence bounds over looks (last axis).

    Non-inferiority: side="greater", theta0=-margin; shown when p_value < alpha (equivalently
    bound > -margin). Harm: side="less", theta0=0; shown when the upper bound is below 0. The
    bound is the running maximum (minimum for "less") of the per-look bounds, which is valid
    (Howard et al. 2021), unless that would put it beyond the current estimate; then the current
    look's bound is reported, which contains the running one and so is valid too.
    """
    d, v = np.asarray(differences, dtype=float), np.asarray(variances, dtype=float)
    llr = np.asarray(log_likelihood_ratio(d, v, tau2, theta0, side))
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-llr)), axis=-1)
    zb = np.asarray(boundary_z_one_sided(v, tau2, alpha))
    known = np.isfinite(zb) & np.isfinite(d)
    half = np.where(known, zb * np.sqrt(np.where(known, v, 0.0)), np.inf)
    if side == "greater":
        now = np.where(known, d - half, -np.inf)
        run = np.maximum.accumulate(now, axis=-1)
        bound = np.where(known & (run <= d), run, now)
    else:
        now = np.where(known, d + half, np.inf)
        run = np.minimum.accumulate(now, axis=-1)
        bound = np.where(known & (run >= d), run, now)
    return OneSidedResult(p, bound, zb)


def tuned_tau2(effect: float, alpha: float, target_power: float) -> float:
    """tau^2 that makes the one-sided boundary narrowest at the planned information.

    The planned variance is the fixed-horizon one-sided test's for `effect` (for
    non-inferiority: the margin, the distance from theta0 to a truly equal model):
    V* = (effect / (z_{1-alpha} + z_power))^2. The boundary width z_one(V*) sqrt(V*) depends on
    tau^2 / V* only, so the ratio is found once by a one-dimensional search.
    """
    if effect == 0:
        raise ValueError("tuning needs a nonzero effect")
    v_star = (abs(effect) / (ndtri(1 - alpha) + ndtri(target_power))) ** 2

    def width(log_ratio: float) -> float:
        return float(boundary_z_one_sided(1.0, float(np.exp(log_ratio)), alpha))

    best = minimize_scalar(width, bounds=(np.log(0.05), np.log(500.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x) * v_star)
