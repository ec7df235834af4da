"""Cluster-robust rates and differences: pinned to statsmodels' cluster OLS and the delta method;
A/A, coverage and power simulated on repeated units (20,000 customers each scored ~33 times)."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from numpy.typing import ArrayLike

from experiments.stats.clustered import (
    arm_variance,
    cluster_rate,
    design_effect,
    period_counts,
    stratified_difference,
)
from experiments.stats.sequential import confidence_sequence, run_sequence
from experiments.stats.stratified import stratified_difference as request_level
from tests.experiments.stats.units import batches, repeated_units

ALPHA, TAU2 = 0.05, 0.03**2


def units(rng: np.random.Generator, n: int, buckets: int, rate: float, empty: int = 0):
    """Unit-level data: each unit has 1 + Poisson(4) requests sharing one outcome, and a bucket."""
    r = rng.poisson(4, n) + 1
    y = (rng.random(n) < rate).astype(float)
    b = rng.integers(empty, buckets, n)  # buckets below `empty` stay empty
    return r, y, b


def bucket_totals(r, y, b, buckets: int, mask=None):
    mask = np.ones(len(r), bool) if mask is None else mask
    s = np.bincount(b[mask], weights=(y * r)[mask], minlength=buckets)
    n = np.bincount(b[mask], weights=r[mask], minlength=buckets)
    return s, n


@pytest.mark.parametrize(("n", "buckets", "rate", "empty"), [(400, 64, 0.88, 0), (3000, 128, 0.5, 0), (90, 16, 0.95, 5)])
def test_cluster_rate_is_statsmodels_cluster_ols(n: int, buckets: int, rate: float, empty: int) -> None:
    rng = np.random.default_rng(n)
    r, y, b = units(rng, n, buckets, rate, empty)
    s, t = bucket_totals(r, y, b, buckets)
    ours = cluster_rate(s, t)
    fit = sm.OLS(np.repeat(y, r), np.ones(r.sum())).fit(cov_type="cluster", cov_kwds={"groups": np.repeat(b, r)})
    assert ours.rate == pytest.approx(fit.params[0], rel=1e-12)
    assert ours.variance == pytest.approx(fit.bse[0] ** 2, rel=1e-10)
    assert ours.clusters == len(np.unique(b))  # empty buckets are no clusters


def test_one_stratum_difference_is_statsmodels_cluster_ols_on_the_arm_dummy() -> None:
    rng = np.random.default_rng(7)
    r, y, b = units(rng, 2000, 64, 0.8)
    arm = rng.random(len(r)) < 0.2
    sm_, nm = bucket_totals(r, y, b, 64, arm)
    sl, nl = bucket_totals(r, y, b, 64, ~arm)
    ours = stratified_difference(sm_[None], nm[None], sl[None], nl[None])
    x = np.column_stack([np.ones(r.sum()), np.repeat(arm, r).astype(float)])
    fit = sm.OLS(np.repeat(y, r), x).fit(cov_type="cluster", cov_kwds={"groups": np.repeat(b, r)})
    big_n = r.sum()
    assert ours.difference == pytest.approx(fit.params[1], rel=1e-10)
    # statsmodels' small-sample factor is G/(G-1) * (N-1)/(N-K); ours is G/(G-1).
    assert ours.cluster_variance == pytest.approx(fit.bse[1] ** 2 * (big_n - 2) / (big_n - 1), rel=1e-10)


def test_stratified_variance_is_the_delta_method_over_buckets() -> None:
    """Numerical gradient of the Mantel-Haenszel estimate in the totals, dotted with each bucket."""
    rng = np.random.default_rng(3)
    nm = rng.integers(0, 30, (3, 8)).astype(float)
    nl = rng.integers(0, 300, (3, 8)).astype(float)
    sm_ = rng.binomial(nm.astype(int), [[0.5], [0.7], [0.9]]).astype(float)
    sl = rng.binomial(nl.astype(int), [[0.6], [0.6], [0.8]]).astype(float)  # a different effect per stratum

    def estimate(tot: np.ndarray) -> float:
        s_m, n_m, s_l, n_l = tot
        w = n_m * n_l / (n_m + n_l)
        return float((w * (s_m / n_m - s_l / n_l)).sum() / w.sum())

    z = np.stack([sm_, nm, sl, nl])
    tot = z.sum(-1)
    grad = np.zeros_like(tot)
    for idx in np.ndindex(tot.shape):
        step = np.zeros_like(tot)
        step[idx] = 1e-6 * tot[idx]
        grad[idx] = (estimate(tot + step) - estimate(tot - step)) / (2 * step[idx])
    u = np.einsum("ik,ikb->b", grad, z)
    g = 8
    ours = stratified_difference(sm_, nm, sl, nl, min_expected=0)
    assert ours.difference == pytest.approx(estimate(tot), rel=1e-12)
    assert ours.cluster_variance == pytest.approx(g / (g - 1) * (u**2).sum(), rel=1e-7)


def test_estimate_and_weights_are_those_of_stats_stratified() -> None:
    rng = np.random.default_rng(5)
    nm, nl = rng.integers(1, 50, (4, 16)), rng.integers(100, 500, (4, 16))
    sm_, sl = rng.binomial(nm, 0.8), rng.binomial(nl, 0.85)
    ours = stratified_difference(sm_, nm, sl, nl)
    theirs = request_level(sm_.sum(-1), nm.sum(-1), sl.sum(-1), nl.sum(-1))
    assert ours.difference == pytest.approx(theirs.difference, rel=1e-12)
    assert ours.effective_sample == pytest.approx(theirs.effective_sample, rel=1e-12)


def test_one_bucket_zero_trials_and_no_failures() -> None:
    # B = 1: no between-bucket spread, so request level (design effect 1), reported by clusters = 1.
    one = stratified_difference([[91]], [[99]], [[8712]], [[9901]])
    assert one.clusters == 1 and np.isnan(one.cluster_variance) and one.design_effect == 1
    assert one.variance == pytest.approx(one.independent_variance)
    assert np.isnan(cluster_rate([5.0], [10.0]).variance)
    # No trials at all: no rate, no variance, no weight.
    none = stratified_difference([[0, 0]], [[0, 0]], [[5, 6]], [[9, 9]])
    assert np.isnan(none.difference) and np.isnan(none.variance) and none.effective_sample == 0
    assert np.isnan(cluster_rate([0, 0], [0, 0]).rate)
    # 50 requests, no failure: the cluster-robust plug-in is 0, the floor is not; the legacy rate's
    # variance (what this arm would have under H0) is larger still.
    s, n = np.full(10, 5.0), np.full(10, 5.0)
    assert cluster_rate(s, n).variance == 0
    assert arm_variance(s, n) == pytest.approx((51 / 52) * (1 / 52) / 52)
    assert arm_variance(s, n, floor_rate=0.88) == pytest.approx(0.88 * 0.12 / 50)


def test_design_effect_of_units_sharing_one_outcome_is_their_request_count() -> None:
    rng = np.random.default_rng(11)
    n, reps = 20_000, 33
    y = (rng.random(n) < 0.7).astype(float)
    b = rng.integers(0, 128, n)
    s = np.bincount(b, weights=y * reps, minlength=128)
    t = np.bincount(b, weights=np.full(n, reps), minlength=128)
    # Every request of a unit shares its outcome: the variance is that of n units, 33 times the
    # binomial one over requests (within the estimate's own noise with 127 degrees of freedom).
    assert design_effect(s, t) == pytest.approx(reps, rel=0.3)


def test_period_counts_are_differences_of_the_cumulative_lists() -> None:
    cum = np.array([[1, 2], [3, 4], [10, 10], [12, 15]])  # (looks, buckets)
    out = period_counts(cum, [0, 2], [1, 3])
    assert out[:, 0].tolist() == [[1, 2], [3, 4], [3, 4], [3, 4]]  # frozen after its last look
    assert out[:, 1].tolist() == [[0, 0], [0, 0], [0, 0], [2, 5]]  # from its own first look on


def simulate(effect: float, runs: int, seed: int, **kw) -> dict[str, np.ndarray]:
    """Whole ramps (1/5/20/50%, 6 looks each) on repeated units; which runs ever declare harm or miss."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[ArrayLike]] = {"harm_request": [], "harm_unit": [], "miss_request": [], "miss_unit": []}
    for r in batches(runs, 100):
        c = repeated_units(rng, r, effect=effect, **kw)
        old = request_level(*(x.sum(-1) for x in c))
        new = stratified_difference(*c)
        s_old = run_sequence(old.difference, old.variance, TAU2, ALPHA)
        s_new = confidence_sequence(new.difference, new.variance, TAU2, ALPHA)
        for tag, s in (("request", s_old), ("unit", s_new)):
            out[f"harm_{tag}"].append((s.upper < 0).any(-1))
            out[f"miss_{tag}"].append(((s.lower > effect) | (s.upper < effect)).any(-1))
    return {k: np.concatenate(v) for k, v in out.items()}


def mc(runs: ArrayLike) -> str:
    x = np.asarray(runs)
    return f"{x.mean():.4f} +- {np.sqrt(x.mean() * (1 - x.mean()) / len(x)):.4f} (n={len(x)})"


@pytest.mark.parametrize(
    ("label", "kw"),
    [("equal customers", {}), ("heavy users (gamma 0.5 activity)", {"heavy_shape": 0.5}),
     ("base rate drifting 0.75 -> 0.92 between stages", {"base": (0.75, 0.81, 0.87, 0.92)})],
)
def test_aa_on_repeated_units_keeps_alpha_only_by_unit(label: str, kw: dict) -> None:
    sim = simulate(0.0, 1000, 15, **kw)
    # Request-level variance: an identical model is "significantly worse" in a large share of runs.
    assert sim["harm_request"].mean() > 0.15, f"{label}: request-level false harm {mc(sim['harm_request'])}"
    # By unit: false harm and non-coverage at any look within alpha (plus 3 Monte Carlo errors).
    for key in ("harm_unit", "miss_unit"):
        x = sim[key]
        assert x.mean() <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(x)), f"{label}: {key} {mc(x)}"


@pytest.mark.parametrize("effect", [-0.03, 0.03])
def test_coverage_and_power_with_a_real_effect(effect: float) -> None:
    sim = simulate(effect, 500, 16)
    x = sim["miss_unit"]
    assert x.mean() <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / len(x)), f"non-coverage {mc(x)}"
    if effect < 0:
        # One MDE of harm on 20,000 customers is still caught in nearly every run.
        assert sim["harm_unit"].mean() >= 0.9, f"harm found {mc(sim['harm_unit'])}"
