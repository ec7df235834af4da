"""Model-minus-legacy difference combined over periods of constant weights (Mantel-Haenszel).

Why: the ramp changes the split (1% -> 5% -> 20% ...) while the base success rate drifts (time of
day, season, a marketing push). Pooling all counts then mixes arms that saw different periods in
different proportions: the model arm holds mostly late traffic, legacy mostly early traffic, and
the drift shows up as a model effect (Simpson's paradox). Within a period of constant weights
(a stratum) assignment is a fixed coin flip, so the arms see the same mix of time; comparing
inside each stratum and combining the differences removes the bias.

The combination uses Mantel-Haenszel weights w_k = n_mk * n_lk / (n_mk + n_lk) (Greenland &
Robins 1985, risk difference). They depend only on how many units each arm got, not on outcomes,
so the combined estimate stays unbiased for a common difference; and the weighted sum
sum_k w_k * d_k grows by independent increments as units arrive, which is what the sequential test
in `sequential` needs. Its variance is sum_k w_k^2 * v_k / W^2, and W = sum_k w_k is the
effective sample used by `power`. The per-stratum variance v_k is Agresti & Caffo's (2000): each
arm's rate is estimated as (s + 1) / (n + 2) over n + 2 units for the variance only. The plain
plug-in variance is zero when an arm has no or only successes, and then one request in the model
arm (0 of 1 succeeded) would look like overwhelming evidence; the adjusted one does not, and for
hundreds of units it is the plug-in variance. A stratum in which one arm got nothing
(100% stage, a rolled-back model) carries no comparison and gets weight 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from experiments.stats._arrays import Floats


class StratifiedDifference(NamedTuple):
    """Combined difference (model - legacy), its variance, and W = sum of Mantel-Haenszel weights."""

    difference: Floats | float
    variance: Floats | float
    effective_sample: Floats | float


#: The normal approximation is trusted once each arm expects this many successes and failures.
MIN_EXPECTED = 5.0


def stratified_difference(
    s_model: ArrayLike, n_model: ArrayLike, s_legacy: ArrayLike, n_legacy: ArrayLike,
    min_expected: float = MIN_EXPECTED,
) -> StratifiedDifference:
    """Combine per-stratum counts (strata along the last axis) into one difference.

    Inputs broadcast, so a simulation can pass arrays shaped (runs, looks, strata). Where no
    stratum has both arms, the difference and variance are NaN and W is 0. The variance is also
    NaN (no evidence yet) until each arm, over the compared strata, expects `min_expected`
    successes and failures at the rate of both arms pooled: the textbook np >= 5 rule. Without it
    a model arm of 100 units that happens to see none of a 3% failure rate looks significantly
    better. The rule uses the pooled rate, dominated by legacy, so a model that fails everything
    is still caught as soon as its arm is large enough.
    """
    sm, nm, sl, nl = (np.asarray(x, dtype=float) for x in (s_model, n_model, s_legacy, n_legacy))
    both = (nm > 0) & (nl > 0)
    safe_nm, safe_nl = np.where(both, nm, 1.0), np.where(both, nl, 1.0)
    pm, pl = sm / safe_nm, sl / safe_nl
    w = np.where(both, safe_nm * safe_nl / (safe_nm + safe_nl), 0.0)
    am, al = (sm + 1) / (safe_nm + 2), (sl + 1) / (safe_nl + 2)
    v = am * (1 - am) / (safe_nm + 2) + al * (1 - al) / (safe_nl + 2)
    total = w.sum(axis=-1)
    n_m, n_l = (np.where(both, x, 0.0).sum(axis=-1) for x in (nm, nl))
    succ = np.where(both, sm + sl, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = succ / (n_m + n_l)
        rare = np.minimum(pooled, 1 - pooled)
        enough = (n_m * rare >= min_expected) & (n_l * rare >= min_expected)
        diff = (w * (pm - pl)).sum(axis=-1) / total
        var = np.where(enough, (w * w * v).sum(axis=-1) / (total * total), np.nan)
    return StratifiedDifference(diff[()], var[()], total[()])
