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
in `sequential` needs. Its variance is sum_k w_k^2 * v_k / W^2 with the usual unpooled v_k, and
W = sum_k w_k is the effective sample used by `power`. A stratum in which one arm got nothing
(100% stage, a rolled-back model) carries no comparison and gets weight 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class StratifiedDifference(NamedTuple):
    """Combined difference (model - legacy), its variance, and W = sum of Mantel-Haenszel weights."""

    difference: np.ndarray | float
    variance: np.ndarray | float
    effective_sample: np.ndarray | float


def stratified_difference(
    s_model: np.ndarray, n_model: np.ndarray, s_legacy: np.ndarray, n_legacy: np.ndarray
) -> StratifiedDifference:
    """Combine per-stratum counts (strata along the last axis) into one difference.

    Inputs broadcast, so a simulation can pass arrays shaped (runs, looks, strata). Where no
    stratum has both arms, the difference and variance are NaN and W is 0.
    """
    sm, nm, sl, nl = (np.asarray(x, dtype=float) for x in (s_model, n_model, s_legacy, n_legacy))
    both = (nm > 0) & (nl > 0)
    safe_nm, safe_nl = np.where(both, nm, 1.0), np.where(both, nl, 1.0)
    pm, pl = sm / safe_nm, sl / safe_nl
    w = np.where(both, safe_nm * safe_nl / (safe_nm + safe_nl), 0.0)
    v = pm * (1 - pm) / safe_nm + pl * (1 - pl) / safe_nl
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = (w * (pm - pl)).sum(axis=-1) / total
        var = (w * w * v).sum(axis=-1) / (total * total)
    return StratifiedDifference(diff[()], var[()], total[()])
