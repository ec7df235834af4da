"""Power and time to decision of the mixture boundaries actually used, by recursive numerical integration.

Why: the hold message's estimate was fixed-horizon (about 5 times too optimistic in A/A, issue
15): it ignored that the sequential boundary is wider than 1.96, that decisions come from the
first crossing at one of many looks, and, for `ship`, that non-inferiority is judged at the
margin, not at the MDE. In information time I = 1 / V the score X = d I of an estimate d is a
Brownian motion with drift theta (Lan & DeMets 1983; Jennison & Turnbull, *Group Sequential
Methods*, 2000, ch. 19), sampled at the looks, and the mixture boundary |d| >= z_b(V) sqrt(V)
is |X| >= g(I) = z_b(1 / I) sqrt(I). The distribution of the first look at which X crosses is
computed exactly (up to the grid) by the recursive integration of Armitage, McPherson & Rowe
(1969): the density of X on the continuation region is carried from look to look by a Gaussian
kernel. This gives power by look, the expected information at the decision, and the information
at which the target power is reached, for the two-sided (`sequential`) or one-sided
(`one_sided`) boundary. A seeded simulation confirms it (tests/experiments/stats/test_sequential_power.py).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr

from experiments.stats._arrays import Floats
from experiments.stats.one_sided import boundary_z_one_sided
from experiments.stats.sequential import boundary_z

#: Grid points on the continuation region; 1e-4 accuracy in the tests' cases.
GRID = 401


class Crossing(NamedTuple):
    """Probability that the first crossing is at each look, through the upper and the lower boundary."""

    upper: Floats
    lower: Floats


def boundary(information: ArrayLike, tau2: float, alpha: float, sides: int = 2) -> Floats:
    """g(I) on the score scale X = d I for the two-sided or the one-sided (upper) boundary."""
    info = np.asarray(information, dtype=float)
    v = 1.0 / info
    z = boundary_z(v, tau2, alpha) if sides == 2 else boundary_z_one_sided(v, tau2, alpha)
    g: Floats = np.asarray(z) * np.sqrt(info)  # numpy's ufuncs return Any
    return g


def crossing_probabilities(
    effect: float, information: ArrayLike, tau2: float, alpha: float, sides: int = 2, grid: int = GRID
) -> Crossing:
    """P(first crossing at look k) for a true `effect` (theta - theta0) and looks at `information`.

    `information` is increasing, 1 / V at each look. With sides=1 only the upper boundary stops
    (one-sided, H1: theta > theta0; pass -effect for a harm test with side "less").
    """
    info = np.asarray(information, dtype=float)
    if info.ndim != 1 or np.any(np.diff(info) <= 0) or info[0] <= 0:
        raise ValueError("information must be positive and increasing")
    g = boundary(info, tau2, alpha, sides)
    xs, dens = np.zeros(1), np.ones(1)  # a point mass at X = 0 before the first look
    prev, upper, lower = 0.0, np.zeros(len(info)), np.zeros(len(info))
    for k, (i_k, g_k) in enumerate(zip(info, g, strict=True)):
        step = i_k - prev
        sd, shift = np.sqrt(step), effect * step
        mean = xs + shift
        upper[k] = np.dot(dens, ndtr((mean - g_k) / sd))
        if sides == 2:
            lower[k] = np.dot(dens, ndtr((-g_k - mean) / sd))
            lo = -g_k
        else:
            lo = min(effect * i_k, 0.0) - 9 * np.sqrt(i_k)  # the lower tail beyond is negligible
        new = np.linspace(lo, g_k, grid)
        kernel = np.exp(-0.5 * ((new[:, None] - mean[None, :]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
        density = kernel @ dens
        weights = np.full(grid, new[1] - new[0])
        weights[[0, -1]] *= 0.5  # trapezoid rule
        xs, dens, prev = new, density * weights, i_k
    return Crossing(upper, lower)


class TimeToDecision(NamedTuple):
    """Power by the last look, expected information at the decision (capped at the last look),
    and the information at which the crossing probability first reaches the target (inf if never)."""

    power: float
    expected_information: float
    information_for_power: float


def time_to_decision(
    effect: float, information: ArrayLike, tau2: float, alpha: float, target_power: float, sides: int = 2,
    side: str = "upper",
) -> TimeToDecision:
    """Power, expected stopping information and information for `target_power` of one boundary.

    `side` picks the crossing that is the decision: "upper" for effect > 0 (or a one-sided test),
    "lower" for a two-sided test of a harm (effect < 0). A run that never crosses counts the last
    look's information in the expectation (the experiment ends there).
    """
    info = np.asarray(information, dtype=float)
    cross = crossing_probabilities(effect, info, tau2, alpha, sides)
    hit = cross.upper if side == "upper" else cross.lower
    stop = cross.upper + cross.lower
    cumulative = np.cumsum(hit)
    expected = float(np.dot(stop, info) + (1 - stop.sum()) * info[-1])
    reached = np.nonzero(cumulative >= target_power)[0]
    return TimeToDecision(float(cumulative[-1]), expected, float(info[reached[0]]) if len(reached) else float("inf"))


def looks_schedule(information_per_look: float, looks: int) -> Floats:
    """Equally spaced information, one look every `information_per_look` (1 / V grows linearly)."""
    return information_per_look * np.arange(1, looks + 1, dtype=float)
