"""Sample ratio mismatch: are the arms' exposures what the configured weights promise?

A mismatch means the assignment or the logging is broken (a crashing arm losing requests, a
bot hitting one arm, outcomes joined to the wrong arm), and then no comparison of the arms can be
trusted: the analyzer blocks every decision on it. The test is Pearson's chi-square goodness of
fit, the same numbers as `scipy.stats.chisquare(observed, expected)`; GrowthBook and Optimizely
use it with p < 0.001 so that the check almost never fires by chance over many looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy.special import chdtrc  # chi-square survival function; importing scipy.stats costs about 0.9 s per CLI process


class SrmResult(NamedTuple):
    """Chi-square statistic, its p-value, and the expected counts it compared against."""

    statistic: float
    p_value: float
    expected: tuple[float, ...]


def sample_ratio_mismatch(observed: Sequence[float], expected: Sequence[float]) -> SrmResult:
    """Chi-square goodness of fit of `observed` counts against `expected` counts or shares.

    `expected` is rescaled to the observed total, so configured weights can be passed directly.
    An arm expected to get nothing but observed with traffic is a certain mismatch (p = 0); an
    arm expected to get nothing and observed with nothing carries no information and is dropped.
    """
    obs = np.asarray(observed, dtype=float)
    exp = np.asarray(expected, dtype=float)
    if obs.shape != exp.shape or obs.ndim != 1:
        raise ValueError("observed and expected must be 1-d and of the same length")
    if obs.sum() <= 0 or exp.sum() <= 0:
        raise ValueError("a sample ratio test needs exposures and a positive expected share")
    exp = exp * (obs.sum() / exp.sum())
    if np.any((exp == 0) & (obs > 0)):
        return SrmResult(float("inf"), 0.0, tuple(exp))
    keep = exp > 0
    stat = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
    dof = int(keep.sum()) - 1
    p = float(chdtrc(dof, stat)) if dof > 0 else 1.0
    return SrmResult(stat, p, tuple(float(e) for e in exp))
