"""Seeded simulations: the sequential procedure keeps its error rates under peeking, ramping and drift.

The A/A part is vectorised numpy over thousands of experiments and calls the same functions the
analyzer uses (`stratified_difference`, `run_sequence`). The power part drives `analyze` itself
in a closed loop, acting on each decision like the ramp controller would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from experiments.config import ExperimentConfig, load_config
from experiments.live.analysis import analyze
from experiments.live.history import ArmCounts, History, Look
from experiments.local.decision_sim import Scenario, simulate_many
from experiments.stats.sequential import run_sequence
from experiments.stats.stratified import stratified_difference
from experiments.stats.two_proportions import two_proportion_ztest
from router.config import (
    ArmsSpec,
    LegacyArmSpec,
    LegacyHttpSpec,
    ModelArmSpec,
    TfServingGrpcSpec,
)

ALPHA = 0.05
MDE = 0.03
SHARES = np.array([0.01, 0.05, 0.20, 0.50, 1.00])  # the default ramp
LOOKS_PER_STAGE = 6


def simulate_aa(runs: int, units_per_look: int, base: np.ndarray, rng: np.random.Generator):
    """Both arms share the success rate `base[look]`; returns (sequential, naive) rejected at any look."""
    shares = np.repeat(SHARES, LOOKS_PER_STAGE)  # model share at each look
    looks = len(shares)
    stage = np.repeat(np.arange(len(SHARES)), LOOKS_PER_STAGE)
    nm = rng.binomial(units_per_look, shares, size=(runs, looks))
    nl = units_per_look - nm
    sm, sl = rng.binomial(nm, base), rng.binomial(nl, base)
    # Counts per (run, look, stratum) as known at each look: a stratum fills while its stage runs.
    in_stratum = stage[None, :, None] == np.arange(len(SHARES))[None, None, :]  # (1, look, stratum)
    known = np.arange(looks)[:, None] >= np.arange(looks)[None, :]  # look k knows increments up to k

    def by_stratum(x: np.ndarray) -> np.ndarray:
        # (run, look k, stratum) = sum over increments j <= k that fall in the stratum
        return np.einsum("rj,kj,js->rks", x, known, in_stratum[0].astype(x.dtype))

    est = stratified_difference(by_stratum(sm), by_stratum(nm), by_stratum(sl), by_stratum(nl))
    seq = run_sequence(est.difference, est.variance, MDE**2, ALPHA)
    sequential = (seq.p_value < ALPHA).any(axis=1)
    naive_p = two_proportion_ztest(sm.cumsum(1), nm.cumsum(1), sl.cumsum(1), nl.cumsum(1)).p_value
    naive = (np.nan_to_num(naive_p, nan=1.0) < ALPHA).any(axis=1)
    return sequential, naive


def mc_limit(rate: float, runs: int) -> float:
    """alpha plus three Monte Carlo standard errors."""
    return rate + 3 * np.sqrt(rate * (1 - rate) / runs)


def test_aa_peeking_at_every_look_of_every_stage() -> None:
    runs = 4000
    base = np.full(len(SHARES) * LOOKS_PER_STAGE, 0.85)
    sequential, naive = simulate_aa(runs, 20_000, base, np.random.default_rng(2026))
    # 30 looks across the 1/5/20/50/100% stages: the mixture SPRT stays at or below alpha ...
    assert sequential.mean() <= mc_limit(ALPHA, runs)
    # ... while testing the pooled counts with a fixed-horizon z-test at every look does not.
    assert naive.mean() > mc_limit(ALPHA, runs)
    assert naive.mean() > 2.5 * sequential.mean()


def test_aa_under_a_drifting_base_rate() -> None:
    runs = 4000
    base = np.linspace(0.75, 0.92, len(SHARES) * LOOKS_PER_STAGE)  # success climbs while the ramp goes on
    sequential, naive = simulate_aa(runs, 20_000, base, np.random.default_rng(7))
    assert sequential.mean() <= mc_limit(ALPHA, runs)
    # Pooling credits the drift to the model (Simpson) on top of peeking: nearly always "significant".
    assert naive.mean() > 0.5


def test_aa_with_rare_failures_and_a_small_model_arm() -> None:
    # 50 model-arm units per look at 1% and a 3% failure rate: early looks often see no failure at
    # all, where a plug-in normal test would call the model significantly better.
    runs = 4000
    sequential, _ = simulate_aa(runs, 5_000, np.full(len(SHARES) * LOOKS_PER_STAGE, 0.97), np.random.default_rng(5))
    assert sequential.mean() <= mc_limit(ALPHA, runs)


def config() -> ExperimentConfig:
    return ExperimentConfig(
        name="sim",
        salt="sim",
        model_name="m",
        arms=ArmsSpec(legacy=LegacyArmSpec(weight=0.99, backend=LegacyHttpSpec()),
              model=ModelArmSpec(weight=0.01, backend=TfServingGrpcSpec(model_name="m"))),
        criteria={"minimum_detectable_effect": MDE, "alpha": ALPHA, "non_inferiority_margin": 0.01},
    )


def closed_loop(effect: float, rng: np.random.Generator, units_per_hour: int, max_looks: int) -> str:
    """Run the analyzer hourly, applying ramp decisions, until ship or rollback (or the horizon)."""
    cfg = config()
    t0 = datetime(2026, 11, 23, tzinfo=timezone.utc)
    weights = {"legacy": 0.99, "model": 0.01}
    cum = {"legacy": [0, 0], "model": [0, 0]}
    looks: list[Look] = []
    for k in range(1, max_looks + 1):
        base = 0.80 + 0.05 * np.sin(k / 4)  # the base rate drifts over the day
        n_model = int(rng.binomial(units_per_hour, weights["model"]))
        for arm, n, p in (("model", n_model, base + effect), ("legacy", units_per_hour - n_model, base)):
            cum[arm][0] += n
            cum[arm][1] += int(rng.binomial(n, p))
        arms = {arm: ArmCounts(exposures=e, successes=s) for arm, (e, s) in cum.items()}
        looks.append(Look(t0 + timedelta(hours=k), dict(weights), arms))
        result = analyze(History("sim", tuple(looks)), cfg)
        if result.decision in ("ship", "rollback"):
            return result.decision
        if result.decision == "ramp":
            assert result.next_weights is not None
            weights = result.next_weights
    return "undecided"


# Sample sizes, chosen so the claim holds and stated honestly: 25,000 units an hour (250 in the
# model arm at the 1% stage), hourly looks, default stage minimums (1 h, 1,000 model-arm exposures).
# A harm of one MDE needs about 2,200 model-arm outcomes at 1% for 80% power of the sequential test
# (about 1,030 for a single fixed-horizon test): 12 looks give 3,000, and rollback comes in about
# 90% of runs (at 9 looks, 2,250 outcomes, it is about 77%). A gain of one MDE must pass all five
# stages' minimums (at least 9 hours here): 15 looks give shipping in about 95% of runs.
@pytest.mark.parametrize(("effect", "right", "max_looks"), [(-MDE, "rollback", 12), (+MDE, "ship", 15)])
def test_power_at_the_mde_through_analyze(effect: float, right: str, max_looks: int) -> None:
    rng = np.random.default_rng(11 if effect < 0 else 12)
    runs = 150
    decisions = [closed_loop(effect, rng, 25_000, max_looks) for _ in range(runs)]
    share_right = decisions.count(right) / runs
    assert share_right >= 0.80, f"{right} in only {share_right:.0%} of runs"
    wrong = "ship" if right == "rollback" else "rollback"
    assert decisions.count(wrong) == 0


# Said against simulated at look 3 (loadtests/sim_decisions.py, row plan, gives 100 runs of each):
# within 25% either way. With every score of a customer sharing its outcome the estimate plans on
# the looks there will be by then (each adds less information than the last): +19% at 100 runs of
# seed 2026, -18% at these 60 of seed 21 (the simulated 80th percentile itself moves by about 15%
# between seeds); planned on today's look spacing it said +27% at seed 2026.
@pytest.mark.parametrize(("shared", "low", "high"), [(0.0, -0.25, 0.25), (1.0, -0.25, 0.25)], ids=["one-off", "repeat"])
def test_the_hold_messages_time_estimate_is_what_simulation_shows(shared: float, low: float, high: float) -> None:
    """At a steady 1% (9,200 requests an hour), a model one MDE worse: the time the analysis says the
    harm test needs for the configured power, read at look 3, against the time by which that share of
    simulated runs has rolled back. An estimate of "may never be reached" counts as infinitely long."""
    cfg = load_config(Path(__file__).parents[3] / "experiments" / "example_experiment.yaml")
    steady = Scenario(customers=400_000, scores=1.84, looks=80, effect=-MDE, closed_loop=False, shared_outcome=shared)
    out = simulate_many(steady, cfg, 60, seed=21)
    took = np.sort([len(r.decisions) * 3600.0 if r.decision == "rollback" else np.inf for r in out])
    empirical = float(took[int(np.ceil(cfg.criteria.power * len(took))) - 1])
    said = float(np.median([r.planned[2] if r.planned[2] is not None else np.inf for r in out if len(r.planned) > 2]))
    assert low <= said / empirical - 1 <= high, f"said {said / 3600:.1f} h, simulation {empirical / 3600:.1f} h"
