"""Sequences valid from the first look: coverage at tiny early samples, intervals that contain their
estimate, and the one-sided (half-normal mixture) sequences for non-inferiority and harm."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import ArrayLike
from scipy.integrate import quad
from scipy.stats import norm

from experiments.stats.clustered import stratified_difference
from experiments.stats.one_sided import boundary_z_one_sided, log_likelihood_ratio, one_sided_sequence, tuned_tau2
from experiments.stats.sequential import boundary_z, confidence_sequence, run_sequence
from tests.experiments.stats.units import batches, independent_requests

ALPHA, MDE, MARGIN = 0.05, 0.03, 0.01


def mc(runs: ArrayLike) -> str:
    x = np.asarray(runs)
    return f"{x.mean():.4f} +- {np.sqrt(x.mean() * (1 - x.mean()) / len(x)):.4f} (n={len(x)})"


def at_most_alpha(runs: ArrayLike, alpha: float = ALPHA) -> bool:
    x = np.asarray(runs)
    return bool(x.mean() <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / len(x)))


def test_reported_interval_contains_its_estimate_and_the_running_intersection() -> None:
    # As seen in `modelramp demo`: an early look with a too-small variance puts the running intersection at
    # [+5.40, ...] and it stays there around a later estimate of +3.42.
    d = np.array([0.09, 0.0342, 0.0342, 0.0345])
    v = np.array([1.2e-4, 7e-5, 4e-5, 3e-5])
    old = run_sequence(d, v, MDE**2, ALPHA)
    new = confidence_sequence(d, v, MDE**2, ALPHA)
    assert old.lower[1] > d[1] and old.lower[1] < old.upper[1]  # the old report excludes its own estimate
    assert np.all((new.lower <= d) & (d <= new.upper))
    assert np.all((new.lower <= old.lower) | (old.lower > old.upper) | (old.lower > d))
    # Where the running intersection contains the estimate, nothing changes.
    d2 = np.array([0.05, 0.02, 0.035, 0.03])
    v2 = np.array([4e-4, 2e-4, 1e-4, 5e-5])
    a, b = run_sequence(d2, v2, MDE**2, ALPHA), confidence_sequence(d2, v2, MDE**2, ALPHA)
    assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)
    assert np.array_equal(a.p_value, b.p_value)


@pytest.mark.parametrize(("base", "effect"), [(0.88, 0.034), (0.88, -0.05), (0.97, 0.02), (0.97, -0.03)])
def test_coverage_from_the_first_look_with_50_model_requests_per_look(base: float, effect: float) -> None:
    """Stages 1% then 5%, 10 looks each of 5,000 requests: about 50 model-arm requests per early look."""
    rng = np.random.default_rng(int(1000 * base + 100 * effect) % 2**32)
    miss_new, outside = [], []
    for r in batches(2000, 500):
        c = independent_requests(rng, r, requests_per_look=5000, stages=(0.01, 0.05), base=base, effect=effect,
                                 looks_per_stage=10)
        new = stratified_difference(*c)
        seq = confidence_sequence(new.difference, new.variance, MDE**2, ALPHA)
        miss_new.append(((seq.lower > effect) | (seq.upper < effect)).any(-1))
        known = np.isfinite(new.variance)
        outside.append((known & ((seq.lower > new.difference) | (seq.upper < new.difference))).any(-1))
    miss_new_a, outside_a = np.concatenate(miss_new), np.concatenate(outside)
    assert at_most_alpha(miss_new_a), f"sequence misses the true difference at some look: {mc(miss_new_a)}"
    assert not outside_a.any(), "a reported interval excluded its own estimate"


@pytest.mark.parametrize(("d", "v", "tau2", "theta0"), [(0.01, 1e-4, 9e-4, 0.0), (-0.005, 2e-5, 1e-4, -0.01), (-0.03, 1e-4, 9e-4, 0.0)])
def test_one_sided_closed_form_is_the_half_normal_mixture(d: float, v: float, tau2: float, theta0: float) -> None:
    sd = np.sqrt(tau2)

    def integrand(t: float) -> float:
        ratio = norm.pdf(d, t, np.sqrt(v)) / norm.pdf(d, theta0, np.sqrt(v))
        return ratio * 2 * norm.pdf(t, theta0, sd)

    numeric, _ = quad(integrand, theta0, theta0 + 12 * sd, points=[max(d, theta0 + 1e-9)], limit=200)
    assert np.exp(log_likelihood_ratio(d, v, tau2, theta0)) == pytest.approx(numeric, rel=1e-7)
    # "less" is the mirror image.
    assert log_likelihood_ratio(-d, v, tau2, -theta0, "less") == pytest.approx(log_likelihood_ratio(d, v, tau2, theta0), rel=1e-12)


def test_one_sided_boundary_is_where_lambda_reaches_one_over_alpha() -> None:
    v = np.array([1e-3, 1e-4, 1e-5, 1e-6])
    z = boundary_z_one_sided(v, 1e-4, ALPHA)
    llr = log_likelihood_ratio(z * np.sqrt(v), v, 1e-4)
    assert llr == pytest.approx(np.full(4, np.log(1 / ALPHA)), rel=1e-9)
    # Narrower than the two-sided boundary at alpha, wider than the fixed-horizon one-sided 1.645.
    assert np.all(z < boundary_z(v, 1e-4, ALPHA)) and np.all(z > norm.isf(ALPHA))
    assert boundary_z_one_sided(np.nan, 1e-4, ALPHA) == np.inf


def test_tuned_tau2_gives_the_narrowest_boundary_at_the_planned_information() -> None:
    tau2 = tuned_tau2(MARGIN, ALPHA, 0.8)
    v_star = (MARGIN / (norm.isf(ALPHA) + norm.ppf(0.8))) ** 2
    best = float(boundary_z_one_sided(v_star, tau2, ALPHA))
    for factor in (0.5, 0.8, 1.25, 2.0):
        assert best < float(boundary_z_one_sided(v_star, tau2 * factor, ALPHA))


def brownian_estimates(rng: np.random.Generator, theta: float, info: np.ndarray, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Estimates d_k = X_k / I_k of a Brownian score X with drift theta, looks at information I_k."""
    steps = np.diff(np.concatenate([[0.0], info]))
    x = np.cumsum(rng.normal(theta * steps, np.sqrt(steps), (runs, len(info))), axis=1)
    return x / info, np.broadcast_to(1 / info, (runs, len(info)))


def test_non_inferiority_at_exactly_the_margin_is_shown_in_at_most_alpha_of_runs() -> None:
    """A model exactly `margin` worse, 200 looks: the one-sided sequence errs at most alpha."""
    rng = np.random.default_rng(21)
    v_star = (MARGIN / (norm.isf(ALPHA) + norm.ppf(0.8))) ** 2
    info = np.linspace(0.05, 5, 200) / v_star
    d, v = brownian_estimates(rng, -MARGIN, info, 4000)
    seq = one_sided_sequence(d, v, tuned_tau2(MARGIN, ALPHA, 0.8), ALPHA, -MARGIN, "greater")
    shown = (seq.p_value < ALPHA).any(-1)
    assert at_most_alpha(shown), f"false non-inferiority {mc(shown)}"
    assert np.array_equal(seq.p_value[:, -1] < ALPHA, (seq.bound > -MARGIN).any(-1))


def test_non_inferiority_on_counts_at_the_margin() -> None:
    """Counts, not Brownian motion: 50/50 split, the model 1 point worse, 30 looks of 4,000 requests."""
    rng = np.random.default_rng(22)
    tau2 = tuned_tau2(MARGIN, ALPHA, 0.8)
    shown = []
    for r in batches(2000, 500):
        c = independent_requests(rng, r, requests_per_look=4000, stages=(0.5,), looks_per_stage=30, effect=-MARGIN)
        est = stratified_difference(*c)
        shown.append((one_sided_sequence(est.difference, est.variance, tau2, ALPHA, -MARGIN).p_value < ALPHA).any(-1))
    x = np.concatenate(shown)
    assert at_most_alpha(x), f"false non-inferiority {mc(x)}"


def test_an_equal_model_shows_non_inferiority_sooner_one_sided_and_tuned() -> None:
    """A/A: information until the lower bound clears -margin, tuned one-sided vs two-sided at the MDE."""
    rng = np.random.default_rng(23)
    v_star = (MARGIN / (norm.isf(ALPHA) + norm.ppf(0.8))) ** 2
    info = np.linspace(0.1, 6, 60) / v_star
    d, v = brownian_estimates(rng, 0.0, info, 4000)
    one = one_sided_sequence(d, v, tuned_tau2(MARGIN, ALPHA, 0.8), ALPHA, -MARGIN).bound > -MARGIN
    two = run_sequence(d, v, MDE**2, ALPHA).lower > -MARGIN

    def first(hit: np.ndarray) -> np.ndarray:
        return np.where(hit.any(-1), info[hit.argmax(-1)], info[-1])

    t_one, t_two = first(one).mean(), first(two).mean()
    assert t_one < 0.8 * t_two, f"one-sided tuned {t_one * v_star:.2f} vs two-sided {t_two * v_star:.2f} planned informations"
