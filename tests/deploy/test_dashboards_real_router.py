"""Every dashboard panel against a real Prometheus scraping real `modelramp router` processes (tests/deploy/live.py).

The experiment and serving dashboards read the serving router (real legacy system, failing model
backend: real errors and fallbacks); the skew dashboard reads the router started with `--baseline`,
whose sketches, drift verdicts, limits and anomaly counters fill from skewed test-split traffic.
The experiment dashboard's decision panels read `DecisionMetrics` gauges of the analyzer's own
decisions on recorded histories, served over HTTP and scraped by the same Prometheus.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest
import yaml

from k8s import dashboards
from tests.deploy.live import MODEL, SERVING_EXPERIMENT, recorded_decision
from tests.deploy.manifests import K8S
from tests.support.processes import wait_until

# What Grafana substitutes, with windows that fit a 100 ms scrape interval.
VARIABLES = {"experiment": SERVING_EXPERIMENT, "model": MODEL, "__rate_interval": "3s", "__range": "1m", "__interval": "1s"}

pytestmark = pytest.mark.slow


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", VARIABLES[name]).replace(f"${name}", VARIABLES[name])
    assert "$" not in expr, expr
    return expr


def finite(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)


@pytest.mark.parametrize("dashboard", list(dashboards.DASHBOARDS))
def test_every_panel_query_returns_finite_data_from_a_real_router(live_stack, dashboard):
    board = json.loads(dashboards.render(dashboard))
    queries = list(dashboards.panel_queries(board))
    assert queries
    for title, expr in queries:
        query = substitute(expr)

        def answered(query: str = query) -> bool:
            live_stack.traffic()
            return finite(live_stack.prometheus.query(query))

        try:
            wait_until(answered, timeout=60, what=query)
        except TimeoutError:
            pytest.fail(f"{dashboard} / {title}: no finite data from the real router for\n{query}\ngot {live_stack.prometheus.query(query)}")
    for annotation in board.get("annotations", {}).get("list", []):
        live_stack.prometheus.query(substitute(annotation["expr"]))  # parses and evaluates (status success)


@pytest.mark.parametrize("variable, metric, value", [("experiment", "modelramp_traffic_weight", SERVING_EXPERIMENT),
                                                     ("experiment", "modelramp_requests_total", SERVING_EXPERIMENT),
                                                     ("model", "modelramp_feature_drift", MODEL)])
def test_template_variables_find_their_values(live_stack, variable, metric, value):
    """Grafana's label_values(metric, label) asks Prometheus' label values API like this."""
    board_vars = [v for b in dashboards.DASHBOARDS for v in json.loads(dashboards.render(b))["templating"]["list"] if v["name"] == variable]
    assert any(v["query"] == f"label_values({metric}, {variable})" for v in board_vars) or metric == "modelramp_requests_total"

    def found() -> bool:
        live_stack.traffic()
        body = httpx.get(f"{live_stack.prometheus.url}/api/v1/label/{variable}/values", params={"match[]": metric}).json()
        return value in body["data"]

    wait_until(found, timeout=60, what=f"{value} among the values of {variable} on {metric}")


def test_the_router_labels_what_the_dashboards_and_alerts_select(live_stack):
    server = live_stack.prometheus
    model_arm = f'experiment="{SERVING_EXPERIMENT}", arm="model"'

    def labelled() -> bool:
        live_stack.serving_traffic()
        arms = {s["metric"]["arm"] for s in server.query(f'modelramp_requests_total{{experiment="{SERVING_EXPERIMENT}"}}')}
        # The guardrail alerts divide model-arm fallbacks and errors by model-arm requests.
        return arms == {"legacy", "model"} and bool(server.query(f"modelramp_fallbacks_total{{{model_arm}}}")) \
            and bool(server.query(f"modelramp_backend_errors_total{{{model_arm}}}"))

    wait_until(labelled, timeout=60, what="both arms, model-arm fallbacks and errors in Prometheus")


def panel_exprs(title: str) -> list[str]:
    board = json.loads(dashboards.render("modelramp-experiment"))
    exprs = [substitute(expr) for t, expr in dashboards.panel_queries(board) if t == title]
    assert exprs, f"no panel {title!r}"
    return exprs


def settle(live_stack, expr: str, done) -> list[dict]:
    """Poll Prometheus (it scrapes the decision exporter every 100 ms) until the result satisfies `done`."""
    last: list[list[dict]] = [[]]

    def check() -> bool:
        last[0] = live_stack.prometheus.query(expr)
        return done(last[0])

    try:
        wait_until(check, timeout=30, what=expr)
    except TimeoutError:
        pytest.fail(f"no settled result for\n{expr}\nlast: {last[0]}")
    return last[0]


def labels(result: list[dict], label: str) -> list[str]:
    return sorted(s["metric"].get(label, "") for s in result)


@pytest.mark.parametrize("history, decision, code", [("rollback", "rollback", "harm"),
                                                     ("blocked_srm", "blocked", "sample_ratio_mismatch"),
                                                     ("hold", "hold", "stage_minimums")])
def test_decision_panels_and_alerts_show_the_analyzers_decision(live_stack, history, decision, code):
    """The analyzer's decision on a recorded history, exported by DecisionMetrics and scraped: one decision, one reason."""
    rules = {r["alert"]: r["expr"] for g in yaml.safe_load((K8S / "rules" / "modelramp.rules.yaml").read_text())["groups"]
             for r in g["rules"]}
    analysis = recorded_decision(history)
    assert (analysis.decision, analysis.code) == (decision, code)
    live_stack.decide(analysis)
    try:
        [current] = panel_exprs("Current decision")
        assert labels(settle(live_stack, current, lambda r: labels(r, "decision") == [decision]), "decision") == [decision]
        [reason] = panel_exprs("Decision reason")
        settle(live_stack, reason, lambda r: labels(r, "code") == [code])
        # The alerts read the same gauges: rollback and SRM fire on these decisions and only on them.
        fired = {name: bool(live_stack.prometheus.query(rules[name])) for name in ("ModelrampRolledBack", "ModelrampSampleRatioMismatch")}
        assert fired == {"ModelrampRolledBack": decision == "rollback", "ModelrampSampleRatioMismatch": code == "sample_ratio_mismatch"}
        blocked = live_stack.prometheus.query(rules["ModelrampDecisionBlocked"])
        assert labels(blocked, "experiment") == ([SERVING_EXPERIMENT] if decision == "blocked" else [])
        # Just decided: the decision is fresh, and the stale alert stays quiet.
        [age] = panel_exprs("Age of the latest decision")
        assert 0 <= float(live_stack.prometheus.query(age)[0]["value"][1]) < 60
        assert not live_stack.prometheus.query(rules["ModelrampDecisionStale"])
    finally:
        live_stack.decide(recorded_decision("hold"))


def test_decision_statistics_panels_show_the_exported_numbers(live_stack):
    analysis = recorded_decision("hold")
    live_stack.decide(analysis)
    assert analysis.stage is not None and analysis.difference is not None and analysis.srm is not None
    diff = analysis.difference
    wanted = {"estimate": diff.estimate, "ci_lower": diff.ci[0], "ci_upper": diff.ci[1], "harm_upper": diff.harm_upper_bound,
              "non_inferiority_lower": diff.non_inferiority_lower_bound}
    [difference] = panel_exprs("Difference model - legacy: estimate, always-valid CI, harm and non-inferiority bounds")
    result = settle(live_stack, difference, lambda r: len(r) == len(wanted))
    assert {s["metric"]["bound"]: float(s["value"][1]) for s in result} == pytest.approx(wanted)
    assert wanted["ci_lower"] < wanted["estimate"] < wanted["ci_upper"]

    def values(title: str) -> list[float]:
        return [float(live_stack.prometheus.query(e)[0]["value"][1]) for e in panel_exprs(title)]

    stage = analysis.stage
    assert values("Stage") == [stage.percent, stage.index]
    assert values("Time in stage against its minimum") == [stage.duration_seconds, stage.min_duration_seconds]
    assert values("Model-arm exposures against the stage minimum") == [stage.model_exposures, stage.min_samples]
    assert values("SRM and outcome-rate p-values") == pytest.approx([analysis.srm.p_value, analysis.srm.outcome_rate_p_value])
    [breached] = panel_exprs("Guardrails breached")
    assert {s["metric"]["guardrail"]: float(s["value"][1]) for s in live_stack.prometheus.query(breached)} == \
        {g.name: float(g.breached) for g in analysis.guardrails}
