"""Seeded simulation of a ramp on repeated units, as bucket counts per (run, look, stratum, bucket).

Customers are randomised, not requests: each customer has an assignment hash u (model arm while
u < the stage's model weight, so a ramp keeps earlier model customers and moves legacy ones over),
an analysis bucket hashed independently of u, and one outcome, shared by all its scores. Its
outcome under legacy is v < base and under the model v < base + effect for one uniform v (the
same customer, two potential outcomes). Scores arrive as Poisson counts per look at the customer's
rate; the sum of the Poisson counts of a group of customers is Poisson with the summed rate, so
counts are drawn per (bucket, arm, outcome) group, with the group composition fixed per stage:
that is what makes every score of a customer share its outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

STAGES = (0.01, 0.05, 0.20, 0.50)


class Counts(NamedTuple):
    """Per-period counts as known at each look, shaped (runs, looks, periods, buckets)."""

    s_model: np.ndarray
    n_model: np.ndarray
    s_legacy: np.ndarray
    n_legacy: np.ndarray


def _accumulate(inc: np.ndarray, stage_of_look: np.ndarray, periods: int) -> np.ndarray:
    """(runs, looks, groups) increments into (runs, looks, periods, groups) per-period counts."""
    runs, looks, groups = inc.shape
    out = np.zeros((runs, looks, periods, groups))
    for j in range(periods):
        mine = np.where((stage_of_look == j)[None, :, None], inc, 0.0)
        out[:, :, j] = np.cumsum(mine, axis=1)
    return out


def _split(per: np.ndarray, buckets: int) -> Counts:
    """Groups ordered (bucket, arm, outcome) into the four count arrays."""
    g = per.reshape(per.shape[:-1] + (buckets, 2, 2))
    s_l, s_m = g[..., 0, 1], g[..., 1, 1]
    return Counts(s_m, g[..., 1, 0] + s_m, s_l, g[..., 0, 0] + s_l)


def repeated_units(
    rng: np.random.Generator, runs: int, *, customers: int = 20_000, scores: float = 33.0,
    stages: tuple[float, ...] = STAGES, looks_per_stage: int = 6, base: float | tuple[float, ...] = 0.88,
    effect: float = 0.0, buckets: int = 64, heavy_shape: float | None = None, share_factor: float = 1.0,
) -> Counts:
    """One batch of `runs` experiments; each customer makes `scores` scores on average over all looks.

    `base` may give one legacy success rate per stage (drift between stages). `heavy_shape`
    draws customers' activity from a gamma of that shape (heavy users) instead of equal rates.
    `share_factor` < 1 is a broken assignment: the model arm gets that fraction of its units.
    """
    periods, looks = len(stages), len(stages) * looks_per_stage
    base_s = np.broadcast_to(np.asarray(base, dtype=float), (periods,))
    per_look = scores / looks
    u, v = rng.random((runs, customers)), rng.random((runs, customers))
    bucket = rng.integers(0, buckets, (runs, customers))
    activity = rng.gamma(heavy_shape, 1 / heavy_shape, (runs, customers)) if heavy_shape else np.ones((runs, customers))
    groups = buckets * 4
    offset = (np.arange(runs) * groups)[:, None]
    inc = np.zeros((runs, looks, groups))
    for j, w in enumerate(stages):
        arm = (u < w * share_factor).astype(int)
        y = (v < base_s[j] + effect * arm).astype(int)
        key = offset + bucket * 4 + arm * 2 + y
        rate = np.bincount(key.ravel(), weights=(activity * per_look).ravel(), minlength=runs * groups)
        sl = slice(j * looks_per_stage, (j + 1) * looks_per_stage)
        inc[:, sl] = rng.poisson(np.broadcast_to(rate.reshape(runs, 1, groups), (runs, looks_per_stage, groups)))
    stage_of_look = np.repeat(np.arange(periods), looks_per_stage)
    return _split(_accumulate(inc, stage_of_look, periods), buckets)


def independent_requests(
    rng: np.random.Generator, runs: int, *, requests_per_look: float, stages: tuple[float, ...] = STAGES,
    looks_per_stage: int = 6, base: float | tuple[float, ...] = 0.88, effect: float = 0.0, buckets: int = 64,
    share_factor: float = 1.0,
) -> Counts:
    """Requests with independent outcomes (every request a new unit), in random buckets.

    `share_factor` < 1 loses that fraction of the model arm's requests (to the legacy arm).
    """
    periods, looks = len(stages), len(stages) * looks_per_stage
    base_s = np.broadcast_to(np.asarray(base, dtype=float), (periods,))
    inc = np.zeros((runs, looks, buckets * 4))
    for j, w in enumerate(stages):
        rates = np.zeros((buckets, 2, 2))
        for arm, share in ((0, 1 - w * share_factor), (1, w * share_factor)):
            p = base_s[j] + effect * arm
            rates[:, arm, 1] = requests_per_look * share * p / buckets
            rates[:, arm, 0] = requests_per_look * share * (1 - p) / buckets
        sl = slice(j * looks_per_stage, (j + 1) * looks_per_stage)
        inc[:, sl] = rng.poisson(np.broadcast_to(rates.ravel(), (runs, looks_per_stage, buckets * 4)))
    stage_of_look = np.repeat(np.arange(periods), looks_per_stage)
    return _split(_accumulate(inc, stage_of_look, periods), buckets)


def batches(total: int, size: int) -> Iterator[int]:
    """Batch sizes that add up to `total` (simulations run in batches to bound memory)."""
    for start in range(0, total, size):
        yield min(size, total - start)
