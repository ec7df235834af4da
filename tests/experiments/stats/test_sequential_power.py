"""Power and time to decision of the mixture boundaries: recursive integration against seeded
simulations of the score process and of counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from experiments.stats.clustered import stratified_difference
from experiments.stats.one_sided import one_sided_sequence, tuned_tau2
from experiments.stats.sequential import run_sequence
from experiments.stats.sequential_power import boundary, crossing_probabilities, looks_schedule, time_to_decision
from tests.experiments.stats.units import batches, independent_requests

ALPHA, MDE, MARGIN, POWER = 0.05, 0.03, 0.01, 0.8
N_FIXED = (norm.isf(ALPHA / 2) + norm.ppf(POWER)) ** 2 / MDE**2  # fixed-horizon information for one MDE


def score_paths(rng: np.random.Generator, effect: float, info: np.ndarray, runs: int) -> np.ndarray:
    steps = np.diff(np.concatenate([[0.0], info]))
    return np.cumsum(rng.normal(effect * steps, np.sqrt(steps), (runs, len(info))), axis=1)


def first_crossing(hit: np.ndarray) -> np.ndarray:
    """Index of the first look that crosses, len(looks) where none does."""
    return np.where(hit.any(-1), hit.argmax(-1), hit.shape[-1])


@pytest.mark.parametrize(("effect", "tau2", "sides"), [(-MDE, MDE**2, 2), (0.0, MDE**2, 2), (MARGIN, "tuned", 1), (0.02, MDE**2, 1)])
def test_crossing_probabilities_match_simulation(effect: float, tau2: float | str, sides: int) -> None:
    t2 = tuned_tau2(MARGIN, ALPHA, POWER) if tau2 == "tuned" else float(tau2)
    info = looks_schedule(N_FIXED / 10, 40)
    ours = crossing_probabilities(effect, info, t2, ALPHA, sides)
    x = score_paths(np.random.default_rng(51), effect, info, 20_000)
    g = boundary(info, t2, ALPHA, sides)
    up, lo = x >= g, (x <= -g) if sides == 2 else np.zeros_like(x, bool)
    k = first_crossing(up | lo)
    hit_up = np.bincount(k[(k < len(info)) & up[np.arange(len(k)), np.minimum(k, len(info) - 1)]], minlength=len(info) + 1)
    hit_lo = np.bincount(k[(k < len(info)) & lo[np.arange(len(k)), np.minimum(k, len(info) - 1)]], minlength=len(info) + 1)
    for name, theirs, mine in (("upper", hit_up[:-1] / len(k), ours.upper), ("lower", hit_lo[:-1] / len(k), ours.lower)):
        cum_sim, cum_ours = np.cumsum(theirs), np.cumsum(mine)
        se = np.sqrt(np.maximum(cum_ours * (1 - cum_ours), 1e-6) / len(k))
        worst = np.max(np.abs(cum_sim - cum_ours) / se)
        assert worst < 4.5, f"{name}: cumulative crossing off by {worst:.1f} Monte Carlo errors"
    if effect == 0:
        assert ours.upper.sum() + ours.lower.sum() <= ALPHA


def test_rollback_of_one_mde_harm_needs_at_most_13_times_the_fixed_horizon_information() -> None:
    info = looks_schedule(N_FIXED / 10, 60)  # a look every tenth of the fixed-horizon sample
    two = time_to_decision(-MDE, info, MDE**2, ALPHA, POWER, sides=2, side="lower")
    one = time_to_decision(MDE, info, MDE**2, ALPHA, POWER, sides=1)  # harm, one-sided ("less" mirrored)
    assert two.expected_information / N_FIXED <= 1.3
    assert one.expected_information < two.expected_information
    x = score_paths(np.random.default_rng(52), -MDE, info, 20_000)
    k = first_crossing(x <= -boundary(info, MDE**2, ALPHA, 2))
    sim = np.where(k < len(info), info[np.minimum(k, len(info) - 1)], info[-1])
    err = sim.std() / np.sqrt(len(sim))
    assert abs(sim.mean() - two.expected_information) < 4 * err + 0.01 * sim.mean(), (
        f"expected information {two.expected_information:.0f}, simulated {sim.mean():.0f} +- {err:.0f}")


@pytest.mark.parametrize(("effect", "share"), [(-MDE, 0.5), (-MDE, 0.2), (-0.05, 0.05)])
def test_time_to_rollback_on_counts_within_25_percent(effect: float, share: float) -> None:
    """Counts at a fixed split, looks of 500 requests in 16 buckets: information until the sequence
    lies below 0, simulated with the clustered variance, against the predicted expectation."""
    base, per_look, looks = 0.88, 500, 60
    pm, pl = base + effect, base
    n_m = per_look * share * np.arange(1, looks + 1)
    n_l = per_look * (1 - share) * np.arange(1, looks + 1)
    info = 1 / (pm * (1 - pm) / n_m + pl * (1 - pl) / n_l)
    predicted = time_to_decision(effect, info, MDE**2, ALPHA, POWER, sides=2, side="lower")
    rng = np.random.default_rng(int(-effect * 1000 + share * 100))
    stops = []
    for r in batches(1000, 500):
        c = independent_requests(rng, r, requests_per_look=per_look, stages=(share,), looks_per_stage=looks,
                                 base=base, effect=effect, buckets=16)
        est = stratified_difference(*c)
        k = first_crossing(run_sequence(est.difference, est.variance, MDE**2, ALPHA).upper < 0)
        stops.append(info[np.minimum(k, looks - 1)])
    sim = np.concatenate(stops)
    ratio = sim.mean() / predicted.expected_information
    assert 0.75 <= ratio <= 1.25, (
        f"simulated {sim.mean():.0f} +- {sim.std() / np.sqrt(len(sim)):.0f} vs predicted "
        f"{predicted.expected_information:.0f} information (ratio {ratio:.3f})")


def test_time_to_non_inferiority_of_an_equal_model() -> None:
    """A/A: the one-sided sequence tuned to the margin; simulated information to clear -margin."""
    t2 = tuned_tau2(MARGIN, ALPHA, POWER)
    v_star = (MARGIN / (norm.isf(ALPHA) + norm.ppf(POWER))) ** 2
    info = looks_schedule(0.1 / v_star, 80)
    predicted = time_to_decision(MARGIN, info, t2, ALPHA, POWER, sides=1)
    x = score_paths(np.random.default_rng(53), 0.0, info, 10_000)
    d, v = x / info, np.broadcast_to(1 / info, x.shape)
    k = first_crossing(one_sided_sequence(d, v, t2, ALPHA, -MARGIN).p_value < ALPHA)
    sim = info[np.minimum(k, len(info) - 1)]
    ratio = sim.mean() / predicted.expected_information
    assert 0.95 <= ratio <= 1.05, f"ratio {ratio:.3f} (Monte Carlo error {sim.std() / np.sqrt(len(sim)) / sim.mean():.3f})"
    assert predicted.power >= 0.99
