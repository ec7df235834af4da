"""Rates and differences by randomisation unit: cluster-robust (delta-method) variances from bucket totals.

Why: the router randomises units (a customer), not requests, and every request of a unit shares
the unit's outcome. Requests are then not independent, and the binomial variance p(1 - p) / n
over requests understates the true variance by the design effect sum r_i^2 / sum r_i (r_i = a
unit's requests), about 34 for customers scored 33 times each: the A/A false rollbacks of issue
15. The remedy of Deng, Lu & Litz, "Trustworthy analysis of online A/B tests: pitfalls,
challenges and solutions" (WSDM 2017) and Kohavi, Tang & Xu, *Trustworthy Online Controlled
Experiments*, ch. 18: hash each unit into one of B analysis buckets (independently of the
assignment), count per (arm, bucket), and treat buckets as the i.i.d. observations. A rate
S / N is a ratio of bucket means, so its variance is the delta-method

    Var(S / N) = G / (G - 1) * sum_b (S_b - p N_b)^2 / N^2        (G = buckets with trials),

which is statsmodels' OLS of the request outcomes on a constant with `cov_type="cluster"` and
the bucket as group (its default small-sample factor is G / (G - 1) for one regressor).

Small samples: with few trials or an arm without failures the plug-in variance
is zero or far too small (50 requests, 0 failures: "certainly better"). `stratified_difference`
here therefore takes the larger of the cluster-robust variance and a floor: the request-level
variance of each arm at the larger of its Agresti-Caffo rate and the stratum's pooled rate (the
null, score-test variance; it is estimated mostly from the large arm, so it is stable), times the
design effect measured on the arm with more trials (under H0 both arms hold the same kind of
units, so they share the design effect; positive within-unit correlation means it is >= 1).
Each part is a consistent estimate of the variance near H0; the maximum is conservative and never
collapses at 0 failures. Simulations: tests/experiments/stats/test_clustered.py.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from experiments.stats._arrays import AnyArray, Counts, Floats
from experiments.stats.stratified import MIN_EXPECTED


class ClusterRate(NamedTuple):
    """An arm's rate, its cluster-robust variance, its trials and the buckets holding trials."""

    rate: Floats | float
    variance: Floats | float
    trials: Floats | float
    clusters: Counts


def _floats(*xs: ArrayLike) -> tuple[Floats, ...]:
    return tuple(np.asarray(x, dtype=float) for x in xs)


def _cluster_factor(g: Floats | Counts) -> Floats:
    """G / (G - 1), NaN below two clusters: one bucket says nothing about between-unit spread."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g >= 2, g / np.maximum(g - 1, 1), np.nan)


def cluster_rate(successes: ArrayLike, trials: ArrayLike) -> ClusterRate:
    """Rate sum(successes) / sum(trials) over buckets (last axis) and its delta-method variance.

    Empty buckets carry no units and are not counted as clusters. The rate is NaN without
    trials and the variance NaN with fewer than two non-empty buckets (B = 1 or a single busy
    bucket): the between-bucket spread is then unknown, and `arm_variance` falls back to the
    request-level variance.
    """
    s, n = _floats(successes, trials)
    big_s, big_n = s.sum(axis=-1), n.sum(axis=-1)
    g = (n > 0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(big_n > 0, big_s / np.where(big_n > 0, big_n, 1), np.nan)
        resid = s - np.nan_to_num(p)[..., None] * n
        var = _cluster_factor(g) * (resid * resid).sum(axis=-1) / (big_n * big_n)
    var = np.where(big_n > 0, var, np.nan)
    return ClusterRate(p[()], var[()], big_n[()], g[()])


def design_effect(successes: ArrayLike, trials: ArrayLike) -> Floats | float:
    """Cluster-robust over binomial variance of the rate (>= 1 expected for repeated units).

    NaN where either is unknown (fewer than two buckets, or a rate of exactly 0 or 1, where the
    binomial variance is zero and the ratio says nothing).
    """
    est = cluster_rate(successes, trials)
    p, n = np.asarray(est.rate), np.asarray(est.trials)
    with np.errstate(divide="ignore", invalid="ignore"):
        binom = p * (1 - p) / n
        return np.where(binom > 0, np.asarray(est.variance) / np.where(binom > 0, binom, 1), np.nan)[()]


def arm_variance(
    successes: ArrayLike, trials: ArrayLike, floor_rate: ArrayLike | None = None,
    floor_design_effect: ArrayLike = 1.0,
) -> Floats | float:
    """Variance of one arm's rate that holds at small counts: the largest of

    - the cluster-robust variance (`cluster_rate`), when there are two or more buckets;
    - the Agresti-Caffo request-level variance a(1 - a) / (N + 2), a = (S + 1) / (N + 2), which
      is never zero, times `floor_design_effect`;
    - `floor_rate` (1 - `floor_rate`) / N times `floor_design_effect`, e.g. the pooled or the other
      arm's rate: the variance this arm would have under H0, known from the larger arm.
    """
    est = cluster_rate(successes, trials)
    n = np.asarray(est.trials)
    s = np.asarray(successes, dtype=float).sum(axis=-1)
    safe_n = np.where(n > 0, n, np.nan)
    a = (s + 1) / (safe_n + 2)
    floor = a * (1 - a) / (safe_n + 2)
    if floor_rate is not None:
        q = np.asarray(floor_rate, dtype=float)
        floor = np.fmax(floor, q * (1 - q) / safe_n)
    floor = floor * np.fmax(np.asarray(floor_design_effect, dtype=float), 1.0)
    variance: Floats = np.fmax(np.asarray(est.variance), floor)  # numpy's ufuncs return Any
    return variance[()]


class ClusteredDifference(NamedTuple):
    """Model - legacy over strata, its variance and how that variance was obtained.

    `variance` is the one to decide with (max of `cluster_variance` and `design_effect` *
    `independent_variance`, NaN until each arm expects `min_expected` successes and failures).
    `clusters` is the number of buckets with trials; below 2 the variance is request-level.
    """

    difference: Floats | float
    variance: Floats | float
    effective_sample: Floats | float
    cluster_variance: Floats | float
    independent_variance: Floats | float
    design_effect: Floats | float
    clusters: Counts
    #: Each arm's own design effect averaged, not floored at 1 (NaN where an arm has none): both arms
    #: measure the same units' repeat behaviour, so for planning the mean halves the noise's variance.
    mean_design_effect: Floats | float = float("nan")


def stratified_difference(
    s_model: ArrayLike, n_model: ArrayLike, s_legacy: ArrayLike, n_legacy: ArrayLike,
    min_expected: float = MIN_EXPECTED,
) -> ClusteredDifference:
    """Mantel-Haenszel risk difference over strata (axis -2) from bucket counts (last axis).

    The estimate is `stats.stratified`'s: sum_k w_k (p_mk - p_lk) / W with w_k = N_mk N_lk /
    (N_mk + N_lk) on the stratum totals. Its cluster-robust variance is the delta method over
    buckets: with the estimate's gradient with respect to the totals dotted with bucket b's counts,

        u_b = sum_k (w_k / W) [(S_mkb - p_mk N_mkb) / N_mk - (S_lkb - p_lk N_lkb) / N_lk]
              + sum_k (d_k - d) / W [(N_lk / N_k)^2 N_mkb + (N_mk / N_k)^2 N_lkb],
        V_cluster = G / (G - 1) * sum_b u_b^2,

    summing both arms and all strata inside a bucket before squaring. That is what makes it sound
    across periods: a unit keeps its bucket when the weights change, so its requests in several
    periods (and, after a ramp moved it, in both arms) share one outcome and are correlated; they
    stay inside one i.i.d. bucket, which the sum over b accounts for. Per-period bucket counts are
    differences of the cumulative lists in the history (`period_counts`). With one stratum this is
    the clustered difference of two arms. Inputs broadcast: (runs, looks, strata, buckets) works.
    """
    sm, nm, sl, nl = _floats(s_model, n_model, s_legacy, n_legacy)
    tsm, tnm, tsl, tnl = (x.sum(axis=-1) for x in (sm, nm, sl, nl))
    both = (tnm > 0) & (tnl > 0)
    safe_nm, safe_nl = np.where(both, tnm, 1.0), np.where(both, tnl, 1.0)
    pm, pl = tsm / safe_nm, tsl / safe_nl
    w = np.where(both, safe_nm * safe_nl / (safe_nm + safe_nl), 0.0)
    big_w = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = w / big_w[..., None]  # w_k / W, NaN where no stratum compares
        diff = (w * (pm - pl)).sum(axis=-1) / big_w
        # Per-bucket influence of each arm (strata summed inside the bucket).
        infl_m = (share / safe_nm)[..., None] * (sm - pm[..., None] * nm)
        infl_l = (share / safe_nl)[..., None] * (sl - pl[..., None] * nl)
        keep = both[..., None]
        infl_m, infl_l = np.where(keep, infl_m, 0.0).sum(axis=-2), np.where(keep, infl_l, 0.0).sum(axis=-2)
        # The weights move with the trials too: d est / d w_k = (d_k - est) / W, and
        # d w_k / d N_mk = (N_lk / N_k)^2 (and symmetrically), so each trial also carries
        # (d_k - est) / W times that; zero when the strata share one difference.
        tilt = np.where(both, ((pm - pl) - diff[..., None]) / big_w[..., None], 0.0)
        total_k = safe_nm + safe_nl
        tilt_m, tilt_l = tilt * (safe_nl / total_k) ** 2, tilt * (safe_nm / total_k) ** 2
        infl_w = (tilt_m[..., None] * nm + tilt_l[..., None] * nl).sum(axis=-2)
        g = ((np.where(keep, nm + nl, 0.0)).sum(axis=-2) > 0).sum(axis=-1)
        factor = _cluster_factor(g)
        v_cluster = factor * ((infl_m - infl_l + infl_w) ** 2).sum(axis=-1)
        # Request-level variances per stratum: own Agresti-Caffo rate or pooled (null) rate.
        pooled = (tsm + tsl) / (safe_nm + safe_nl)
        am, al = (tsm + 1) / (safe_nm + 2), (tsl + 1) / (safe_nl + 2)
        vm = np.fmax(am * (1 - am) / (safe_nm + 2), pooled * (1 - pooled) / safe_nm)
        vl = np.fmax(al * (1 - al) / (safe_nl + 2), pooled * (1 - pooled) / safe_nl)
        v_ind = np.where(both, share * share * (vm + vl), 0.0).sum(axis=-1)
        # Design effect from the arm with more trials (plug-in binomial variance underneath).
        bm = np.where(both, share * share * pm * (1 - pm) / safe_nm, 0.0).sum(axis=-1)
        bl = np.where(both, share * share * pl * (1 - pl) / safe_nl, 0.0).sum(axis=-1)
        deff_m = factor * (infl_m ** 2).sum(axis=-1) / bm
        deff_l = factor * (infl_l ** 2).sum(axis=-1) / bl
        n_m, n_l = (np.where(both, x, 0.0).sum(axis=-1) for x in (tnm, tnl))
        deff = np.where(n_l >= n_m, deff_l, deff_m)
        deff = np.where(np.isfinite(deff), np.fmax(deff, 1.0), 1.0)
        var = np.fmax(v_cluster, deff * v_ind)
        succ = np.where(both, tsm + tsl, 0.0).sum(axis=-1)
        rare = np.minimum(succ / (n_m + n_l), 1 - succ / (n_m + n_l))
        enough = (n_m * rare >= min_expected) & (n_l * rare >= min_expected)
        var = np.where(enough & (big_w > 0), var, np.nan)
        mean_deff = (deff_m + deff_l) / 2
    return ClusteredDifference(diff[()], var[()], big_w[()], v_cluster[()], v_ind[()], deff[()], g[()], mean_deff[()])


def period_counts(cumulative: ArrayLike, firsts: list[int], lasts: list[int]) -> AnyArray:
    """Per-period counts as known at each look, from cumulative counts per look (axis 0).

    Mirrors the analyzer's `_strata_by_look`: period j (looks firsts[j]..lasts[j]) counts what was
    gained since its own first look (from zero for the first period), frozen after its last look
    and zero before its first; the gain between two periods is a transition, left out. The
    result has axis 1 for periods and keeps the trailing axes (arm, field, bucket ...).
    """
    cum = np.asarray(cumulative)
    looks = cum.shape[0]
    out = np.zeros((looks, len(firsts)) + cum.shape[1:], dtype=cum.dtype)
    for j, (first, last) in enumerate(zip(firsts, lasts, strict=True)):
        base = cum[first] if j else np.zeros_like(cum[0])
        idx = np.minimum(np.arange(first, looks), last)
        out[first:, j] = cum[idx] - base
    return out
