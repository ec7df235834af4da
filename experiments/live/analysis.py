"""The analyzer's core: one pure function from an experiment's history and config to a decision.

`analyze(history, config)` is what the CLI, the ramp controller and the HTTP endpoint call; users
can call it to replay or simulate any experiment. The rules, checked in this order:

1. blocked: no looks, a counter reset, weights that are no configured stage, an arm without
   outcomes, or a sample ratio mismatch (p below `criteria.srm_p_value`): nothing can be trusted.
2. rollback: a model-arm guardrail is breached, or the model is significantly worse than legacy
   (the always-valid confidence sequence of model - legacy lies entirely below 0).
3. ramp / ship: the stage's minimum duration and model-arm sample are met and the model is
   non-inferior (the sequence's lower bound is above -`criteria.non_inferiority_margin`); ship at
   the final stage.
4. hold otherwise, saying what is missing and how long it should take.

The difference is the Mantel-Haenszel combination over periods of constant weights
(`stats.stratified`) and is judged with the mixture SPRT (`stats.sequential`), so looking at
every look and ramping mid-experiment keep the error rates at alpha. See docs/statistics.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from experiments.config import ExperimentConfig
from experiments.live.history import CounterResetError, History, Period
from experiments.stats import power as pw
from experiments.stats.guardrails import rate_above_limit
from experiments.stats.proportion import p_value_from_z, proportion_confint
from experiments.stats.sequential import needed_information, run_sequence
from experiments.stats.srm import sample_ratio_mismatch
from experiments.stats.stratified import stratified_difference
from experiments.stats.two_proportions import two_proportion_ztest

Decision = Literal["hold", "ramp", "ship", "rollback", "blocked"]
DECISIONS: tuple[Decision, ...] = ("hold", "ramp", "ship", "rollback", "blocked")


@dataclass(frozen=True)
class ArmStats:
    """One arm's cumulative counts and success rate with its (1 - alpha) Wilson interval."""

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
    """Model - legacy, stratified over periods, with its always-valid (1 - alpha) confidence sequence."""

    estimate: float
    ci: tuple[float, float]
    z: float
    boundary: float
    always_valid_p_value: float
    fixed_horizon_p_value: float
    strata: int
    method: str = "Mantel-Haenszel risk difference over constant-weight periods; mixture SPRT (Johari et al. 2017)"


@dataclass(frozen=True)
class PowerStats:
    """Power at the MDE now, the sample the decision needs, and how long it should take."""

    mde: float
    effective_sample: float
    power: float
    needed_effective_sample_fixed: float
    needed_effective_sample_sequential: float
    model_exposures_per_second: float | None
    needed_model_exposures: float | None
    seconds_to_needed: float | None


@dataclass(frozen=True)
class SrmStats:
    """Chi-square of all exposures against the weights in force when they were collected."""

    observed: dict[str, int]
    expected: dict[str, float]
    statistic: float
    p_value: float
    threshold: float
    mismatch: bool


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail of the model arm: observed value, limit, breach, and how it was judged."""

    name: str
    value: float
    limit: float
    breached: bool
    detail: str


@dataclass(frozen=True)
class Analysis:
    """The decision with its reason and every statistic it rests on (None where not computable)."""

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
    return value


def _pct(x: float) -> str:
    return f"{100 * x:+.2f} pp" if x else "0 pp"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _counts(history: History, index: int | None) -> np.ndarray:
    """[[exposures, successes, outcomes] for legacy, model] at a look; zeros before the first."""
    if index is None:
        return np.zeros((2, 3), dtype=np.int64)
    arms = history.looks[index].arms
    return np.array([[arms[a].exposures, arms[a].successes, arms[a].outcomes] for a in ("legacy", "model")])


def _strata_by_look(history: History, periods: list[Period]) -> np.ndarray:
    """Counts per (look, period, arm, [exposures, successes, outcomes]) as known at each look.

    A period after a weight change starts at its own first look, not at the previous period's
    last one: the counts gained in between are a transition, mixing traffic split the old way
    (the routers reload, and scrapes and outcomes lag, by a few seconds) with the new. They are
    left out of every comparison and of the sample ratio check; dropping a window of time from
    both arms keeps the comparison randomised.
    """
    out = np.zeros((len(history.looks), len(periods), 2, 3), dtype=np.int64)
    for j, period in enumerate(periods):
        base = _counts(history, period.first if j else None)
        for k in range(period.first, len(history.looks)):
            out[k, j] = _counts(history, min(k, period.last)) - base
    return out


def _blocked(history: History, reason: str, **extra: Any) -> Analysis:
    last = history.looks[-1].time if history.looks else None
    return Analysis(history.experiment, last, len(history.looks), "blocked", reason, **extra)


def analyze(history: History, config: ExperimentConfig, now: datetime | None = None) -> Analysis:
    """Decide hold, ramp, ship, rollback or blocked for an experiment from its history.

    Pure: the same history, config and `now` give the same Analysis. `now` (default: the latest
    look's time) is when the decision is taken; it counts toward the current stage's duration.
    """
    if not history.looks:
        return _blocked(history, "missing data: the history has no looks")
    try:
        history.check_counters()
    except CounterResetError as err:
        return _blocked(history, f"counter reset: {err}; the counts before and after cannot be combined")
    crit, last = config.criteria, history.looks[-1]
    now = now or last.time
    periods = history.periods()
    stage_idx = _stage_index(config, last.weights["model"])
    if stage_idx is None:
        percents = [s.percent for s in config.ramp.stages]
        return _blocked(history, f"model weight {100 * last.weights['model']:g}% is not a configured stage {percents}")

    counts = _strata_by_look(history, periods)  # (look, period, arm, field)
    total = counts[-1].sum(axis=0)  # (arm, field)
    arms = {}
    for a, name in enumerate(("legacy", "model")):
        exp_, succ, outc = (int(x) for x in total[a])
        ci = proportion_confint(succ, outc, crit.alpha, "wilson") if outc else None
        arms[name] = ArmStats(exp_, outc, succ, succ / outc if outc else None,
                              (float(ci[0]), float(ci[1])) if ci else None)
    stage = _stage(config, stage_idx, history, periods[-1], counts, now)
    for name, arm in arms.items():
        if arm.outcomes == 0:
            return _blocked(history, f"missing data: the {name} arm has no reported outcomes yet", stage=stage, arms=arms)

    # Exposures against the weights in force when each period's units came in.
    observed = counts[-1, :, :, 0]  # (period, arm)
    shares = np.array([[p.weights["legacy"], p.weights["model"]] for p in periods])
    expected = (observed.sum(axis=1, keepdims=True) * shares / shares.sum(axis=1, keepdims=True)).sum(axis=0)
    srm_raw = sample_ratio_mismatch(observed.sum(axis=0), expected)
    srm = SrmStats(dict(zip(("legacy", "model"), (int(x) for x in observed.sum(axis=0)), strict=True)),
                   dict(zip(("legacy", "model"), srm_raw.expected, strict=True)), srm_raw.statistic, srm_raw.p_value,
                   crit.srm_p_value, srm_raw.p_value < crit.srm_p_value)
    common = dict(stage=stage, arms=arms, srm=srm)
    if srm.mismatch:
        exp_m = srm.expected["model"]
        return _blocked(history, f"sample ratio mismatch: model arm got {srm.observed['model']} exposures, "
                        f"{exp_m:.0f} expected from the weights (chi-square p = {srm.p_value:.2g} < "
                        f"{crit.srm_p_value:g}); assignment or logging is broken, no decision is safe", **common)

    # The stratified difference at every look, then the sequence over looks.
    sm, nm = counts[:, :, 1, 1], counts[:, :, 1, 2]
    sl, nl = counts[:, :, 0, 1], counts[:, :, 0, 2]
    est = stratified_difference(sm, nm, sl, nl)
    # One estimate per look: (look, stratum) counts in, arrays out.
    difference, variance, effective = np.asarray(est.difference), np.asarray(est.variance), np.asarray(est.effective_sample)
    tau2 = crit.minimum_detectable_effect ** 2
    seq = run_sequence(difference, variance, tau2, crit.alpha)
    d, v = float(difference[-1]), float(variance[-1])
    z = d / math.sqrt(v) if v > 0 else float("nan")
    diff = DifferenceStats(d, (float(seq.lower[-1]), float(seq.upper[-1])), z, float(seq.boundary[-1]),
                           float(seq.p_value[-1]), float(p_value_from_z(z, "two-sided")) if v > 0 else float("nan"),
                           int(np.sum((nm[-1] > 0) & (nl[-1] > 0))))
    pooled = two_proportion_ztest(arms["model"].successes, arms["model"].outcomes,
                                  arms["legacy"].successes, arms["legacy"].outcomes)
    power = _power(config, arms, float(effective[-1]), periods[-1], history)
    guardrails = _guardrails(config, history, periods[-1])
    common.update(difference=diff, pooled_ztest={"statistic": float(pooled.statistic), "p_value": float(pooled.p_value)},
                  power=power, guardrails=guardrails)
    return _decide(history, config, stage, diff, power, guardrails, common)


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
                 s.min_duration_seconds, int(counts[-1, -1, 1, 0]), s.min_samples)


def _power(config: ExperimentConfig, arms: dict[str, ArmStats], w_now: float, period: Period, history: History) -> PowerStats:
    crit = config.criteria
    base = arms["legacy"].rate or 0.0
    h = pw.mde_effect_size(base, crit.minimum_detectable_effect)
    fixed = pw.needed_effective_sample(h, crit.alpha, crit.power) if h else float("inf")
    unit_var = base * (1 - base)
    v_needed = needed_information(crit.minimum_detectable_effect, crit.minimum_detectable_effect ** 2, crit.alpha, crit.power)
    seq_needed = unit_var / v_needed if unit_var > 0 else float("inf")
    # Speed of the model arm in the current period: units gained over the time they took (from the
    # previous period's last look, or from the first look when there is no earlier period).
    before = history.looks[period.first - 1] if period.first else history.looks[0]
    after = history.looks[period.last]
    span = (after.time - before.time).total_seconds()
    gained = after.arms["model"].exposures - before.arms["model"].exposures
    rate = gained / span if span > 0 else None
    # Each model-arm outcome at the current split adds the legacy share to the effective sample.
    legacy_share = history.looks[-1].weights["legacy"]
    model = arms["model"]
    outcome_share = model.outcomes / model.exposures if model.exposures else 0.0
    needed: float | None
    seconds: float | None
    if seq_needed <= w_now:
        needed, seconds = float(model.exposures), 0.0
    elif legacy_share > 0 and outcome_share > 0 and math.isfinite(seq_needed):
        needed = model.exposures + (seq_needed - w_now) / (legacy_share * outcome_share)
        seconds = pw.seconds_to_reach(needed, model.exposures, rate or 0.0)
    else:
        needed, seconds = None, None
    return PowerStats(crit.minimum_detectable_effect, w_now, pw.power(h, w_now, crit.alpha) if h else float("nan"),
                      fixed, seq_needed, rate, needed, seconds)


def _guardrails(config: ExperimentConfig, history: History, period: Period) -> tuple[GuardrailResult, ...]:
    g, alpha = config.guardrails, config.criteria.alpha
    base = history.looks[period.first - 1].arms["model"] if period.first else None
    now = history.looks[-1].arms["model"]
    n = now.exposures - (base.exposures if base else 0)
    results = []
    for name, attr, limit in (("error_rate", "errors", g.max_error_rate), ("fallback_rate", "fallbacks", g.max_fallback_rate)):
        if n <= 0:
            continue
        count = getattr(now, attr) - (getattr(base, attr) if base else 0)
        check = rate_above_limit(count, n, limit, alpha)
        results.append(GuardrailResult(name, check.rate, limit, check.breached,
                                       f"{count}/{n} model-arm requests in this stage; one-sided {100 * (1 - alpha):g}% "
                                       f"lower bound {100 * check.lower:.2f}% vs limit {100 * limit:g}%"))
    if now.p99_latency_seconds is not None:
        ms = 1000 * now.p99_latency_seconds
        results.append(GuardrailResult("p99_latency_ms", ms, g.max_p99_latency_ms, ms > g.max_p99_latency_ms,
                                       f"model-arm p99 latency {ms:.0f} ms vs limit {g.max_p99_latency_ms:g} ms"))
    return tuple(results)


def _decide(history: History, config: ExperimentConfig, stage: Stage, diff: DifferenceStats, power: PowerStats,
            guardrails: tuple[GuardrailResult, ...], common: dict[str, Any]) -> Analysis:
    crit = config.criteria
    level = f"{100 * (1 - crit.alpha):g}%"
    cs = f"{_pct(diff.estimate)}, always-valid {level} CI [{_pct(diff.ci[0])}, {_pct(diff.ci[1])}]"

    def result(decision: Decision, reason: str, weights: dict[str, float] | None = None) -> Analysis:
        return Analysis(history.experiment, history.looks[-1].time, len(history.looks), decision, reason,
                        next_weights=weights, **common)

    breached = [g for g in guardrails if g.breached]
    if breached:
        return result("rollback", "guardrail breached: " + "; ".join(f"{g.name}: {g.detail}" for g in breached),
                      {"legacy": 1.0, "model": 0.0})
    if diff.ci[1] < 0:
        return result("rollback", f"model significantly worse than legacy: difference {cs} lies below 0 "
                      f"(always-valid p = {diff.always_valid_p_value:.3g})", {"legacy": 1.0, "model": 0.0})
    missing = []
    if stage.duration_seconds < stage.min_duration_seconds:
        missing.append(f"stage {stage.percent:g}% has run {_duration(stage.duration_seconds)} of "
                       f"{_duration(stage.min_duration_seconds)}")
    if stage.model_exposures < stage.min_samples:
        missing.append(f"{stage.model_exposures} of {stage.min_samples} model-arm exposures in this stage")
    non_inferior = diff.ci[0] > -crit.non_inferiority_margin
    if not non_inferior:
        eta = f"; about {_duration(power.seconds_to_needed)} to the planned sample" if power.seconds_to_needed else ""
        missing.append(f"non-inferiority not shown: lower bound {_pct(diff.ci[0])} is not above "
                       f"-{100 * crit.non_inferiority_margin:g} pp (difference {cs}){eta}")
    if missing:
        return result("hold", "hold: " + "; ".join(missing))
    why = (f"model non-inferior (difference {cs}, lower bound above -{100 * crit.non_inferiority_margin:g} pp), "
           f"no guardrail breached, stage {stage.percent:g}% minimums met ({_duration(stage.duration_seconds)}, "
           f"{stage.model_exposures} model-arm exposures)")
    if stage.final:
        return result("ship", f"ship: final stage passed; {why}", {"legacy": 0.0, "model": 1.0})
    nxt = config.ramp.stages[stage.index + 1].percent / 100
    return result("ramp", f"ramp to {100 * nxt:g}%: {why}", {"legacy": round(1 - nxt, 12), "model": nxt})
