"""Seeded simulations of whole experiments through the public `analyze`, on bucketed histories.

Each test is one row of the decision table in docs/statistics.md, at a size that runs in
seconds; `python loadtests/sim_decisions.py` runs the same scenarios with many more runs. The
traffic is that of the shipped example config: 20,000 customers scored about 33 times each over
30 hourly looks, every score of a customer sharing its outcome, counted in 64 analysis buckets
(`experiments.local.decision_sim`). Shares are checked against alpha plus three Monte Carlo
standard errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from experiments.config import ExperimentConfig, load_config
from experiments.local.decision_sim import Scenario, simulate_many

CONFIG: ExperimentConfig = load_config(Path(__file__).parents[3] / "experiments" / "example_experiment.yaml")
ALPHA = CONFIG.criteria.alpha
AA = Scenario(final_looks=2)  # stops two looks into the final stage (no legacy traffic is left there)


def at_most(share: float, level: float, runs: int) -> bool:
    return share <= level + 3 * np.sqrt(level * (1 - level) / runs)


def test_aa_on_repeated_units_rarely_rolls_back_and_ramps_without_waiting() -> None:
    """A/A, with the model arm erring at exactly the error guardrail's limit: neither harm nor the
    guardrail rolls back more often than alpha, and the early stages are left as soon as their
    minimums are met (non-inferiority is asked only to ship)."""
    runs = 80
    out = simulate_many(AA.but(error_rate=CONFIG.guardrails.max_error_rate), CONFIG, runs, seed=15)
    harm = np.mean([r.code == "harm" for r in out])
    guardrail = np.mean([r.code == "guardrail" for r in out])
    assert at_most(harm, ALPHA, runs), f"false rollbacks on harm {harm:.3f}"
    assert at_most(guardrail, ALPHA, runs), f"false rollbacks on the error guardrail {guardrail:.3f}"
    reached = [r for r in out if r.stage_looks[-1] > 0]
    assert len(reached) / runs >= 0.85
    # 1,000 model-arm exposures at about 220 an hour take five looks at 1%; 2,000 at 1,100 two at 5%, ...
    looks_at = np.array([r.stage_looks[:4] for r in reached]).mean(axis=0)
    assert looks_at[0] <= 5.5 and all(looks_at[1:] <= 3.5), looks_at
    assert all(r.last.counted_by == "unit" and r.last.buckets == 64 for r in out)
    assert all("by unit (64 buckets)" in r.last.reason for r in out)


def test_request_level_counts_of_the_same_traffic_are_overconfident() -> None:
    """The same A/A traffic without buckets: requests taken for independent units roll back or block
    far more often than alpha (what the buckets fix)."""
    runs = 40
    out = simulate_many(AA.but(buckets=None), CONFIG, runs, seed=16)
    wrong = np.mean([r.code in ("harm", "sample_ratio_mismatch") or "sample_ratio_mismatch" in r.codes for r in out])
    assert wrong > 3 * ALPHA, f"request-level wrong decisions {wrong:.3f}"
    assert all("request-level (no buckets)" in r.last.reason for r in out if r.last.difference is not None)


@pytest.mark.parametrize(("scenario", "most_looks"), [
    (Scenario(error_rate=1.0, fallback=False, looks=3), 1),  # every model request fails: no outcomes, still a rollback
    (Scenario(error_rate=0.3, share_factor=0.8, looks=3), 1),  # errs 30% and loses a fifth of its units
])
def test_a_broken_model_arm_is_rolled_back_not_blocked(scenario: Scenario, most_looks: int) -> None:
    out = simulate_many(scenario, CONFIG, 10, seed=17)
    assert all(r.decision == "rollback" and r.code == "guardrail" for r in out), [r.last.reason for r in out]
    assert all(len(r.decisions) <= most_looks for r in out)


def test_sequential_srm_over_many_looks_and_a_real_mismatch() -> None:
    """A/A at 1% over 200 looks rarely flags a mismatch; 0.80% against 1% on 100,000 requests a look
    (one-off units) is caught within two looks."""
    runs = 60
    aa = simulate_many(Scenario(looks=200, closed_loop=False, every_look=False), CONFIG, runs, seed=18)
    flagged = np.mean([r.last.srm is not None and r.last.srm.p_value < CONFIG.criteria.srm_p_value for r in aa])
    assert flagged <= 2 / runs, f"false mismatches {flagged:.3f}"
    broken = Scenario(customers=200_000, scores=1.0, looks=2, share_factor=0.8, closed_loop=False, every_look=False)
    caught = simulate_many(broken, CONFIG, 20, seed=19)
    assert np.mean([r.last.srm is not None and r.last.srm.mismatch for r in caught]) >= 0.9


def test_a_model_one_mde_worse_is_rolled_back_within_13_times_the_fixed_horizon_information() -> None:
    """One-off units, 9,200 requests an hour: a tenth of the fixed-horizon information per look at 1%."""
    runs = 40
    worse = Scenario(customers=400_000, scores=0.92, looks=40, effect=-CONFIG.criteria.minimum_detectable_effect)
    out = simulate_many(worse, CONFIG, runs, seed=20)
    assert np.mean([r.decision == "rollback" for r in out]) >= 0.95
    mde = CONFIG.criteria.minimum_detectable_effect
    fixed = ((1.959964 + 0.841621) / mde) ** 2  # two-sided fixed-horizon information for one MDE at 80% power
    info = np.mean([r.last.power.information for r in out if r.decision == "rollback" and r.last.power])
    assert info / fixed <= 1.3, f"information at rollback {info / fixed:.2f} x fixed horizon"


def test_the_demo_catches_its_worse_candidate_in_the_early_stages() -> None:
    """`modelramp demo --candidate 1`'s own experiment (its stage minimums, a look every 2 s, 100,000
    customers scored about twice): the model 4 points worse is rolled back in every run, never after
    20%. With the demo's earlier sizing (900 exposures at 1%, 100 at 5%, 200 later) 13% of such runs
    reached 50%, and this seed's eight runs include one; `sim_decisions.py --only demo` has the table."""
    from experiments.local.demo import DemoSettings, demo_config
    from experiments.local.stack import Ports

    demo = demo_config(CONFIG, DemoSettings(models=Path("models"), out=Path("reports")), Ports(), "127.0.0.1")
    worse = Scenario(customers=100_000, scores=1.8, looks=300, look_seconds=2.0, base=0.884, effect=-0.04)
    out = simulate_many(worse, demo, 8, seed=21)
    last_stage = [max(i for i, looks in enumerate(r.stage_looks) if looks) for r in out]
    assert all(r.decision == "rollback" and r.code == "harm" for r in out), [r.code for r in out]
    assert max(last_stage) <= 2, last_stage
