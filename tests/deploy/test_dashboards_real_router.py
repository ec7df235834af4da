"""Every dashboard panel against a real Prometheus scraping real `modelramp router` processes (tests/deploy/live.py).

The experiment and serving dashboards read the serving router (real legacy system, failing model
backend: real errors and fallbacks); the skew dashboard reads the router started with `--baseline`,
whose sketches, drift verdicts, limits and anomaly counters fill from skewed test-split traffic.
"""

from __future__ import annotations

import json
import math

import httpx
import pytest

from k8s import dashboards
from tests.deploy.live import MODEL, SERVING_EXPERIMENT
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
