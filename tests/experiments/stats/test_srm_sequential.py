"""Sequential SRM (Lindon & Malek's Dirichlet-multinomial): pinned to scipy's distributions; false
alarms within 0.1% over whole experiments of many looks, on requests and on repeated units; a real
mismatch caught within two looks; outcomes arriving at the same rate in both arms."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import ArrayLike
from scipy.stats import chi2, dirichlet_multinomial, multinomial

from experiments.stats.srm_sequential import (
    CONCENTRATION,
    effective_counts,
    log_bayes_factor,
    outcome_rate_sequence,
    sequential_srm,
)
from tests.experiments.stats.units import batches, repeated_units

THRESHOLD = 0.001  # criteria.srm_p_value
RAMP = np.array([[0.99, 0.01], [0.95, 0.05], [0.80, 0.20], [0.50, 0.50]])  # (legacy, model) per stage


def mc(runs: ArrayLike) -> str:
    x = np.asarray(runs)
    return f"{x.mean():.4f} +- {np.sqrt(x.mean() * (1 - x.mean()) / len(x)):.4f} (n={len(x)})"


def within(runs: ArrayLike, level: float) -> bool:
    x = np.asarray(runs)
    return bool(x.mean() <= level + 3 * np.sqrt(level * (1 - level) / len(x)))


@pytest.mark.parametrize(("counts", "weights"), [([9850, 150], [0.99, 0.01]), ([9901, 99], [0.99, 0.01]),
                                                 ([510, 490], [0.5, 0.5]), ([70, 20, 10], [0.6, 0.3, 0.1])])
def test_bayes_factor_is_dirichlet_multinomial_over_multinomial(counts: list[int], weights: list[float]) -> None:
    c, w = np.array(counts), np.array(weights)
    theirs = dirichlet_multinomial.logpmf(c, CONCENTRATION * w, c.sum()) - multinomial.logpmf(c, c.sum(), w)
    assert log_bayes_factor(c, w) == pytest.approx(theirs, rel=1e-9)


def test_zero_weight_arms_and_no_counts() -> None:
    assert log_bayes_factor([100, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-9)
    assert log_bayes_factor([100, 3], [1.0, 0.0]) == np.inf
    assert log_bayes_factor([0, 0], [0.99, 0.01]) == 0.0


def aa_requests(rng: np.random.Generator, runs: int, looks: int, per_look: int, weights: np.ndarray) -> np.ndarray:
    """Cumulative (legacy, model) request counts of independent requests, shaped (runs, looks, 1, 2)."""
    model = np.cumsum(rng.binomial(per_look, weights[1], (runs, looks)), axis=1)
    total = per_look * np.arange(1, looks + 1)
    return np.stack([total - model, model], axis=-1)[:, :, None, :]


def aa_alarms(runs: int, looks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A/A at 1%, looks of 1,000 requests: ever below the threshold, sequential and chi-square re-run."""
    rng = np.random.default_rng(seed)
    w = np.array([0.99, 0.01])
    ours, peeking = [], []
    for r in batches(runs, 500):
        counts = aa_requests(rng, r, looks, 1000, w)
        ours.append((sequential_srm(counts, w[None]).p_value < THRESHOLD).any(-1))
        expected = counts.sum(-1, keepdims=True) * w
        stat = ((counts - expected) ** 2 / expected).sum(-1)[..., 0]
        peeking.append((chi2.sf(stat, 1) < THRESHOLD).any(-1))
    return np.concatenate(ours), np.concatenate(peeking)


@pytest.mark.parametrize(
    ("runs", "looks"), [(3000, 300), pytest.param(10_000, 3000, marks=pytest.mark.slow)], ids=["fast", "long"]
)
def test_aa_on_requests_over_many_looks_stays_within_one_in_a_thousand(runs: int, looks: int) -> None:
    ours, peeking = aa_alarms(runs, looks, 41)
    assert within(ours, THRESHOLD), f"sequential false alarms over {looks} looks {mc(ours)}"
    assert peeking.mean() > 3 * THRESHOLD, f"chi-square at every look {mc(peeking)}"


def test_a_mismatch_of_080_against_1_percent_is_caught_within_two_looks() -> None:
    """Looks of 100,000 requests: the example config's 1% stage (1,000 model-arm requests per hour)."""
    rng = np.random.default_rng(42)
    w = np.array([0.99, 0.01])
    counts = aa_requests(rng, 4000, 2, 100_000, np.array([0.992, 0.008]))
    caught = sequential_srm(counts, w[None], stages=5).p_value[:, -1] < THRESHOLD
    assert caught.mean() >= 0.99, f"caught by look 2 in {mc(caught)}"
    # The same requests hashed into 64 buckets (one request per unit): design effect about 1, same verdict.
    increments = np.diff(counts[:1000], axis=1, prepend=0)
    per_bucket = np.cumsum(rng.multinomial(increments, np.full(64, 1 / 64)), axis=1)
    caught_b = sequential_srm(effective_counts(per_bucket, w), w[None], stages=5).p_value[:, -1] < THRESHOLD
    assert caught_b.mean() >= 0.98, f"by buckets, caught by look 2 in {mc(caught_b)}"


def unit_srm(runs: int, seed: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Whole ramps on 20,000 repeated customers: p-values at each look on requests and on units."""
    rng = np.random.default_rng(seed)
    req, unit = [], []
    for r in batches(runs, 100):
        c = repeated_units(rng, r, **kw)
        exposures = np.stack([c.n_legacy, c.n_model], axis=-2)  # (runs, looks, periods, arms, buckets)
        req.append(sequential_srm(exposures.sum(-1), RAMP, stages=5).p_value)
        unit.append(sequential_srm(effective_counts(exposures, RAMP[None, None]), RAMP, stages=5).p_value)
    return np.concatenate(req), np.concatenate(unit)


def test_heavy_users_do_not_fake_a_mismatch() -> None:
    req, unit = unit_srm(2000, 43, heavy_shape=0.5)
    on_requests, on_units = (req < THRESHOLD).any(-1), (unit < THRESHOLD).any(-1)
    assert on_requests.mean() > 0.3, f"request counts: false alarms {mc(on_requests)}"
    assert within(on_units, THRESHOLD), f"unit-equivalent counts: false alarms {mc(on_units)}"


def test_a_broken_assignment_on_units_is_caught_at_the_first_look() -> None:
    """Half the model arm's customers sent to legacy: 100 of 200 expected at 1%, caught on units."""
    _, unit = unit_srm(500, 44, share_factor=0.5)
    caught = unit[:, 0] < THRESHOLD
    assert caught.mean() >= 0.95, f"caught at look 1 in {mc(caught)}"


def test_outcomes_arriving_at_the_same_rate() -> None:
    rng = np.random.default_rng(45)
    runs, looks = 2000, 50
    e_m = np.cumsum(rng.poisson(250, (runs, looks)), axis=1)
    e_l = np.cumsum(rng.poisson(24_750, (runs, looks)), axis=1)

    def outcomes(e: np.ndarray, rate: float) -> np.ndarray:
        inc = np.diff(e, axis=1, prepend=0)
        return np.cumsum(rng.binomial(inc, rate), axis=1)

    shape = (runs, looks, 1, 1)
    same = outcome_rate_sequence(outcomes(e_m, 0.9).reshape(shape), e_m.reshape(shape),
                                 outcomes(e_l, 0.9).reshape(shape), e_l.reshape(shape), 0.05**2, THRESHOLD)
    lost = outcome_rate_sequence(outcomes(e_m, 0.8).reshape(shape), e_m.reshape(shape),
                                 outcomes(e_l, 0.9).reshape(shape), e_l.reshape(shape), 0.05**2, THRESHOLD)
    false_alarm, caught = (same < THRESHOLD).any(-1), lost[:, 4] < THRESHOLD
    assert within(false_alarm, THRESHOLD), f"A/A outcome-rate alarms {mc(false_alarm)}"
    assert caught.mean() >= 0.95, f"a model arm losing 10 points of outcomes caught by look 5 in {mc(caught)}"
