"""Drift statistics between a training baseline and live counts over the same bins, and the verdict.

Pure functions over count vectors (numpy and the standard library: the chi-square survival
function is computed here, so a router replica does not carry SciPy's 140 MB), shared by the
router's periodic drift job and `modelramp skew`, so both judge alike.

- `psi`: population stability index, sum (q - p) ln(q / p), proportions floored at `EPS` so an
  empty bin (a category training never saw) gives a large finite value instead of infinity.
- `js_distance`: Jensen-Shannon distance, base 2, in [0, 1] (scipy's `jensenshannon(p, q, base=2)`).
- `linf`: L-infinity distance, max |p - q|: TFDV's statistic for categorical features.
- `chi2_pvalue`: chi-square test of homogeneity on the 2 x k table of counts (scipy's
  `chi2_contingency` without continuity correction), bins empty on both sides dropped.

Sample size in view: the plug-in PSI and JS distance are biased upwards at small samples, by
about (k - 1) / n: with 51 categories and 750 rows, JS distance is 0.13 when nothing has changed.
So a feature is judged only once the live sample reaches `min_sample`, only on the statistics that
suit its kind (`JUDGED`: JS for numbers, L-infinity for categories, as TFDV does, and PSI for
both), and a statistic over its threshold is drift only when the chi-square test also rejects
"same distribution" at `alpha`: a large effect that chance could explain is not an alarm, nor is a
significant but negligible one (with big samples everything is significant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from router.config import JUDGED, judged_thresholds  # noqa: F401 - part of this module's API (the statistics judged per kind)

EPS = 1e-4
STATISTICS = ("psi", "js_distance", "linf", "chi2_pvalue")
EFFECT_SIZES = ("psi", "js_distance", "linf")
# Verdicts: enough data and no drift; drift; not enough live data to judge.
OK, DRIFT, TOO_FEW = "ok", "drift", "too_few"


def proportions(counts: ArrayLike) -> np.ndarray:
    """Counts -> proportions (all zeros when the total is 0)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    return c / total if total > 0 else c


def psi(expected: ArrayLike, actual: ArrayLike, eps: float = EPS) -> float:
    """Population stability index of `actual` against `expected` (counts or proportions)."""
    p = np.maximum(proportions(expected), eps)
    q = np.maximum(proportions(actual), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(expected: ArrayLike, actual: ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count or proportion vectors."""
    p, q = proportions(expected), proportions(actual)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def linf(expected: ArrayLike, actual: ArrayLike) -> float:
    """L-infinity distance: the largest absolute difference of proportions over the bins."""
    return float(np.max(np.abs(proportions(expected) - proportions(actual))))


def chi2_sf(df: int, x: float) -> float:
    """P(X > x) for X chi-square with `df` degrees of freedom: Q(df / 2, x / 2), the regularised upper
    incomplete gamma function; SciPy's `chdtrc` (tests/router/skew/test_drift_pvalue.py pins it against it).

    A power series below a + 1, Lentz's continued fraction above (Numerical Recipes, 6.2), each
    to double precision within a few dozen terms for the degrees of freedom a sketch has.
    """
    a, z = df / 2.0, x / 2.0
    if z <= 0.0:
        return 1.0
    log_prefix = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1.0:  # lower function P by its series, Q = 1 - P
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1.0
            term *= z / n
            total += term
            if abs(term) < abs(total) * 1e-17:
                break
        return min(1.0, max(0.0, 1.0 - total * math.exp(log_prefix)))
    tiny = 1e-300
    b = z + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi2_pvalue(expected: ArrayLike, actual: ArrayLike) -> float:
    """p-value of the chi-square homogeneity test on the 2 x k table of the two count vectors."""
    table = np.vstack([np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0  # one bin used, or one side empty: no evidence of a difference
    expected_counts = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    stat = float(np.sum((table - expected_counts) ** 2 / expected_counts))
    return chi2_sf(table.shape[1] - 1, stat)


def statistics(expected: ArrayLike, actual: ArrayLike) -> dict[str, float]:
    """Every statistic of `STATISTICS` for one feature."""
    return {"psi": psi(expected, actual), "js_distance": js_distance(expected, actual),
            "linf": linf(expected, actual), "chi2_pvalue": chi2_pvalue(expected, actual)}


@dataclass(frozen=True)
class Judgement:
    """One feature's comparison: its statistics, the thresholds used, and the verdict."""

    feature: str
    kind: str
    n: int
    statistics: dict[str, float]
    thresholds: dict[str, float]
    verdict: str
    over: tuple[str, ...] = ()  # judged statistics over their threshold (drift only if significant too)
    judged: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "n": self.n, "verdict": self.verdict,
                "statistics": {k: _finite(v) for k, v in self.statistics.items()},
                "thresholds": dict(self.thresholds), "judged": list(self.judged), "over": list(self.over)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def judge(feature: str, kind: str, expected: ArrayLike, actual: ArrayLike, thresholds: Mapping[str, float],
          min_sample: int, alpha: float) -> Judgement:
    """Compare live counts with the baseline's over the same bins and decide ok / drift / too_few.

    `thresholds` maps each judged effect-size statistic to its limit (see `judged_thresholds`);
    `kind` ("numeric" or "categorical"; the prediction score is numeric) is reported as is.
    """
    limits = {s: float(v) for s, v in thresholds.items()}
    judged = tuple(limits)
    n = int(round(float(np.sum(actual))))
    stats = statistics(expected, actual) if n > 0 else {}
    if n < max(min_sample, 1):
        return Judgement(feature, kind, n, stats, limits, TOO_FEW, (), judged)
    over = tuple(s for s in judged if stats[s] > limits[s])
    drifted = bool(over) and stats["chi2_pvalue"] < alpha
    return Judgement(feature, kind, n, stats, limits, DRIFT if drifted else OK, over, judged)
