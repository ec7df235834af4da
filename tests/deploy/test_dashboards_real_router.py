"""The experiment and serving-health dashboards against a real Prometheus scraping a real `modelramp router`.

The router splits real predict requests between the real legacy system (`modelramp legacy`) and a
model backend that refuses connections, so the model arm's backend errors, fallbacks and latency
series are real too; outcomes are reported with the router's signed request ids. The skew
dashboard is checked against the stand-in exporter in test_dashboards.py until the router exports
the skew metrics (issue 5).
"""

from __future__ import annotations

import itertools
import json
import math

import httpx
import pytest
import yaml

from experiments import dashboards
from tests.support.processes import Process, free_port, wait_until
from tests.support.prometheus import PrometheusServer

EXPERIMENT = "dash-check"
# One churn-data row in TF Serving's REST shape (the legacy system scores it; the model arm fails).
ROW = {"state": "KS", "area_code": "area_code_415", "international_plan": "no", "voice_mail_plan": "yes",
       "account_length": 128.0, "number_vmail_messages": 25.0, "total_day_minutes": 265.1, "total_day_calls": 110.0,
       "total_day_charge": 45.07, "total_eve_minutes": 197.4, "total_eve_calls": 99.0, "total_eve_charge": 16.78,
       "total_night_minutes": 244.7, "total_night_calls": 91.0, "total_night_charge": 11.01, "total_intl_minutes": 10.0,
       "total_intl_calls": 3.0, "total_intl_charge": 2.7, "number_customer_service_calls": 1.0}
UNITS = itertools.count(1)
VARIABLES = {"experiment": EXPERIMENT, "__rate_interval": "3s", "__range": "1m", "__interval": "1s"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(legacy_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dash-router")
    config = {"name": EXPERIMENT, "salt": "dash-salt", "model_name": "churn",
              "arms": {"legacy": {"weight": 0.5, "backend": {"kind": "legacy_http", "url": legacy_server.url}},
                       # Nobody listens there: every model-arm call fails and falls back to legacy.
                       "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": f"127.0.0.1:{free_port()}",
                                                            "model_name": "churn", "timeout_ms": 200}}},
              "fallback": {"policy": "legacy", "circuit_breaker": {"enabled": False}}}
    (tmp / "experiment.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    router = Process(["router", "--config", str(tmp / "experiment.yaml"), "--host", "127.0.0.1", "--http-port", str(port),
                      "--grpc-port", str(free_port())], tmp / "router.log", env={"MODELRAMP_SIGNING_KEY": "dash-check-key"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout=60,
                   what="router up", proc=router.proc)
        server = PrometheusServer([f"127.0.0.1:{port}"])
    except Exception:
        print(router.log())
        router.stop()
        raise
    client = httpx.Client(base_url=url, timeout=5.0)
    yield server, client
    client.close()
    server.stop()
    router.stop()


def traffic(client: httpx.Client, n: int = 8) -> None:
    """Predict requests from distinct units, and an outcome for each (every third a failure)."""
    outcomes = []
    for unit in itertools.islice(UNITS, n):
        r = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"u{unit}"})
        assert r.status_code == 200, r.text
        outcomes.append({"request_id": r.headers["X-Request-Id"], "success": unit % 3 != 0})
    assert client.post("/v1/outcomes", json=outcomes).status_code < 300


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(f"${name}", VARIABLES[name])
    assert "$" not in expr, expr
    return expr


@pytest.mark.parametrize("dashboard", ["modelramp-experiment", "modelramp-serving"])
def test_every_panel_query_returns_finite_data_from_a_real_router(stack, dashboard):
    server, client = stack
    board = json.loads(dashboards.render(dashboard))
    for title, expr in dashboards.panel_queries(board):
        query = substitute(expr)

        def answered() -> bool:
            traffic(client)
            result = server.query(query)
            return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)

        try:
            wait_until(answered, timeout=30, what=query)
        except TimeoutError:
            pytest.fail(f"{dashboard} / {title}: no finite data from the real router for\n{query}\ngot {server.query(query)}")


def test_the_router_labels_what_the_dashboards_and_alerts_select(stack):
    server, client = stack
    traffic(client)
    arms = {s["metric"]["arm"] for s in server.query(f'modelramp_requests_total{{experiment="{EXPERIMENT}"}}')}
    assert arms == {"legacy", "model"}
    # The guardrail alerts divide model-arm fallbacks and errors by model-arm requests.
    assert server.query(f'modelramp_fallbacks_total{{experiment="{EXPERIMENT}", arm="model"}}')
    assert server.query(f'modelramp_backend_errors_total{{experiment="{EXPERIMENT}", arm="model"}}')
