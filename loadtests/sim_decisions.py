"""The decision table of docs/statistics.md: whole experiments simulated through `analyze`, many runs each.

    python loadtests/sim_decisions.py [--runs 300] [--seed 2026] [--only aa,harm,...]

Each row is one scenario of `experiments.local.decision_sim` on the shipped example config
(20,000 customers scored about 33 times each over 30 hourly looks, every score of a customer
sharing its outcome, 64 analysis buckets) and prints the measured share with its Monte Carlo
standard error. `tests/experiments/live/test_analysis_simulation.py` runs short versions of the same.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.config import ExperimentConfig, load_config
from experiments.local.decision_sim import Run, Scenario, share, simulate_many
from experiments.local.demo import DemoSettings, demo_config
from experiments.local.stack import Ports

CONFIG = load_config(Path(__file__).resolve().parents[1] / "experiments" / "example_experiment.yaml")
MDE = CONFIG.criteria.minimum_detectable_effect
FIXED = ((1.959964 + 0.841621) / MDE) ** 2  # two-sided fixed-horizon information for one MDE at 80% power
AA = Scenario(final_looks=2)
DEMO = demo_config(CONFIG, DemoSettings(models=Path("models"), out=Path("reports")), Ports(), "127.0.0.1")


def _fmt(runs: list[Run], pick: Callable[[Run], bool]) -> str:
    m, se = share([pick(r) for r in runs])
    return f"{100 * m:.2f}% +- {100 * se:.2f}"


def row(name: str, scenario: Scenario, config: ExperimentConfig, runs: int, seed: int,
        report: Callable[[list[Run]], str]) -> None:
    start = time.perf_counter()
    out = simulate_many(scenario, config, runs, seed)
    print(f"| {name} | {runs} | {report(out)} | {time.perf_counter() - start:.0f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--only", default="", help="comma-separated row keys (aa, aa30, aa_req, guardrail, broken, "
                                                   "srm_aa, srm_broken, early, harm, plan, demo)")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    n, seed = args.runs, args.seed

    def want(key: str) -> bool:
        return not only or key in only

    print("| scenario | runs | measured | time |")
    print("| --- | --- | --- | --- |")
    if want("aa"):
        row("A/A, repeated units, all of a customer's scores share its outcome: false rollback (harm)", AA, CONFIG, n, seed,
            lambda out: _fmt(out, lambda r: r.decision == "rollback"))
    if want("aa30"):
        row("A/A, 30% of customers share one outcome: false rollback", AA.but(shared_outcome=0.3), CONFIG, n, seed + 1,
            lambda out: _fmt(out, lambda r: r.decision == "rollback"))
    if want("aa_req"):
        row("the same A/A traffic counted request-level (no buckets): false rollback / any SRM block",
            AA.but(buckets=None), CONFIG, n, seed + 2,
            lambda out: f"{_fmt(out, lambda r: r.decision == 'rollback')} / "
                        f"{_fmt(out, lambda r: 'sample_ratio_mismatch' in r.codes)}")
    if want("guardrail"):
        row("A/A with the model erring at exactly max_error_rate: false rollback on a guardrail",
            AA.but(error_rate=CONFIG.guardrails.max_error_rate), CONFIG, n, seed + 3,
            lambda out: _fmt(out, lambda r: r.code == "guardrail"))
    if want("broken"):
        row("model arm fails every request (no outcomes): rollback", Scenario(error_rate=1.0, fallback=False, looks=3),
            CONFIG, min(n, 100), seed + 4, lambda out: _fmt(out, lambda r: r.decision == "rollback"))
        row("model arm errs 30% and loses a fifth of its units: rollback", Scenario(error_rate=0.3, share_factor=0.8, looks=3),
            CONFIG, min(n, 100), seed + 5, lambda out: _fmt(out, lambda r: r.decision == "rollback"))
    if want("srm_aa"):
        row("A/A at 1% over 1,000 looks: sample ratio mismatch flagged", Scenario(looks=1000, closed_loop=False, every_look=False),
            CONFIG, n, seed + 6, lambda out: _fmt(out, lambda r: bool(r.last.srm and r.last.srm.mismatch)))
    if want("srm_broken"):
        row("model arm gets 0.80% of 1% (100,000 requests a look, one-off units): caught by look 2",
            Scenario(customers=200_000, scores=1.0, looks=2, share_factor=0.8, closed_loop=False, every_look=False),
            CONFIG, n, seed + 7, lambda out: _fmt(out, lambda r: bool(r.last.srm and r.last.srm.mismatch)))
    if want("early"):
        row("A/A: looks spent at 1% / 5% / 20% / 50% (the minimums allow no fewer than 5 / 3 / 3 / 3), share reaching 100%", AA, CONFIG, n, seed + 8,
            lambda out: " / ".join(f"{np.mean([r.stage_looks[i] for r in out if r.stage_looks[-1]]):.2f}" for i in range(4))
                        + f", {_fmt(out, lambda r: r.stage_looks[-1] > 0)}")
    if want("harm"):
        worse = Scenario(customers=400_000, scores=0.92, looks=40, effect=-MDE)

        def harm(out: list[Run]) -> str:
            info = [r.last.power.information for r in out if r.decision == "rollback" and r.last.power]
            exposed = np.mean([r.model_exposures for r in out])
            return (f"rollback {_fmt(out, lambda r: r.decision == 'rollback')}; information at rollback "
                    f"{np.mean(info) / FIXED:.2f} +- {np.std(info) / np.sqrt(len(info)) / FIXED:.2f} x fixed horizon; "
                    f"{exposed:.0f} model-arm requests served")
        row("model one MDE worse (one-off units, 9,200 requests an hour): rollback and its information", worse, CONFIG, n,
            seed + 9, harm)
    if want("plan"):
        for customers, scores, shared in ((400_000, 1.84, 0.0), (400_000, 1.84, 1.0), (200_000, 6.0, 1.0)):
            steady = Scenario(customers=customers, scores=scores, looks=80, effect=-MDE, closed_loop=False,
                              shared_outcome=shared)

            def plan(out: list[Run], horizon_h: float = steady.looks * steady.look_seconds / 3600) -> str:
                took = np.array([len(r.decisions) * 3600.0 if r.decision == "rollback" else np.inf for r in out])
                # The run by which the configured power's share had rolled back (inf: not within the horizon).
                empirical = float(np.sort(took)[max(0, int(np.ceil(CONFIG.criteria.power * len(took))) - 1)])
                # An estimate of "not reached at this traffic" (None) counts as infinitely long.
                said = [np.median([r.planned[k] if r.planned[k] is not None else np.inf for r in out if len(r.planned) > k])
                        for k in (1, 2, 4)]
                took_text = (f"rolled back by {empirical / 3600:.1f} h" if np.isfinite(empirical)
                             else f"not rolled back within the {horizon_h:.0f} h horizon")
                return (f"{100 * CONFIG.criteria.power:g}% {took_text}; the hold message said "
                        + " / ".join(f"{x / 3600:.1f} h" for x in said) + " at looks 2 / 3 / 5 (median)")
            row(f"time to decision at 1%, model one MDE worse, {customers:,} customers scored {scores:g} times over 80 h, "
                f"{100 * shared:g}% of them sharing one outcome",
                steady, CONFIG, n, seed + 10, plan)
    if want("demo"):
        # `modelramp demo`'s own experiment: 300 requests/s from 100,000 customers (each scored about
        # twice in 10 minutes, one outcome per customer), a look every 2 s, its stage minimums.
        demo = Scenario(customers=100_000, scores=1.8, looks=300, look_seconds=2.0, base=0.884, shared_outcome=1.0)
        stages = [f"{st.percent:g}%" for st in DEMO.ramp.stages]

        def ended(out: list[Run]) -> str:
            last = np.array([max(i for i, looks in enumerate(r.stage_looks) if looks) for r in out])
            where = ", ".join(f"{stages[i]} {100 * np.mean(last == i):.0f}%" for i in range(len(stages)))
            return (f"rollback {_fmt(out, lambda r: r.decision == 'rollback')}, ship {_fmt(out, lambda r: r.decision == 'ship')}; "
                    f"last stage: {where}")
        row("the demo, candidate 1 (4 points worse): where it ends", demo.but(effect=-0.04), DEMO, min(n, 100), seed + 11, ended)
        row("the demo, candidate 2 (4 points better): where it ends", demo.but(effect=0.04), DEMO, min(n, 100), seed + 12, ended)


if __name__ == "__main__":
    main()
