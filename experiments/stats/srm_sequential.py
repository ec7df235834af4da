"""Sequential sample ratio mismatch: the Dirichlet-multinomial mixture of Lindon & Malek (2020), on units.

Why: the chi-square of `srm` re-run at every look is a fixed-horizon test peeked at: 1.25% of A/A
experiments were blocked (3.9% with 6,000 looks) against the 0.1% the threshold promises (issue
15). Lindon & Malek, "Anytime-valid inference for multinomial count data" (arXiv 2011.03567,
2020; NeurIPS 2022) test H0: assignments ~ Multinomial(theta0) with the Bayes factor of a
Dirichlet(c theta0) mixture against theta0,

    BF = Gamma(c) / Gamma(c + N) * prod_j Gamma(c theta0_j + n_j) / Gamma(c theta0_j) / prod_j theta0_j^n_j,

a nonnegative martingale under H0 (a product of predictive-over-null ratios), so p = min over
looks of 1 / BF is an always-valid p-value: P(ever below 0.001) <= 0.001 however many looks.
Across periods of different weights each period has its own Bayes factor (1 before it starts),
and they are averaged with weight 1 / (number of stages): an average of martingales is one,
whatever their dependence. Multiplying them, the textbook combination for independent batches,
is not safe here: a ramp keeps the model arm's units (u < 1% stay when the split becomes 5%), so
the periods share units, and in simulation the product falsely flagged 0.6% of A/A ramps.

Units, not requests: the router randomises units, so heavy users move the request share by far
more than multinomial noise (a bot in the model arm is not a broken assignment). Given per-bucket
exposures (units hashed into B buckets independently of the assignment), `effective_counts`
deflates the request counts by the design effect of the model-arm share, the delta-method
variance over buckets against the multinomial one (Deng, Lu & Litz, WSDM 2017), which turns
requests into about as many independent draws as there are units; distinct-unit counts, where a
source has them, go in directly. `outcome_rate_sequence` checks that outcomes arrive at the same
rate (outcomes per exposure) in both arms: an arm that loses outcomes biases every comparison.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, logsumexp

from experiments.stats._arrays import Floats
from experiments.stats.clustered import stratified_difference
from experiments.stats.sequential import run_sequence

#: Dirichlet concentration c: the prior share of an arm of weight w has sd sqrt(w (1 - w) / (c + 1)),
#: 0.2 points at w = 1% and 1 point at 50%, the size of mismatch worth catching within two looks.
CONCENTRATION = 2500.0


def log_bayes_factor(
    counts: ArrayLike, weights: ArrayLike, concentration: float = CONCENTRATION
) -> Floats | float:
    """log BF of Dirichlet(c * weights) against Multinomial(weights) for counts (arms on the last axis).

    Counts may be non-integer (effective counts). An arm of weight 0 with no counts is dropped; with
    counts it is a certain mismatch (+inf). No counts give 0 (no evidence).
    """
    n = np.asarray(counts, dtype=float)
    w = np.asarray(weights, dtype=float)
    w = w / w.sum(axis=-1, keepdims=True)
    live = w > 0
    a = concentration * np.where(live, w, 1.0)
    with np.errstate(divide="ignore"):
        terms = np.where(live, gammaln(a + n) - gammaln(a) - n * np.log(np.where(live, w, 1.0)), 0.0)
    big_n = np.where(live, n, 0.0).sum(axis=-1)
    lbf = gammaln(concentration) - gammaln(concentration + big_n) + terms.sum(axis=-1)
    impossible = np.any(~live & (n > 0), axis=-1)
    return np.where(impossible, np.inf, lbf)[()]


class SequentialSrm(NamedTuple):
    """Per look (the look axis): log of the periods' averaged Bayes factors and the always-valid p-value."""

    log_bayes_factor: Floats
    p_value: Floats


def sequential_srm(
    period_counts: ArrayLike, period_weights: ArrayLike, concentration: float = CONCENTRATION,
    stages: int | None = None,
) -> SequentialSrm:
    """Always-valid SRM p-value over looks from counts shaped (..., looks, periods, arms).

    `period_counts[k, j]` holds period j's counts as known at look k (zero before the period,
    frozen after it: `clustered.period_counts`), `period_weights[j]` its configured weights.
    The evidence is the average of the periods' Bayes factors with weight 1 / `stages` (the
    configured number of stages, fixed before the data; default the number of periods given),
    the p-value its running minimum of 1 / evidence.
    """
    lbf = np.asarray(log_bayes_factor(period_counts, np.asarray(period_weights, dtype=float), concentration))
    k = max(stages or 0, lbf.shape[-1])
    if k > lbf.shape[-1]:  # stages not reached yet count with a Bayes factor of 1
        lbf = np.concatenate([lbf, np.full(lbf.shape[:-1] + (1,), np.log(k - lbf.shape[-1]))], axis=-1)
    total = logsumexp(lbf, axis=-1) - np.log(k)
    return SequentialSrm(total, np.minimum.accumulate(np.minimum(1.0, np.exp(-total)), axis=-1))


def effective_counts(exposures: ArrayLike, weights: ArrayLike) -> Floats:
    """Request counts per arm turned into unit-equivalent counts, from buckets (last axis).

    `exposures` is shaped (..., arms, buckets), `weights` (..., arms). The model share of the
    requests, q = sum_b E_1b / sum_b T_b, has the delta-method variance V = G / (G - 1) sum_b
    (E_1b - q T_b)^2 / T^2 (centred at the observed share, so a real mismatch does not inflate
    it); a multinomial over T independent requests would give w (1 - w) / T. Their ratio is the
    design effect (at least 1); dividing the arm totals by it leaves the share unchanged and the
    evidence that of independent draws. With fewer than two buckets holding requests there is no
    spread to measure and the counts are returned as they are (request level). Two arms; the
    model arm is the last one.
    """
    e = np.asarray(exposures, dtype=float)
    w = np.asarray(weights, dtype=float)
    w = w / w.sum(axis=-1, keepdims=True)
    totals = e.sum(axis=-1)  # (..., arms)
    t_b = e.sum(axis=-2)  # (..., buckets)
    big_t = t_b.sum(axis=-1)
    g = (t_b > 0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = totals[..., -1] / big_t
        resid = e[..., -1, :] - q[..., None] * t_b
        v = g / (g - 1) * (resid * resid).sum(axis=-1) / (big_t * big_t)
        w_m = w[..., -1]
        deff = v / (w_m * (1 - w_m) / big_t)
    deff = np.where((g >= 2) & np.isfinite(deff), np.fmax(deff, 1.0), 1.0)
    counts: Floats = totals / deff[..., None]  # sum(axis) is Any in numpy's stubs
    return counts


def outcome_rate_sequence(
    o_model: ArrayLike, e_model: ArrayLike, o_legacy: ArrayLike, e_legacy: ArrayLike, tau2: float, alpha: float
) -> Floats:
    """Always-valid p-values (per look) that outcomes per exposure are equal in both arms.

    Inputs shaped (..., looks, strata, buckets) like `clustered.stratified_difference`, with
    outcomes as the successes and exposures as the trials: the same clustered Mantel-Haenszel
    difference, judged with the mixture SPRT. `tau2` is the squared size of a gap in outcome
    rates worth catching (e.g. 0.05**2); `alpha` the threshold it will be compared with.
    """
    est = stratified_difference(o_model, e_model, o_legacy, e_legacy, min_expected=0)
    return run_sequence(est.difference, est.variance, tau2, alpha).p_value
