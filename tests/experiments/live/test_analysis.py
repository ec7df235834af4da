"""Decisions on recorded histories (tests/data/histories) and the shape of the Analysis document."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportions_ztest

from experiments.config import load_config
from experiments.live.analysis import DECISIONS, analyze
from experiments.live.history import ArmCounts, History, Look, load_history

DATA = Path(__file__).parents[2] / "data" / "histories"
CONFIG = load_config(DATA / "experiment.yaml")


def run(name: str):
    return analyze(load_history(DATA / f"{name}.json", allow_resets=True), CONFIG)


@pytest.mark.parametrize(
    ("name", "decision", "cause"),
    [
        ("ship", "ship", "final stage passed"),
        ("ramp", "ramp", "ramp to 5%"),
        ("hold", "hold", "has run 30 min of 60 min"),
        ("rollback", "rollback", "significantly worse"),
        ("rollback_guardrail", "rollback", "error_rate"),
        ("blocked_srm", "blocked", "sample ratio mismatch"),
        ("counter_reset", "blocked", "counter reset"),
        ("blocked_missing_outcomes", "blocked", "model arm has no reported outcomes"),
        ("simpson_rollback", "rollback", "significantly worse"),
    ],
)
def test_recorded_histories(name: str, decision: str, cause: str) -> None:
    result = run(name)
    assert result.decision == decision, result.reason
    assert cause in result.reason


def test_ramp_gives_the_next_stage_weights_and_rollback_turns_the_model_off() -> None:
    assert run("ramp").next_weights == {"legacy": 0.95, "model": 0.05}
    assert run("rollback").next_weights == {"legacy": 1.0, "model": 0.0}
    assert run("hold").next_weights is None


def test_hold_names_every_missing_condition_with_numbers() -> None:
    result = run("hold")
    assert "500 of 1000 model-arm exposures" in result.reason and "has run 30 min of 60 min" in result.reason
    assert "about 60 min to go" in result.reason  # 500 more exposures at 1,000 an hour
    assert "request-level (no buckets)" in result.reason and result.counted_by == "request"
    # An early stage waits for its minimums only; non-inferiority is what ship needs.
    assert "non-inferiority" not in result.reason and result.code == "stage_minimums"


def final_stage(model_successes: int, model_outcomes: int) -> History:
    """50% for two hours, then the final stage (100%) for an hour: legacy 88%, the model as given at 50%.

    At 100% no legacy traffic is left, so the comparison rests on the 50% period.
    """
    t0 = load_history(DATA / "hold.json").looks[0].time
    half, full = {"legacy": 0.5, "model": 0.5}, {"legacy": 0.0, "model": 1.0}
    looks = [Look(t0 + timedelta(hours=h), half, {"legacy": ArmCounts(h * 5000, h * 4400),
                                                   "model": ArmCounts(h * model_outcomes, h * model_successes)})
             for h in (1, 2)]
    for h, extra in ((3, 100), (4, 2100)):  # the final stage starts at its first look and runs an hour
        looks.append(Look(t0 + timedelta(hours=h), full, {
            "legacy": ArmCounts(10_000, 8800), "model": ArmCounts(2 * model_outcomes + extra, 2 * model_successes + extra * 88 // 100)}))
    return History("clf-v2-vs-legacy", tuple(looks))


def test_ship_needs_non_inferiority_at_the_final_stage() -> None:
    shown = analyze(final_stage(4450, 5000), CONFIG)  # +1 pp on 10,000 outcomes per arm
    assert shown.decision == "ship", shown.reason
    assert shown.difference.non_inferiority_lower_bound > -0.01
    unclear = analyze(final_stage(4362, 5000), CONFIG)  # -0.76 pp: no harm shown, nor non-inferiority
    assert unclear.decision == "hold" and unclear.code == "non_inferiority_not_shown", unclear.reason
    assert "non-inferiority not shown" in unclear.reason and unclear.power.pending == "non_inferiority"


def test_guardrail_reports_latency_too() -> None:
    names = {g.name: g for g in run("rollback_guardrail").guardrails}
    assert names["error_rate"].breached and names["p99_latency_ms"].breached
    assert names["p99_latency_ms"].value == pytest.approx(310)
    assert not names["fallback_rate"].breached


def test_simpson_pooling_would_say_the_opposite() -> None:
    result = run("simpson_rollback")
    pooled_diff = result.arms["model"].rate - result.arms["legacy"].rate
    assert pooled_diff > 0.05  # naive pooling: model looks 10 points better
    assert result.difference.estimate == pytest.approx(-0.03, abs=1e-3)
    assert result.difference.strata == 2


def test_pooled_ztest_is_statsmodels() -> None:
    result = run("ramp")
    m, legacy = result.arms["model"], result.arms["legacy"]
    z, p = proportions_ztest([m.successes, legacy.successes], [m.outcomes, legacy.outcomes])
    assert result.pooled_ztest == pytest.approx({"statistic": z, "p_value": p})


def test_srm_is_computed_against_the_weights_of_each_period() -> None:
    result = run("ship")
    assert not result.srm.mismatch
    assert result.srm.expected["model"] == pytest.approx(result.srm.observed["model"], rel=0.01)


def test_to_dict_is_json_with_decision_and_reason_on_top() -> None:
    for name in ("ship", "hold", "counter_reset", "blocked_srm"):
        doc = json.loads(json.dumps(run(name).to_dict(), allow_nan=False))
        assert doc["decision"] in DECISIONS
        assert doc["reason"]
    doc = run("ramp").to_dict()
    assert set(doc) >= {"decision", "reason", "stage", "next_weights", "arms", "difference", "power", "srm", "guardrails"}
    assert doc["difference"]["ci"][0] < doc["difference"]["estimate"] < doc["difference"]["ci"][1]
    assert doc["power"]["needed_effective_sample_sequential"] > doc["power"]["needed_effective_sample_fixed"]


def test_empty_history_and_unknown_stage_are_blocked() -> None:
    assert analyze(History("x", ()), CONFIG).decision == "blocked"
    history = load_history(DATA / "ramp.json")
    odd = CONFIG.model_copy(update={"ramp": CONFIG.ramp.model_copy(update={"stages": CONFIG.ramp.stages[1:]})})
    result = analyze(history, odd)
    assert result.decision == "blocked" and "not a configured stage" in result.reason


def test_after_a_rollback_the_analysis_says_rolled_back_not_blocked() -> None:
    """A controller left running after its rollback must not page as blocked 30 minutes later."""
    history = load_history(DATA / "ramp.json")
    last = history.looks[-1]
    zero = {"legacy": 1.0, "model": 0.0}
    later = [replace(last, time=last.time + timedelta(minutes=m), weights=zero) for m in (1, 2)]
    result = analyze(History(history.experiment, (*history.looks, *later)), CONFIG)
    assert (result.decision, result.code, result.next_weights) == ("rollback", "rolled_back", zero)
    assert later[0].time.isoformat() in result.reason
    never = History(history.experiment, tuple(replace(look, weights=zero) for look in history.looks))
    assert analyze(never, CONFIG).decision == "blocked" and "has not started" in analyze(never, CONFIG).reason


def test_now_counts_toward_the_stage_duration_and_analyze_is_pure() -> None:
    history = load_history(DATA / "hold.json")
    later = analyze(history, CONFIG, now=history.looks[-1].time + timedelta(hours=2))
    assert "has run" not in later.reason
    assert analyze(history, CONFIG) == analyze(history, CONFIG)


def test_replaying_looks_moves_through_the_stages() -> None:
    history = load_history(DATA / "ship.json")
    decisions = [analyze(history.upto(n), CONFIG).decision for n in range(1, len(history.looks) + 1)]
    assert decisions[-1] == "ship"
    assert "ramp" in decisions and "rollback" not in decisions


def test_one_unlucky_request_is_not_evidence() -> None:
    t0 = load_history(DATA / "hold.json").looks[0].time
    weights = {"legacy": 0.99, "model": 0.01}
    looks = [Look(t0, weights, {"legacy": ArmCounts(99, 90), "model": ArmCounts(1, 0)}),
             Look(t0 + timedelta(hours=2), weights, {"legacy": ArmCounts(198, 180), "model": ArmCounts(2, 1)})]
    result = analyze(History("clf-v2-vs-legacy", tuple(looks)), CONFIG)
    assert result.decision == "hold"
    assert result.difference is not None
    assert result.difference.ci == (float("-inf"), float("inf"))
