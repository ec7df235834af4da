"""The analyzer's core: one pure function from an experiment's history and config to a decision.

`analyze(history, config)` is what the CLI, the ramp controller and the HTTP endpoint call; users
can call it to replay or simulate any experiment. The rules, checked in this order:

1. blocked: no looks, a counter reset, or weights that are no configured stage: the counts
   cannot be put together at all. A model weight of 0 after looks with traffic to the model is
   the rollback still in force (`rollback`, code `rolled_back`), not missing data: a controller
   that keeps running after it must not look blocked.
2. rollback: a model-arm guardrail is breached (an anytime-valid test that the error or fallback
   rate is above its limit, within the stage, or the p99 latency over its limit), or the model is
   significantly worse than legacy (the one-sided harm sequence's upper bound, or the two-sided
   confidence sequence's, lies below 0). These come before anything that can block: an arm whose
   every request fails has no outcomes, and that is a breach, not missing data.
3. blocked: an arm without outcomes, a sample ratio mismatch (sequential, on units), or outcomes
   arriving at different rates in the two arms: no comparison can be trusted.
4. ramp: at an early stage, once the stage's minimum duration and model-arm sample are met and
   no significant harm is shown. ship: at the final stage, once its minimums are met and the
   model is non-inferior (a one-sided sequence tuned to the margin: its lower bound above
   -`criteria.non_inferiority_margin`).
5. hold otherwise, saying what is missing and how long it should take at the measured rate.

Counting by unit: when every look carries per-bucket counts (analysis buckets, router/buckets.py),
buckets are the independent observations (`stats.clustered`), so one unit's repeated requests are
not taken for independent evidence; without them the analysis is request-level and says so in its
reason. The difference is the Mantel-Haenszel combination over periods of constant weights with
its cluster-robust variance, judged by always-valid sequences, so looking at every look and
ramping mid-experiment keep the error rates at alpha. See docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy.special import ndtri

from experiments.config import ExperimentConfig
from experiments.live.history import CounterResetError, History, Period
from experiments.stats import power as pw
from experiments.stats.clustered import period_counts, stratified_difference
from experiments.stats.guardrail_sequence import guardrail_sequence
from experiments.stats.one_sided import one_sided_sequence, tuned_tau2
from experiments.stats.proportion import p_value_from_z, proportion_confint
from experiments.stats.sequential import confidence_sequence
from experiments.stats.sequential_power import crossing_probabilities
from experiments.stats.srm import sample_ratio_mismatch
from experiments.stats.srm_sequential import effective_counts, outcome_rate_sequence, sequential_srm
from experiments.stats.two_proportions import two_proportion_ztest

Decision = Literal["hold", "ramp", "ship", "rollback", "blocked"]
DECISIONS: tuple[Decision, ...] = ("hold", "ramp", "ship", "rollback", "blocked")
#: Reason codes (the `code` field and the `modelramp_decision_reason` metric's label), one per rule;
#: `controller_hold` is the ramp controller's own hold (source unreadable, router restart, lease lost);
#: `warming_up` its hold while a new version's TF Serving pods start (experiments.live.warmup).
REASON_CODES = ("no_looks", "counter_reset", "unknown_stage", "rolled_back", "guardrail", "harm", "missing_outcomes",
                "sample_ratio_mismatch", "outcome_rate_mismatch", "stage_minimums", "no_estimate",
                "non_inferiority_not_shown", "ramp", "ship", "controller_hold", "warming_up")
#: A gap in outcomes per exposure between the arms worth catching (the outcome-rate check's tau).
OUTCOME_RATE_GAP = 0.05
ARM_ORDER = ("legacy", "model")
FIELDS = ("exposures", "successes", "failures")


@dataclass(frozen=True)
class ArmStats:
    """One arm's cumulative counts and success rate with its (1 - alpha) Wilson interval (request-level, descriptive)."""

    exposures: int
    outcomes: int
    successes: int
    rate: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class Stage:
    """Where the ramp is: the configured stage the latest weights match, and its minimums."""

    index: int
    percent: float
    final: bool
    started: datetime
    duration_seconds: float
    min_duration_seconds: float
    model_exposures: int
    min_samples: int


@dataclass(frozen=True)
class DifferenceStats:
    """Model - legacy, stratified over periods, with its always-valid sequences.

    `ci` is the two-sided (1 - alpha) confidence sequence (tau = MDE); `harm_upper_bound` the
    one-sided harm sequence's upper bound (below 0: significantly worse); `non_inferiority_lower_bound`
    the one-sided sequence tuned to the margin (above -margin: non-inferior, what `ship` needs).
    `counted_by` is "unit" (bucket totals as clusters, `buckets` of them, `clusters` holding data)
    or "request" (no buckets in the history); `design_effect` is the variance inflation measured,
    `planning_design_effect` both arms' mean, unfloored (what the time estimate extrapolates with).
    """

    estimate: float
    ci: tuple[float, float]
    z: float
    boundary: float
    always_valid_p_value: float
    fixed_horizon_p_value: float
    strata: int
    method: str = "Mantel-Haenszel risk difference over constant-weight periods; mixture SPRT (Johari et al. 2017)"
    variance: float = float("nan")
    counted_by: str = "request"
    buckets: int = 1
    clusters: int = 0
    design_effect: float = float("nan")
    harm_upper_bound: float = float("inf")
    harm_p_value: float = 1.0
    non_inferiority_lower_bound: float = float("-inf")
    non_inferiority_p_value: float = 1.0
    planning_design_effect: float = 1.0


@dataclass(frozen=True)
class PowerStats:
    """Power at the MDE, what the pending decision needs, and how long it should take.

    `power` and `needed_effective_sample_fixed` are the fixed-horizon references. `pending` names
    the sequential test the stage waits on ("harm": rolling back a model one MDE worse, at early
    stages; "non_inferiority": shipping a model as good as legacy, at the final stage);
    `needed_information` (1 / variance) is where that test reaches the target power
    (`stats.sequential_power`, the boundary actually used), `sequential_power` its power by the
    information now, and `seconds_to_needed` the time to get there at the measured
    `information_per_second`.
    """

    mde: float
    effective_sample: float
    power: float
    needed_effective_sample_fixed: float
    needed_effective_sample_sequential: float
    model_exposures_per_second: float | None
    needed_model_exposures: float | None
    seconds_to_needed: float | None
    pending: str = "harm"
    information: float = 0.0
    information_per_second: float | None = None
    needed_information: float = float("inf")
    sequential_power: float = float("nan")
    seconds_to_needed_range: tuple[float, float] | None = None  # for the design effect -+ one standard error


@dataclass(frozen=True)
class SrmStats:
    """Sample ratio check on units: the sequential Dirichlet-multinomial test (Lindon & Malek 2020).

    `p_value` is the always-valid p-value (a mismatch when below `threshold`), computed on
    `effective_observed` (exposures deflated by their design effect over buckets, so heavy units
    do not fake a mismatch). `statistic` and `fixed_horizon_p_value` are the chi-square of the raw
    exposures against the weights, for reference. `outcome_rate_p_value` is the always-valid test
    that outcomes arrive per exposure at the same rate in both arms (below `threshold`: blocked).
    """

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    threshold: float
    mismatch: bool
    effective_observed: dict[str, float] = field(default_factory=dict)
    fixed_horizon_p_value: float = float("nan")
    log_bayes_factor: float = 0.0
    outcome_rate_p_value: float = 1.0
    outcome_rate_mismatch: bool = False
    method: str = "sequential Dirichlet-multinomial (Lindon & Malek 2020) on unit-equivalent counts"


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail of the model arm: observed value, limit, breach, and how it was judged."""

    name: str
    value: float
    limit: float
    breached: bool
    detail: str
    p_value: float | None = None


@dataclass(frozen=True)
class Analysis:
    """The decision with its reason and every statistic it rests on (None where not computable).

    `code` is the rule that decided (one of REASON_CODES); `counted_by` is "unit" when the
    history carries analysis buckets (`buckets` of them), else "request".
    """

    experiment: str
    time: datetime | None
    looks: int
    decision: Decision
    reason: str
    stage: Stage | None = None
    next_weights: dict[str, float] | None = None
    arms: dict[str, ArmStats] = field(default_factory=dict)
    difference: DifferenceStats | None = None
    pooled_ztest: dict[str, float] | None = None
    power: PowerStats | None = None
    srm: SrmStats | None = None
    guardrails: tuple[GuardrailResult, ...] = ()
    code: str = ""
    counted_by: str = "request"
    buckets: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: `decision` and `reason` at top level, times in ISO 8601, no NaN/inf."""
        data = asdict(self)
        data["time"] = self.time.isoformat() if self.time else None
        if self.stage:
            data["stage"]["started"] = self.stage.started.isoformat()
        data["guardrails"] = list(data["guardrails"])
        safe: dict[str, Any] = _json_safe(data)
        return safe


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} pp" if x else "0 pp"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cumulative(history: History, buckets: int | None) -> np.ndarray:
    """Cumulative counts per (look, arm [legacy, model], field [exposures, successes, failures], bucket).

    Without buckets one bucket holds the totals (request-level); the short form without
    `failures` counts every exposure as an outcome.
    """
    rows: list[list[Sequence[Sequence[int]]]] = []
    for look in history.looks:
        arms: list[Sequence[Sequence[int]]] = []
        for arm in ARM_ORDER:
            c = look.arms[arm]
            if buckets is not None and c.buckets is not None:
                arms.append([c.buckets.exposures, c.buckets.successes, c.buckets.failures])
            else:
                failures = c.exposures - c.successes if c.failures is None else c.failures
                arms.append([[c.exposures], [c.successes], [failures]])
        rows.append(arms)
    return np.asarray(rows, dtype=np.int64)


def _blocked(history: History, code: str, reason: str, **extra: Any) -> Analysis:
    last = history.looks[-1].time if history.looks else None
    return Analysis(history.experiment, last, len(history.looks), "blocked", reason, code=code, **extra)


def analyze(history: History, config: ExperimentConfig, now: datetime | None = None) -> Analysis:
    """Decide hold, ramp, ship, rollback or blocked for an experiment from its history.

    Pure: the same history, config and `now` give the same Analysis. `now` (default: the latest
    look's time) is when the decision is taken; it counts toward the current stage's duration.
    """
    if not history.looks:
        return _blocked(history, "no_looks", "missing data: the history has no looks")
    try:
        history.check_counters()
    except CounterResetError as err:
        return _blocked(history, "counter_reset", f"counter reset: {err}; the counts before and after cannot be combined")
    crit, last = config.criteria, history.looks[-1]
    now = now or last.time
    periods = history.periods()
    stage_idx = _stage_index(config, last.weights["model"])
    if stage_idx is None:
        if last.weights["model"] == 0:
            stopped = next((look for look in reversed(history.looks[:-1]) if look.weights["model"] > 0), None)
            if stopped is not None:
                since = next(look for look in history.looks if look.time > stopped.time)
                return Analysis(history.experiment, last.time, len(history.looks), "rollback",
                                f"rolled back: the model's weight is 0 since {since.time.isoformat()} (after "
                                f"{100 * stopped.weights['model']:g}%); a new experiment (a new salt) starts it again",
                                next_weights={"legacy": 1.0, "model": 0.0}, code="rolled_back")
            return _blocked(history, "unknown_stage", "model weight 0%: the experiment has not started "
                                                      f"(its first stage is {config.ramp.stages[0].percent:g}%)")
        percents = [s.percent for s in config.ramp.stages]
        return _blocked(history, "unknown_stage",
                        f"model weight {100 * last.weights['model']:g}% is not a configured stage {percents}")

    buckets = history.buckets
    unit = f"by unit ({buckets} buckets)" if buckets is not None else "request-level (no buckets)"
    cum = _cumulative(history, buckets)  # (look, arm, field, bucket)
    counts = period_counts(cum, [p.first for p in periods], [p.last for p in periods])  # (look, period, arm, field, bucket)
    total = counts[-1].sum(axis=(0, -1))  # (arm, field)
    arms = {}
    for a, name in enumerate(ARM_ORDER):
        exposures, succ, fail = (int(x) for x in total[a])
        outc = succ + fail
        ci = proportion_confint(succ, outc, crit.alpha, "wilson") if outc else None
        arms[name] = ArmStats(exposures, outc, succ, succ / outc if outc else None,
                              (float(ci[0]), float(ci[1])) if ci else None)
    stage = _stage(config, stage_idx, history, periods[-1], counts, now)
    common: dict[str, Any] = dict(stage=stage, arms=arms, counted_by="unit" if buckets is not None else "request",
                                  buckets=buckets or 1)

    # Guardrails and harm first: nothing below may keep a broken or harmful model at its share.
    guardrails = _guardrails(config, history, periods[-1])
    common["guardrails"] = guardrails
    diff, variance, effective = _difference(config, counts, buckets, unit)
    common["difference"] = diff
    if arms["model"].outcomes and arms["legacy"].outcomes:
        pooled = two_proportion_ztest(arms["model"].successes, arms["model"].outcomes,
                                      arms["legacy"].successes, arms["legacy"].outcomes)
        common["pooled_ztest"] = {"statistic": float(pooled.statistic), "p_value": float(pooled.p_value)}
    common["power"] = _power(config, stage, arms, effective, variance, history, periods[-1],
                             _planning_design_effects(diff))
    common["srm"] = srm = _srm(config, counts, periods)

    def result(decision: Decision, code: str, reason: str, weights: dict[str, float] | None = None) -> Analysis:
        return Analysis(history.experiment, last.time, len(history.looks), decision, reason, next_weights=weights,
                        code=code, **common)

    off = {"legacy": 1.0, "model": 0.0}
    breached = [g for g in guardrails if g.breached]
    if breached:
        return result("rollback", "guardrail", "guardrail breached: " + "; ".join(f"{g.name}: {g.detail}" for g in breached),
                      off)
    level = f"{100 * (1 - crit.alpha):g}%"
    cs = (f"{_pct(diff.estimate)}, always-valid {level} CI [{_pct(diff.ci[0])}, {_pct(diff.ci[1])}], "
          f"harm bound {_pct(diff.harm_upper_bound)}, {unit}")
    if diff.harm_upper_bound < 0 or diff.ci[1] < 0:
        return result("rollback", "harm", f"model significantly worse than legacy: difference {cs} lies below 0 "
                      f"(always-valid p = {min(diff.harm_p_value, diff.always_valid_p_value):.3g})", off)

    for name, arm in arms.items():
        if arm.outcomes == 0:
            return result("blocked", "missing_outcomes", f"missing data: the {name} arm has no reported outcomes yet")
    if srm.mismatch:
        return result("blocked", "sample_ratio_mismatch",
                      f"sample ratio mismatch: model arm got {srm.observed['model']} exposures, {srm.expected['model']:.0f} "
                      f"expected from the weights (sequential p = {srm.p_value:.2g} < {crit.srm_p_value:g} on unit-equivalent "
                      f"counts, {unit}); assignment or logging is broken, no decision is safe")
    if srm.outcome_rate_mismatch:
        return result("blocked", "outcome_rate_mismatch",
                      f"outcomes arrive at different rates: model {arms['model'].outcomes}/{arms['model'].exposures}, legacy "
                      f"{arms['legacy'].outcomes}/{arms['legacy'].exposures} outcomes per exposure (sequential p = "
                      f"{srm.outcome_rate_p_value:.2g} < {crit.srm_p_value:g}); an arm loses outcomes, no comparison is safe")
    return _decide(config, stage, diff, common["power"], cs, result)


def _ni_tau2(config: ExperimentConfig) -> float:
    crit = config.criteria
    effect = crit.non_inferiority_margin or crit.minimum_detectable_effect
    return _tuned(effect, crit.alpha, crit.power)


@lru_cache(maxsize=64)
def _tuned(effect: float, alpha: float, power: float) -> float:
    return tuned_tau2(effect, alpha, power)


def _difference(config: ExperimentConfig, counts: np.ndarray, buckets: int | None,
                unit: str) -> tuple[DifferenceStats, np.ndarray, float]:
    """The clustered stratified difference at every look and its sequences; the variances per look; the effective sample now."""
    crit = config.criteria
    sm, fm = counts[:, :, 1, 1], counts[:, :, 1, 2]  # (look, period, bucket)
    sl, fl = counts[:, :, 0, 1], counts[:, :, 0, 2]
    est = stratified_difference(sm, sm + fm, sl, sl + fl)
    d, v = np.atleast_1d(np.asarray(est.difference, dtype=float)), np.atleast_1d(np.asarray(est.variance, dtype=float))
    tau2 = crit.minimum_detectable_effect ** 2
    margin = crit.non_inferiority_margin
    with np.errstate(invalid="ignore"):  # looks without a variance: unbounded, by design
        cs = confidence_sequence(d, v, tau2, crit.alpha)
        harm = one_sided_sequence(d, v, tau2, crit.alpha, 0.0, "less")
        ni = one_sided_sequence(d, v, _ni_tau2(config), crit.alpha, -margin, "greater")
    dd, vv = float(d[-1]), float(v[-1])
    ok = math.isfinite(vv) and vv > 0 and math.isfinite(dd)
    z = dd / math.sqrt(vv) if ok else float("nan")
    nm, nl = (sm + fm)[-1].sum(axis=-1), (sl + fl)[-1].sum(axis=-1)
    deff = float(np.atleast_1d(np.asarray(est.design_effect, dtype=float))[-1])
    method = (f"Mantel-Haenszel risk difference over constant-weight periods, {unit}, cluster-robust variance "
              "(Deng, Lu & Litz 2017); two-sided normal-mixture confidence sequence (Howard et al. 2021), one-sided "
              "mixture sequences for harm and for non-inferiority at the margin")
    diff = DifferenceStats(
        dd, (float(cs.lower[-1]), float(cs.upper[-1])), z, float(cs.boundary[-1]), float(cs.p_value[-1]),
        float(p_value_from_z(z, "two-sided")) if ok else float("nan"), int(np.sum((nm > 0) & (nl > 0))), method,
        vv, "unit" if buckets is not None else "request", buckets or 1,
        int(np.atleast_1d(np.asarray(est.clusters))[-1]), deff,
        float(harm.bound[-1]), float(harm.p_value[-1]), float(ni.bound[-1]), float(ni.p_value[-1]),
        _finite_or(float(np.atleast_1d(np.asarray(est.mean_design_effect, dtype=float))[-1]), 1.0))
    return diff, v, float(np.atleast_1d(np.asarray(est.effective_sample, dtype=float))[-1])


def _finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def _stage_index(config: ExperimentConfig, model_weight: float) -> int | None:
    for i, s in enumerate(config.ramp.stages):
        if math.isclose(s.percent / 100, model_weight, abs_tol=1e-6):
            return i
    return None


def _stage(config: ExperimentConfig, idx: int, history: History, period: Period, counts: np.ndarray,
           now: datetime) -> Stage:
    s = config.ramp.stages[idx]
    started = history.looks[period.first].time
    return Stage(idx, s.percent, idx == len(config.ramp.stages) - 1, started, (now - started).total_seconds(),
                 s.min_duration_seconds, int(counts[-1, -1, 1, 0].sum()), s.min_samples)


def _srm(config: ExperimentConfig, counts: np.ndarray, periods: list[Period]) -> SrmStats:
    """Sequential SRM on unit-equivalent counts, the fixed-horizon chi-square for reference, and the outcome-rate check."""
    crit = config.criteria
    shares = np.array([[p.weights["legacy"], p.weights["model"]] for p in periods], dtype=float)  # (period, arm)
    exposures = counts[:, :, :, 0, :]  # (look, period, arm, bucket)
    effective = effective_counts(exposures, np.broadcast_to(shares, exposures.shape[:-1]))  # (look, period, arm)
    seq = sequential_srm(effective, shares, stages=len(config.ramp.stages))
    observed = exposures[-1].sum(axis=-1)  # (period, arm)
    expected = (observed.sum(axis=1, keepdims=True) * shares / shares.sum(axis=1, keepdims=True)).sum(axis=0)
    raw = sample_ratio_mismatch(observed.sum(axis=0), expected)
    p = float(np.atleast_1d(seq.p_value)[-1])
    # Outcomes per exposure, model against legacy, by the same clustered stratified difference.
    outcomes = counts[:, :, :, 1, :] + counts[:, :, :, 2, :]
    rate_p = outcome_rate_sequence(outcomes[:, :, 1], exposures[:, :, 1], outcomes[:, :, 0], exposures[:, :, 0],
                                   OUTCOME_RATE_GAP ** 2, crit.srm_p_value)
    rate_p_last = float(np.atleast_1d(rate_p)[-1])
    eff_last = effective[-1].sum(axis=0)
    lbf = float(np.atleast_1d(seq.log_bayes_factor)[-1])
    return SrmStats(dict(zip(ARM_ORDER, (int(x) for x in observed.sum(axis=0)), strict=True)),
                    dict(zip(ARM_ORDER, (float(x) for x in raw.expected), strict=True)), float(raw.statistic), p,
                    crit.srm_p_value, p < crit.srm_p_value,
                    dict(zip(ARM_ORDER, (float(x) for x in eff_last), strict=True)), float(raw.p_value), lbf,
                    rate_p_last, rate_p_last < crit.srm_p_value)


def _guardrails(config: ExperimentConfig, history: History, period: Period) -> tuple[GuardrailResult, ...]:
    """Error and fallback rates of the model arm in this stage, each by an anytime-valid test at alpha / stages."""
    g, alpha = config.guardrails, config.criteria.alpha
    n_stages = len(config.ramp.stages)
    level = alpha / n_stages
    base = history.looks[period.first - 1].arms["model"] if period.first else None
    looks = [look.arms["model"] for look in history.looks[period.first:period.last + 1]]
    n = np.array([c.exposures - (base.exposures if base else 0) for c in looks], dtype=float)
    results = []
    for name, attr, limit in (("error_rate", "errors", g.max_error_rate), ("fallback_rate", "fallbacks", g.max_fallback_rate)):
        if n[-1] <= 0:
            continue
        raw = np.array([getattr(c, attr) - (getattr(base, attr) if base else 0) for c in looks], dtype=float)
        k = np.minimum(np.maximum(raw, 0.0), n)  # a scrape between two counters of one request must not exceed n
        count, total = int(k[-1]), int(n[-1])
        if limit >= 1.0:
            p, breached = 1.0, False
        elif limit <= 0.0:
            p, breached = (0.0, True) if count else (1.0, False)
        else:
            seq = guardrail_sequence(k, n, limit, level)
            p, breached = float(seq.p_value[-1]), bool(seq.breached[-1])
        results.append(GuardrailResult(
            name, count / total, limit, breached,
            f"{count}/{total} model-arm requests in this stage ({100 * count / total:.2f}%); anytime-valid p = {p:.2g} "
            f"that the rate is at most {100 * limit:g}% (breach below {level:.2g}: alpha / {n_stages} stages)", p))
    now = history.looks[-1].arms["model"]
    if now.p99_latency_seconds is not None:
        ms = 1000 * now.p99_latency_seconds
        results.append(GuardrailResult("p99_latency_ms", ms, g.max_p99_latency_ms, ms > g.max_p99_latency_ms,
                                       f"model-arm p99 latency {ms:.0f} ms vs limit {g.max_p99_latency_ms:g} ms"))
    return tuple(results)


#: Looks at most in a planning schedule; a coarser schedule than the real one only underestimates power
#: (80 held the plan back where repeat units make later looks denser in information; 240 cost
#: about 0.3 s of CPU per new schedule against 0.07, and schedules are cached).
_PLAN_LOOKS = 240
#: Grid points of the planning integration (401 in stats.sequential_power): power to about 1e-3, 7 times faster.
_PLAN_GRID = 151


@lru_cache(maxsize=512)
def _plan(drift: float, log_step: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(information, power by then) of the one-sided test, in units where tau^2 = 1, looks every exp(log_step).

    The mixture boundary depends on V / tau^2 only, so a test of effect theta with mixture tau^2
    is the test of drift theta / tau in information J = I tau^2; one schedule serves every
    analysis with the same look spacing (cached). A schedule coarser than the real one (at most
    _PLAN_LOOKS looks up to six times the fixed-horizon information) only underestimates power.
    """
    fixed = ((_z(1 - alpha) + _z(0.9)) / drift) ** 2
    horizon = 6 * fixed
    step = max(math.exp(log_step), horizon / _PLAN_LOOKS)
    schedule = step * np.arange(1, int(math.ceil(horizon / step)) + 1, dtype=float)
    cross = crossing_probabilities(drift, schedule, 1.0, alpha, sides=1, grid=_PLAN_GRID)
    return schedule, np.cumsum(cross.upper)


def _z(q: float) -> float:
    return float(ndtri(q))


def _planned(drift: float, step_j: float, alpha: float, target_power: float, info_j: float) -> tuple[float, float]:
    """(information J where the power reaches the target, power by `info_j`) for looks every `step_j`."""
    if not step_j > 0:
        return float("inf"), float("nan")
    schedule, power = _plan(round(drift, 6), round(math.log(step_j) * 4) / 4, alpha)
    reached = np.nonzero(power >= target_power)[0]
    needed = float(schedule[reached[0]]) if len(reached) else float("inf")
    return needed, float(np.interp(info_j, np.concatenate([[0.0], schedule]), np.concatenate([[0.0], power])))


def _planning_design_effects(diff: DifferenceStats) -> tuple[float, float, float]:
    """The design effect to plan with and the span of one standard error: (low, estimate, high).

    The mean of both arms' design effects (they measure the same units' repeat behaviour), not
    floored at 1, so that its noise does not push one-off units' estimates one way. From B bucket
    totals each has a relative standard error of about sqrt(2 / (B - 1)); the mean, sqrt(1 / (B - 1)).
    1 when unknown (request-level histories, fewer than three buckets).
    """
    d, g = diff.planning_design_effect, diff.clusters
    if diff.counted_by != "unit" or not math.isfinite(d) or g < 3:
        return 1.0, 1.0, 1.0
    d = max(d, 0.5)
    se = d * math.sqrt(1.0 / (g - 1))
    return max(d - se, 0.5), d, d + se


def _saturation(needed_over_now: float, design_effect: float) -> float:
    """Model-arm exposures needed, over those now, for information to grow by `needed_over_now`.

    Why not linear: a unit's requests share its outcome, so the design effect is about 1 + m for m
    requests per unit, and m grows with the arm's exposures E at a fixed set of units. Information
    then grows like E / (1 + (D - 1) E / E_now), D the design effect now, and saturates at
    D / (D - 1) times today's (inf: not reached by more of the same units). With D = 1 (one-off
    units, or independent outcomes) it is linear; a noisy D at early looks spreads single
    estimates, but the estimate is monotone in D, so its median stays right (docs/statistics.md).
    """
    q, d = needed_over_now, design_effect
    room = d - q * (d - 1)
    return q / room if room > 0 else float("inf")


def _power(config: ExperimentConfig, stage: Stage, arms: dict[str, ArmStats], effective: float,
           variances: np.ndarray, history: History, period: Period,
           design_effects: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> PowerStats:
    crit = config.criteria
    base = arms["legacy"].rate or 0.0
    h = pw.mde_effect_size(base, crit.minimum_detectable_effect)
    fixed = pw.needed_effective_sample(h, crit.alpha, crit.power) if h else float("inf")
    unit_var = base * (1 - base)
    # The decision this stage waits on: a one-MDE harm caught (early stages) or non-inferiority (final).
    if stage.final:
        pending, effect, tau2 = "non_inferiority", crit.non_inferiority_margin or crit.minimum_detectable_effect, _ni_tau2(config)
    else:
        pending, effect, tau2 = "harm", crit.minimum_detectable_effect, crit.minimum_detectable_effect ** 2
    drift = effect / math.sqrt(tau2)
    # Information 1 / V now and its rate over this stage's looks (time between looks from the same span).
    info = np.where(np.isfinite(variances) & (variances > 0), 1.0 / np.where(variances > 0, variances, 1.0), 0.0)
    info_now = float(info[-1])
    # From the previous period's last look, or from the first look (whose own gain has no start time).
    base = period.first - 1 if period.first else 0
    span = (history.looks[period.last].time - history.looks[base].time).total_seconds()
    gained_info = info_now - float(info[base])
    info_rate = gained_info / span if span > 0 and gained_info > 0 else None
    gaps = [(b.time - a.time).total_seconds() for a, b in zip(history.looks[:-1], history.looks[1:], strict=True)]
    look_gap = float(np.median(gaps[-10:])) if gaps else 0.0
    step_j = (info_rate or 0.0) * look_gap * tau2
    if step_j <= 0 and info_now > 0:
        step_j = info_now * tau2 / max(1, len(history.looks))
    needed_j, seq_power = _planned(drift, step_j, crit.alpha, crit.power, info_now * tau2)
    needed_info = needed_j / tau2
    # Speed of the model arm in the current period: units gained over the time they took.
    before = history.looks[period.first - 1] if period.first else history.looks[0]
    after = history.looks[period.last]
    span_e = (after.time - before.time).total_seconds()
    gained = after.arms["model"].exposures - before.arms["model"].exposures
    rate = gained / span_e if span_e > 0 else None
    model = arms["model"]
    needed: float | None
    seconds: float | None
    seconds_range: tuple[float, float] | None = None
    if info_now >= needed_info:
        needed, seconds = float(model.exposures), 0.0
    elif info_now > 0 and math.isfinite(needed_info):
        if info_rate and look_gap > 0:
            # Repeat units make each later look add less information, so more looks come before the
            # target than a schedule at today's step assumes, and more looks cross sooner: plan on
            # the looks there will be by then (a few fixed-point steps; with information growing
            # linearly the two schedules are the same).
            for _ in range(3):
                mid = _saturation(needed_info / info_now, design_effects[1])
                if not math.isfinite(mid) or mid <= 1:
                    break
                looks_then = len(history.looks) + info_now / info_rate * (mid - 1) / look_gap
                j, p = _planned(drift, needed_j / looks_then, crit.alpha, crit.power, info_now * tau2)
                if not math.isfinite(j) or j / tau2 <= info_now:
                    break
                needed_j, seq_power, needed_info = j, p, j / tau2
        q = needed_info / info_now
        low, mid, high = (_saturation(q, d) for d in design_effects)
        needed = model.exposures * mid if math.isfinite(mid) else None
        if info_rate:
            # The linear wait (information at its measured rate), stretched by how repeat units slow it.
            linear = (needed_info - info_now) / info_rate / (q - 1)
            seconds = linear * (mid - 1) if math.isfinite(mid) else None
            seconds_range = (linear * (low - 1), linear * (high - 1))
        else:
            seconds = None
    else:
        needed, seconds = None, None
    return PowerStats(crit.minimum_detectable_effect, effective, pw.power(h, effective, crit.alpha) if h else float("nan"),
                      fixed, unit_var * needed_info if unit_var > 0 else float("inf"), rate, needed, seconds, pending,
                      info_now, info_rate, needed_info, seq_power, seconds_range)


def _eta(power: PowerStats) -> str:
    """The wait for the pending test's information, with its span for the design effect's uncertainty."""
    if power.seconds_to_needed is None:
        return ""
    text = f"about {_duration(power.seconds_to_needed)}"
    if power.seconds_to_needed_range is not None:
        low, high = power.seconds_to_needed_range
        if math.isfinite(high):
            text += f" ({_duration(low)} to {_duration(high)} for the measured repeat-unit design effect)"
        else:
            text += f" (at least {_duration(low)}; repeat units may cap the information at this traffic)"
    return text


def _decide(config: ExperimentConfig, stage: Stage, diff: DifferenceStats, power: PowerStats, cs: str,
            result: Callable[..., Analysis]) -> Analysis:
    """Ramp, ship or hold once nothing rolled back or blocked."""
    crit = config.criteria
    missing = []
    waits: list[float] = []
    if stage.duration_seconds < stage.min_duration_seconds:
        missing.append(f"stage {stage.percent:g}% has run {_duration(stage.duration_seconds)} of "
                       f"{_duration(stage.min_duration_seconds)}")
        waits.append(stage.min_duration_seconds - stage.duration_seconds)
    if stage.model_exposures < stage.min_samples:
        missing.append(f"{stage.model_exposures} of {stage.min_samples} model-arm exposures in this stage")
        rate = power.model_exposures_per_second
        waits.append((stage.min_samples - stage.model_exposures) / rate if rate else float("inf"))
    if missing:
        eta = max(waits)
        when = f"; about {_duration(eta)} to go at the current rate" if math.isfinite(eta) else ""
        return result("hold", "stage_minimums", "hold: " + "; ".join(missing) + f"{when} (difference {cs})")
    if not (math.isfinite(diff.variance) and diff.variance > 0):
        return result("hold", "no_estimate", "hold: too few outcomes in one arm to estimate the difference yet "
                                             f"(difference {cs})")
    met = (f"stage {stage.percent:g}% minimums met ({_duration(stage.duration_seconds)}, "
           f"{stage.model_exposures} model-arm exposures)")
    margin = crit.non_inferiority_margin
    if not stage.final:
        nxt = config.ramp.stages[stage.index + 1].percent / 100
        return result("ramp", "ramp", f"ramp to {100 * nxt:g}%: no significant harm (difference {cs}; harm p = "
                      f"{diff.harm_p_value:.3g}), no guardrail breached, {met}", {"legacy": round(1 - nxt, 12), "model": nxt})
    if diff.non_inferiority_lower_bound > -margin:
        return result("ship", "ship", f"ship: final stage passed; model non-inferior (one-sided lower bound "
                      f"{_pct(diff.non_inferiority_lower_bound)} above -{100 * margin:g} pp; difference {cs}), "
                      f"no guardrail breached, {met}", {"legacy": 0.0, "model": 1.0})
    plan = (f"; {_eta(power)} to the information where the test has {100 * crit.power:g}% power"
            if power.seconds_to_needed else "")
    return result("hold", "non_inferiority_not_shown",
                  f"hold: non-inferiority not shown: one-sided lower bound {_pct(diff.non_inferiority_lower_bound)} is "
                  f"not above -{100 * margin:g} pp (difference {cs}){plan}")
