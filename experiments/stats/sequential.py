"""Always-valid inference for the difference: the normal-mixture sequential probability ratio test.

The analyzer is run again and again as data arrive, and acts on the first look that crosses a
line; a fixed-horizon p-value checked at every look rejects a true null far more often than
alpha. This module implements the mixture SPRT (mSPRT) of Johari, Koomen, Pekelis and Walsh,
"Peeking at A/B Tests: Why it matters, and what to do about it" (KDD 2017; Operations Research
2022), in the Gaussian form used for a difference of proportions, and the matching confidence
sequence (Robbins 1970; Howard, Ramdas, McAuliffe, Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Annals of Statistics 2021, normal mixture boundary).

With estimate d of the difference and its variance V at a look, the likelihood ratio of
"difference = theta0" against a N(theta0, tau^2) mixture of alternatives is

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2))),

a nonnegative martingale under the null (in the normal approximation), so by Ville's inequality
it ever exceeds 1/alpha with probability at most alpha, however often one looks. Hence the
always-valid p-value min(1, 1 / max Lambda) and the confidence sequence of all theta0 with
Lambda < 1/alpha: d +- z_b(V) * sqrt(V) with z_b given by `boundary_z`. The analyzer uses tau =
the configured minimum detectable effect, so the test is most sensitive around the effects the
experiment was planned for. Non-inferiority (lower bound > -margin) and harm (upper bound < 0)
are read from the same two-sided sequence, so together they err with probability at most alpha.
"""

from __future__ import annotations

from typing import NamedTuple, overload

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from scipy.special import ndtri  # inverse normal cdf; scipy.stats.norm is much slower per call

from experiments.stats._arrays import AnyArray, Floats


@overload
def boundary_z(variance: float, tau2: float, alpha: float) -> float: ...
@overload
def boundary_z(variance: AnyArray, tau2: float, alpha: float) -> Floats: ...
@overload
def boundary_z(variance: ArrayLike, tau2: float, alpha: float) -> Floats | float: ...
def boundary_z(variance: ArrayLike, tau2: float, alpha: float) -> Floats | float:
    """The z value |d - theta0| / sqrt(V) at which Lambda reaches 1/alpha; inf without information."""
    v = np.asarray(variance, dtype=float)
    ok = np.isfinite(v) & (v > 0)
    safe = np.where(ok, v, 1.0)
    z2 = (safe + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((safe + tau2) / safe))
    return np.where(ok, np.sqrt(z2), np.inf)[()]


@overload
def log_likelihood_ratio(difference: float, variance: float, tau2: float, theta0: float = 0.0) -> float: ...
@overload
def log_likelihood_ratio(difference: AnyArray, variance: ArrayLike, tau2: float, theta0: float = 0.0) -> Floats: ...
@overload
def log_likelihood_ratio(
    difference: ArrayLike, variance: ArrayLike, tau2: float, theta0: float = 0.0
) -> Floats | float: ...
def log_likelihood_ratio(
    difference: ArrayLike, variance: ArrayLike, tau2: float, theta0: float = 0.0
) -> Floats | float:
    """log Lambda of the mixture SPRT for H0: difference = theta0; 0 where there is no information."""
    d = np.asarray(difference, dtype=float)
    v = np.asarray(variance, dtype=float)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(d)
    safe_v, safe_d = np.where(ok, v, 1.0), np.where(ok, d, 0.0)
    llr = 0.5 * np.log(safe_v / (safe_v + tau2)) + tau2 * (safe_d - theta0) ** 2 / (2 * safe_v * (safe_v + tau2))
    return np.where(ok, llr, 0.0)[()]


class SequentialResult(NamedTuple):
    """Always-valid p-value and confidence sequence bounds at each look (looks on the last axis)."""

    p_value: Floats
    lower: Floats
    upper: Floats
    boundary: Floats


def run_sequence(differences: ArrayLike, variances: ArrayLike, tau2: float, alpha: float) -> SequentialResult:
    """Always-valid p-values and confidence sequence over a series of looks (last axis).

    The p-value is the running minimum of 1/Lambda, the bounds the running intersection of the
    per-look intervals: both stay valid at any look, data-dependent stopping included (Howard et
    al. 2021). An empty intersection would mean the normal model does not fit (e.g. the effect
    itself moves between stages); the bounds then fall back to the current look's interval.
    """
    d = np.asarray(differences, dtype=float)
    v = np.asarray(variances, dtype=float)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_likelihood_ratio(d, v, tau2))), axis=-1)
    zb = np.asarray(boundary_z(v, tau2, alpha))
    with np.errstate(invalid="ignore"):
        half = np.where(np.isfinite(zb), zb * np.sqrt(np.where(np.isfinite(zb), v, 0.0)), np.inf)
    lo_now = np.where(np.isfinite(half) & np.isfinite(d), d - half, -np.inf)
    hi_now = np.where(np.isfinite(half) & np.isfinite(d), d + half, np.inf)
    lo, hi = np.maximum.accumulate(lo_now, axis=-1), np.minimum.accumulate(hi_now, axis=-1)
    empty = lo > hi
    return SequentialResult(p, np.where(empty, lo_now, lo), np.where(empty, hi_now, hi), zb)


def needed_information(effect: float, tau2: float, alpha: float, target_power: float) -> float:
    """The variance V of the difference at which the sequence detects `effect` with `target_power`.

    Solves effect / sqrt(V) - z_b(V) = z_power, i.e. the estimate lies beyond the boundary at
    that look with the target probability (ignoring earlier crossings, so slightly conservative).
    Divide the per-unit variance p(1 - p) by it to get the effective sample (`power`'s n_eff).
    """
    if effect == 0:
        return 0.0
    z_power = ndtri(target_power)

    def gap(log_v: float) -> float:
        v = np.exp(log_v)
        return float(abs(effect) / np.sqrt(v) - float(boundary_z(v, tau2, alpha)) - z_power)

    # gap falls from +inf (tiny V) to below zero (V large); search in log space.
    return float(np.exp(brentq(gap, np.log(effect * effect) - 30, np.log(effect * effect) + 5)))


def confidence_sequence(differences: ArrayLike, variances: ArrayLike, tau2: float, alpha: float) -> SequentialResult:
    """Like `run_sequence`, but the reported interval always contains the current estimate.

    Every per-look interval contains the estimate; their running intersection need not (issue
    15: [+5.40, +5.58] kept around an estimate of +3.42 after an early look with a too-small
    variance). Any set that contains the running intersection is still a valid confidence
    sequence (it covers whenever the intersection does), so this reports the running
    intersection when it contains the estimate and the current look's interval otherwise. The
    root cause, a variance that is too small at tiny samples, is fixed where the variance is
    computed (`clustered.stratified_difference`); this only keeps the report coherent.
    """
    d = np.asarray(differences, dtype=float)
    seq = run_sequence(d, variances, tau2, alpha)
    zb = np.asarray(seq.boundary)
    v = np.asarray(variances, dtype=float)
    with np.errstate(invalid="ignore"):
        half = np.where(np.isfinite(zb), zb * np.sqrt(np.where(np.isfinite(zb), v, 0.0)), np.inf)
    known = np.isfinite(half) & np.isfinite(d)
    lo_now, hi_now = np.where(known, d - half, -np.inf), np.where(known, d + half, np.inf)
    inside = known & (seq.lower <= d) & (d <= seq.upper)
    lower = np.where(inside, seq.lower, lo_now)
    upper = np.where(inside, seq.upper, hi_now)
    return SequentialResult(seq.p_value, lower, upper, seq.boundary)
