"""Seeded simulations of whole experiments through `analyze`: repeated units, bucketed counts, a closed loop.

Customers are randomised, not requests, as the router does: each has an assignment position u
(model arm while u < the stage's model weight, so a ramp keeps the model's customers and moves
legacy ones over), an analysis bucket drawn independently of u (router/buckets.py), an activity
(scores per look), and, for a share `shared_outcome` of them, one outcome shared by all its
scores (a customer churns or not): under legacy v < base, under the model v < base + effect for
one uniform v, the same customer's two potential outcomes. The other customers' scores each
draw their own outcome. Scores arrive as Poisson counts per look; the sum of the Poisson counts
of a group of customers is Poisson with the summed rate, so counts are drawn per (bucket, arm,
outcome) group, whose composition changes only when the weights do.

At each look the simulated routers' cumulative counts (per arm and bucket) become a `Look`, the
analyzer decides on the whole history, and the loop acts as the ramp controller would: new
weights on ramp, the end on ship or rollback. `tests/experiments/live/test_analysis_simulation.py`
runs short versions, `loadtests/sim_decisions.py` the long ones (docs/statistics.md has the tables).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import numpy as np

from experiments.config import ExperimentConfig
from experiments.live.analysis import Analysis, analyze
from experiments.live.history import ArmCounts, Buckets, History, Look

T0 = datetime(2026, 11, 23, tzinfo=timezone.utc)
_ARMS = ("legacy", "model")


@dataclass(frozen=True)
class Scenario:
    """One kind of experiment: traffic, outcomes, the model's effect and faults, and how it is counted."""

    customers: int = 20_000
    scores: float = 33.0  # scores per customer over `looks` looks, on average
    looks: int = 30  # the horizon: at most this many looks
    look_seconds: float = 3600.0
    base: float = 0.88  # legacy success rate
    effect: float = 0.0  # model - legacy success rate
    shared_outcome: float = 1.0  # share of customers whose scores all share one outcome
    heavy_shape: float | None = None  # gamma shape of customers' activity (None: all equally active)
    error_rate: float = 0.0  # model-arm requests whose backend fails (counted as errors)
    fallback: bool = True  # failed model requests answered by legacy (counted as fallbacks; their outcomes are
    # reported, the customer's own); False: the client gets an error and reports no outcome
    share_factor: float = 1.0  # the model arm gets this fraction of its units (< 1: a broken assignment)
    buckets: int | None = 64  # None: the history carries no buckets (request-level analysis)
    closed_loop: bool = True  # act on ramp decisions; False: stay at the first stage for every look
    final_looks: int | None = None  # end the run after this many looks at the final stage (None: at the horizon)
    every_look: bool = True  # analyze at every look; False: only at the horizon (fixed weights, for statistics
    # that are running extremes over looks, such as the sequential SRM p-value)

    def but(self, **changes: object) -> Scenario:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Run:
    """What one simulated experiment did."""

    decision: str  # ship, rollback, or undecided at the horizon
    code: str  # the reason code of the last analysis
    decisions: tuple[str, ...]  # per look
    codes: tuple[str, ...]
    stage_looks: tuple[int, ...]  # looks spent at each stage, in order
    model_exposures: int  # model-arm requests served when the run ended (users exposed to the model)
    last: Analysis
    planned: tuple[float | None, ...] = ()  # per look: seconds from the start to the information the pending test needs


class _Customers:
    """One run's customers: positions, buckets, activity and outcome draws, and the group rates per weight."""

    def __init__(self, s: Scenario, rng: np.random.Generator):
        self.s, self.rng = s, rng
        self.b = s.buckets or 1
        self.u = rng.random(s.customers)
        self.v = rng.random(s.customers)
        self.bucket = rng.integers(0, self.b, s.customers)
        self.shared = rng.random(s.customers) < s.shared_outcome
        act = rng.gamma(s.heavy_shape, 1 / s.heavy_shape, s.customers) if s.heavy_shape else np.ones(s.customers)
        self.rate = act * s.scores / s.looks
        self._cache: dict[float, np.ndarray] = {}

    def rates(self, model_weight: float) -> np.ndarray:
        """Expected scores per look per (bucket, arm, kind): kind 0/1 a shared failure/success, 2 independent."""
        if model_weight not in self._cache:
            s = self.s
            arm = (self.u < model_weight * s.share_factor).astype(int)
            y = (self.v < s.base + s.effect * arm).astype(int)
            kind = np.where(self.shared, y, 2)
            key = (self.bucket * 2 + arm) * 3 + kind
            self._cache[model_weight] = np.bincount(key, weights=self.rate, minlength=self.b * 6).reshape(self.b, 2, 3)
        return self._cache[model_weight]


def simulate(scenario: Scenario, config: ExperimentConfig, rng: np.random.Generator) -> Run:
    """One experiment, look by look through `analyze`, until ship, rollback or the horizon."""
    s = scenario
    people = _Customers(s, rng)
    b = people.b
    weights = dict(config.weights)
    stage_pct = [st.percent for st in config.ramp.stages]
    cum = np.zeros((2, 5, b), dtype=np.int64)  # (arm, [exposures, successes, failures, errors, fallbacks], bucket)
    looks: list[Look] = []
    decisions: list[str] = []
    codes: list[str] = []
    planned: list[float | None] = []
    per_stage = [0] * len(stage_pct)
    result: Analysis | None = None
    for k in range(1, s.looks + 1):
        per_stage[_stage(stage_pct, weights["model"])] += 1
        n = rng.poisson(people.rates(weights["model"]))  # (bucket, arm, kind)
        errors = np.zeros_like(n)
        errors[:, 1] = rng.binomial(n[:, 1], s.error_rate) if s.error_rate else 0
        answered = n if s.fallback else n - errors
        p = np.array([s.base, s.base + s.effect])
        indep_success = rng.binomial(answered[:, :, 2], p[None, :])
        successes = answered[:, :, 1] + indep_success
        failures = answered[:, :, 0] + answered[:, :, 2] - indep_success
        cum[:, 0] += n.sum(axis=2).T
        cum[:, 1] += successes.T
        cum[:, 2] += failures.T
        cum[:, 3] += errors.sum(axis=2).T
        if s.fallback:
            cum[:, 4] += errors.sum(axis=2).T
        looks.append(Look(T0 + timedelta(seconds=k * s.look_seconds), dict(weights), _arms(cum, s.buckets)))
        final_stage = _stage(stage_pct, weights["model"]) == len(stage_pct) - 1
        last_look = k == s.looks or (final_stage and s.final_looks is not None and per_stage[-1] >= s.final_looks)
        if not (s.every_look or last_look):
            continue
        result = analyze(History(config.name, tuple(looks)), config)
        decisions.append(result.decision)
        codes.append(result.code)
        wait = result.power.seconds_to_needed if result.power is not None else None
        planned.append(None if wait is None else k * s.look_seconds + wait)
        if result.decision in ("ship", "rollback") or last_look:
            break
        if result.decision == "ramp" and s.closed_loop and result.next_weights is not None:
            weights = dict(result.next_weights)
    assert result is not None
    final = result.decision if result.decision in ("ship", "rollback") else "undecided"
    return Run(final, result.code, tuple(decisions), tuple(codes), tuple(per_stage), int(cum[1, 0].sum()), result,
               tuple(planned))


def _stage(percents: list[float], model_weight: float) -> int:
    return int(np.argmin([abs(p / 100 - model_weight) for p in percents]))


def _arms(cum: np.ndarray, buckets: int | None) -> dict[str, ArmCounts]:
    out = {}
    for a, arm in enumerate(_ARMS):
        e, sc, f, err, fb = (int(x) for x in cum[a].sum(axis=1))
        by_bucket = (Buckets(tuple(int(x) for x in cum[a, 0]), tuple(int(x) for x in cum[a, 1]),
                             tuple(int(x) for x in cum[a, 2])) if buckets else None)
        out[arm] = ArmCounts(e, sc, f, err, fb, buckets=by_bucket)
    return out


def simulate_many(scenario: Scenario, config: ExperimentConfig, runs: int, seed: int) -> list[Run]:
    """`runs` independent experiments from one seed."""
    rng = np.random.default_rng(seed)
    return [simulate(scenario, config, rng) for _ in range(runs)]


def share(flags: list[bool] | np.ndarray) -> tuple[float, float]:
    """A share and its Monte Carlo standard error."""
    x = np.asarray(flags, dtype=float)
    m = float(x.mean()) if len(x) else float("nan")
    return m, float(np.sqrt(m * (1 - m) / len(x))) if len(x) else float("nan")
