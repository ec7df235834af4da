"""Every dashboard panel against a real Prometheus scraping real `modelramp router` processes (tests/deploy/live.py).

The experiment and serving dashboards read the serving router (real legacy system, failing model
backend: real errors and fallbacks); the skew dashboard reads the router started with `--baseline`,
whose sketches, drift verdicts, limits and anomaly counters fill from skewed test-split traffic.
The experiment dashboard's decision panels read `DecisionMetrics` gauges of the analyzer's own
decisions on recorded histories, served over HTTP and scraped by the same Prometheus; and, from a
second Prometheus scraping a real Pushgateway, the gauges a real ramp controller (`modelramp ramp
--once --dry-run`, reading the first Prometheus) pushed, healthy and failing. The serving router
also rejects a configuration file and forged outcome reports, so the panels of rejected reloads
and outcomes have data to show.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import httpx
import pytest
import yaml

from k8s import dashboards
from tests.deploy.live import MODEL, SERVING_EXPERIMENT, recorded_decision
from tests.deploy.manifests import K8S
from tests.support.processes import Process, free_port, wait_until
from tests.support.prometheus import PrometheusServer, Pushgateway

# What Grafana substitutes, with windows that fit a 100 ms scrape interval; the namespace
# variable's All (these Prometheus targets have no namespace label, which .* matches too), and the
# limits' constants as the committed dashboards hold them (the chart's default values).
VARIABLES = {"experiment": SERVING_EXPERIMENT, "model": MODEL, "namespace": ".*", "__rate_interval": "3s", "__range": "1m",
             "__interval": "1s", **dashboards.limits()}
RULES = {r["alert"]: r for g in yaml.safe_load((K8S / "rules" / "modelramp.rules.yaml").read_text())["groups"] for r in g["rules"]}
# The test Prometheus' job of the router targets (the chart's is the router Service's name).
JOB = "router"

pytestmark = pytest.mark.slow


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", VARIABLES[name]).replace(f"${name}", VARIABLES[name])
    assert "$" not in expr, expr
    return expr


def serving_config(live_stack) -> Path:
    """The experiment file the serving router watches (its --config)."""
    args = live_stack.processes[0].args
    return Path(args[args.index("--config") + 1])


def reject_config(live_stack) -> None:
    """Put an invalid experiment file in place (renamed over it, as a ConfigMap swap does) until the router rejects it, then restore it."""
    path = serving_config(live_stack)
    good = path.read_text()
    query = 'sum(modelramp_config_reloads_total{result="rejected", source="file"})'
    before = sum(float(s["value"][1]) for s in live_stack.prometheus.query(query))
    for text in ("arms: [not, valid\n", good):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        if text != good:
            live_stack.prometheus.wait_for(query, lambda r: bool(r) and float(r[0]["value"][1]) > before, "a rejected config reload")


def reject_outcomes(live_stack, n: int = 3) -> None:
    """Outcome reports with ids the router never signed: each one rejected."""
    for i in range(n):
        r = live_stack.serving.post("/v1/outcomes", json=[{"request_id": f"forged-{i}", "success": True}])
        assert r.status_code >= 400, r.text


@pytest.fixture(scope="module")
def rejections(live_stack):
    """Two rejected reloads (increase() counts from the second sample of a new series on) and rejected outcomes."""
    reject_config(live_stack)
    reject_config(live_stack)
    reject_outcomes(live_stack)
    return live_stack


def finite(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)


@pytest.mark.parametrize("dashboard", list(dashboards.DASHBOARDS))
def test_every_panel_query_returns_finite_data_from_a_real_router(rejections, dashboard):
    live_stack = rejections
    board = json.loads(dashboards.render(dashboard))
    queries = list(dashboards.panel_queries(board))
    assert queries
    for title, expr in queries:
        query = substitute(expr)

        def answered(query: str = query) -> bool:
            live_stack.traffic()
            reject_outcomes(live_stack, 1)  # the rate of rejected outcomes over the 3 s window
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
    """Grafana's label_values(metric{namespace=~"$namespace"}, label) asks Prometheus' label values API like this (namespace All)."""
    selector = f'{metric}{{namespace=~"$namespace"}}'
    board_vars = [v for b in dashboards.DASHBOARDS for v in json.loads(dashboards.render(b))["templating"]["list"] if v["name"] == variable]
    assert any(v["query"] == f"label_values({selector}, {variable})" for v in board_vars)

    def found() -> bool:
        live_stack.traffic()
        body = httpx.get(f"{live_stack.prometheus.url}/api/v1/label/{variable}/values", params={"match[]": substitute(selector)}).json()
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


def labels(result: list[dict], label: str) -> list[str]:
    return sorted(s["metric"].get(label, "") for s in result)


@pytest.mark.parametrize("history, decision, code", [("rollback", "rollback", "harm"),
                                                     ("blocked_srm", "blocked", "sample_ratio_mismatch"),
                                                     ("hold", "hold", "stage_minimums")])
def test_decision_panels_and_alerts_show_the_analyzers_decision(live_stack, history, decision, code):
    """The analyzer's decision on a recorded history, exported by DecisionMetrics and scraped: one decision, one reason."""
    rules = {name: rule["expr"] for name, rule in RULES.items()}
    analysis = recorded_decision(history)
    assert (analysis.decision, analysis.code) == (decision, code)
    live_stack.decide(analysis)
    try:
        [current] = panel_exprs("Current decision")
        assert labels(live_stack.prometheus.settle(current, lambda r: labels(r, "decision") == [decision]), "decision") == [decision]
        [reason] = panel_exprs("Decision reason")
        live_stack.prometheus.settle(reason, lambda r: labels(r, "code") == [code])
        # The alerts read the same gauges: rollback and SRM fire on these decisions and only on them.
        fired = {name: bool(live_stack.prometheus.query(rules[name])) for name in ("ModelrampRolledBack", "ModelrampSampleRatioMismatch")}
        assert fired == {"ModelrampRolledBack": decision == "rollback", "ModelrampSampleRatioMismatch": code == "sample_ratio_mismatch"}
        blocked = live_stack.prometheus.query(rules["ModelrampDecisionBlocked"])
        assert labels(blocked, "experiment") == ([SERVING_EXPERIMENT] if decision == "blocked" else [])
        # Just decided: the decision is fresh, and the stale alert stays quiet.
        age, alert_after = panel_exprs("Age of the latest decision")
        assert 0 <= float(live_stack.prometheus.query(age)[0]["value"][1]) < 60
        assert float(live_stack.prometheus.query(alert_after)[0]["value"][1]) == float(VARIABLES["decision_stale_seconds"])
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
    difference, zero = panel_exprs(dashboards.DIFFERENCE_TITLE)
    assert [float(s["value"][1]) for s in live_stack.prometheus.query(zero)] == [0]
    result = live_stack.prometheus.settle(difference, lambda r: len(r) == len(wanted))
    assert {s["metric"]["bound"]: float(s["value"][1]) for s in result} == pytest.approx(wanted)
    assert wanted["ci_lower"] < wanted["estimate"] < wanted["ci_upper"]

    def values(title: str) -> list[float]:
        # The decision just exported reaches Prometheus at its next scrape of the exporter (every 100 ms).
        return [float(live_stack.prometheus.settle(e, bool)[0]["value"][1]) for e in panel_exprs(title)]

    stage = analysis.stage
    assert values("Stage") == [stage.percent, stage.index]
    assert values("Time in stage against its minimum") == [stage.duration_seconds, stage.min_duration_seconds]
    assert values("Model-arm exposures against the stage minimum") == [stage.model_exposures, stage.min_samples]
    # The p-values, and the threshold line: the experiment's srmPValue (the chart's default here).
    assert values("SRM and outcome-rate p-values") == pytest.approx([analysis.srm.p_value, analysis.srm.outcome_rate_p_value,
                                                                     float(VARIABLES["srm_p_value"])])
    [breached] = panel_exprs("Guardrails breached")
    assert {s["metric"]["guardrail"]: float(s["value"][1]) for s in live_stack.prometheus.query(breached)} == \
        {g.name: float(g.breached) for g in analysis.guardrails}


def board_exprs(dashboard: str, title: str) -> list[str]:
    board = json.loads(dashboards.render(dashboard))
    exprs = [substitute(expr) for t, expr in dashboards.panel_queries(board) if t == title]
    assert exprs, f"no panel {title!r} in {dashboard}"
    return exprs


def test_rejected_reload_and_outcome_panels_count_the_routers_rejections(rejections):
    live_stack = rejections
    [reloads] = board_exprs("modelramp-serving", dashboards.RELOADS_TITLE)
    # Rejected files within the panel's range (1m here): the fixture's may be older by now.
    reject_config(live_stack)
    reject_config(live_stack)
    result = live_stack.prometheus.settle(reloads, lambda r: bool(r))
    assert labels(result, "source") == ["file"] and float(result[0]["value"][1]) >= 0.9, result
    [in_range] = board_exprs("modelramp-serving", "Rejected outcomes in the time range")
    [per_second] = board_exprs("modelramp-serving", dashboards.REJECTED_OUTCOMES_TITLE)

    def rejected(expr: str) -> list[dict]:
        last: list[list[dict]] = [[]]

        def check() -> bool:
            reject_outcomes(live_stack, 2)
            last[0] = live_stack.prometheus.query(expr)
            return bool(last[0]) and all(float(s["value"][1]) > 0 for s in last[0])

        wait_until(check, timeout=30, what=expr)
        return last[0]

    for expr in (in_range, per_second):
        result = rejected(expr)
        assert labels(result, "reason") and all(s["metric"]["reason"] for s in result), result
    # The router still serves its configuration: the rejected files changed nothing.
    live_stack.serving_traffic()


def test_outcome_coverage_panel_counts_outcomes_per_exposure(live_stack):
    windowed, over_range = board_exprs("modelramp-experiment", dashboards.COVERAGE_TITLE)

    # serving_traffic reports one outcome per request: about 1 outcome per exposure in both arms.
    # Over a window of seconds a scrape can hold a batch's requests before their outcomes (on a
    # busy machine the ratio of one query swung outside 0.5-1.5), so the panel must come to about
    # 1 per exposure in both arms while traffic runs, not at the first query that has both arms.
    def covered(expr: str) -> bool:
        live_stack.serving_traffic()
        result = live_stack.prometheus.query(expr)
        return labels(result, "arm") == ["legacy", "model"] and all(0.5 < float(s["value"][1]) < 1.5 for s in result)

    for expr in (windowed, over_range):
        wait_until(functools.partial(covered, expr), timeout=60, what=f"about one outcome per exposure in both arms: {expr}")


def test_restart_safe_totals_match_the_raw_counters_growth(live_stack):
    """The exposures panel (increase over the range) grows with the traffic, as the raw counters do between two instants."""
    [exposures] = board_exprs("modelramp-experiment", "Exposures per arm")
    live_stack.serving_traffic()
    result = live_stack.prometheus.settle(exposures, lambda r: labels(r, "arm") == ["legacy", "model"])
    assert all(float(s["value"][1]) > 0 for s in result)


def test_availability_alerts_on_the_real_routers(live_stack):
    """The router alerts select `up` of the routers' job: quiet while every router is scraped, firing for a job with none."""
    server = live_stack.prometheus
    absent, down = (RULES[name]["expr"].replace('job="modelramp-router"', f'job="{JOB}"')
                    for name in ("ModelrampRoutersAbsent", "ModelrampRoutersDown"))
    assert f'job="{JOB}"' in absent and f'job="{JOB}"' in down
    server.settle(absent, lambda r: r == [])
    assert server.query(down) == []
    nobody = absent.replace(f'job="{JOB}"', 'job="no-such-router"')
    assert [float(s["value"][1]) for s in server.query(nobody)] == [1]
    # The decision exporter publishes the serving experiment's gauges: not "not reporting"; another experiment is.
    not_reporting = RULES["ModelrampControllerNotReporting"]["expr"]
    server.settle(not_reporting.replace('experiment="churn-v2-vs-legacy"', f'experiment="{SERVING_EXPERIMENT}"'), lambda r: r == [])
    assert server.query(not_reporting)  # churn-v2-vs-legacy has no decision here


@pytest.fixture(scope="module")
def controller_prometheus(live_stack, tmp_path_factory):
    """A real Pushgateway and a second Prometheus scraping it (the chart's way for a CronJob controller)."""
    gateway = Pushgateway()  # in memory only: no earlier run's groups
    assert "modelramp_decision" not in gateway.metrics()
    try:
        server = PrometheusServer([gateway.url.removeprefix("http://")])
    except BaseException:
        gateway.stop()
        raise
    yield gateway, server, tmp_path_factory.mktemp("controller")
    server.stop()
    gateway.stop()


def run_controller(live_stack, gateway: Pushgateway, tmp: Path, prometheus_url: str, who: str) -> str:
    """`modelramp ramp --once --dry-run` on a copy of the serving router's experiment file, pushing to the gateway; its output."""
    config = tmp / "experiment.yaml"
    config.write_text(serving_config(live_stack).read_text())
    proc = Process(["ramp", "--config", str(config), "--prometheus", prometheus_url, "--db", str(tmp / "audit.db"),
                    "--pushgateway", gateway.url, "--once", "--dry-run", "--who", who], tmp / f"{who}.log")
    try:
        assert proc.proc.wait(timeout=180) == 0, proc.log()
    finally:
        proc.stop()
    return proc.log()


def test_controller_alerts_and_decision_panels_follow_a_real_controller(live_stack, controller_prometheus):
    gateway, server, tmp = controller_prometheus
    failing = RULES["ModelrampControllerFailing"]["expr"]
    not_reporting = RULES["ModelrampControllerNotReporting"]["expr"].replace('experiment="churn-v2-vs-legacy"',
                                                                              f'experiment="{SERVING_EXPERIMENT}"')
    assert server.query(not_reporting), "no controller has pushed yet"
    # A controller that cannot read Prometheus holds on its own, and says so: the failing alert's expression fires.
    run_controller(live_stack, gateway, tmp, f"http://127.0.0.1:{free_port()}", "blind")
    result = server.settle(failing, lambda r: labels(r, "experiment") == [SERVING_EXPERIMENT])
    assert result
    assert server.query(not_reporting) == []
    [reason] = [substitute(e) for t, e in dashboards.panel_queries(json.loads(dashboards.render("modelramp-experiment")))
                if t == "Decision reason"]
    assert labels(server.query(reason), "code") == ["controller_hold"]
    # The same controller reading the routers' Prometheus decides on the analysis: no longer failing, and
    # every decision panel shows the gauges it pushed.
    live_stack.serving_traffic()
    run_controller(live_stack, gateway, tmp, live_stack.prometheus.url, "seeing")
    server.settle(failing, lambda r: r == [])
    board = json.loads(dashboards.render("modelramp-experiment"))
    decision_titles = {t for t, e in dashboards.panel_queries(board) if "modelramp_decision" in e}
    for title, expr in dashboards.panel_queries(board):
        if title in decision_titles:
            server.settle(substitute(expr), finite)
    assert labels(server.query(reason), "code") != ["controller_hold"]
