"""Grafana dashboards: committed JSON equals the builder, and every panel query returns data from a real Prometheus.

The Prometheus check scrapes a stand-in exporter (tests.support.prometheus.RouterExporter plus the
skew metrics) that serves the router's metric names and labels from ARCHITECTURE.md. Once the
router runs end to end, the same check should scrape a real `modelramp router` under load.
"""

from __future__ import annotations

import json
import math
import re

import httpx
import pytest
from prometheus_client import Counter, Gauge

from experiments import dashboards
from tests.deploy.manifests import CHART, K8S
from tests.support.prometheus import PrometheusServer, RouterExporter

EXPERIMENT, MODEL = "churn-v2-vs-legacy", "churn"
# What Grafana substitutes, with windows that fit a 100 ms scrape interval.
GRAFANA_VARIABLES = {"experiment": EXPERIMENT, "model": MODEL, "__rate_interval": "3s", "__range": "1m", "__interval": "1s"}
FEATURES = ("tenure", "monthly_charges", "contract", dashboards.PREDICTION_FEATURE)


def boards() -> dict[str, dict]:
    return {name: json.loads(dashboards.render(name)) for name in dashboards.DASHBOARDS}


@pytest.mark.parametrize("folder", [K8S / "dashboards", CHART / "dashboards"], ids=["k8s", "chart"])
def test_committed_json_is_what_the_builder_writes(folder):
    for name in dashboards.DASHBOARDS:
        assert (folder / f"{name}.json").read_text() == dashboards.render(name), \
            f"{folder / name}.json is stale: run python -m experiments.dashboards"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(dashboards.DASHBOARDS)


def test_dashboards_cover_what_issue_6_asks_for():
    titles = {name: [p["title"] for p in b["panels"]] for name, b in boards().items()}
    for name, wanted in {
        "modelramp-experiment": ["Traffic share per arm", "Exposures per arm", "Success rate per arm (95% Wilson interval)", "Decisions: model share over time"],
        "modelramp-serving": ["Request rate per arm", "Latency percentiles per arm", "Backend error rate per arm", "Fallback rate per arm"],
        "modelramp-skew": ["Drift per feature (all statistics)", "Prediction drift", "Anomaly rate by feature and kind"],
    }.items():
        assert set(wanted) <= set(titles[name]), titles[name]


def test_panels_are_well_formed():
    for name, board in boards().items():
        assert board["uid"] == name and board["templating"]["list"][0]["name"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (name, panel["title"])
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            if panel["type"] != "row":
                assert panel["targets"], (name, panel["title"])


def test_dashboards_reuse_the_analyzers_named_queries():
    exprs = {e for b in boards().values() for _, e in dashboards.panel_queries(b)}
    text = "\n".join(exprs)
    shown = (*dashboards.LOOK_COUNTS, "model_error_rate", "model_fallback_rate", "model_p99_latency_seconds", "traffic_weight", "traffic_weight_spread", "request_rate", "error_rate",
             "fallback_rate", "success_rate", "p99_latency_seconds", "feature_drift", "feature_anomaly_rate")
    for name in shown:
        assert dashboards.q(name) in text, f"no panel shows experiments.promql query {name!r}"


class SkewExporter(RouterExporter):
    """The router's metrics plus its breaker gauge and the skew monitors' (modelramp_feature_drift, modelramp_feature_anomalies_total)."""

    def _make_metrics(self) -> None:
        super()._make_metrics()
        self.drift = Gauge("modelramp_feature_drift", "Drift", ["model", "feature", "statistic"], registry=self.registry)
        self.anomalies = Counter("modelramp_feature_anomalies", "Anomalies", ["model", "feature", "kind"], registry=self.registry)
        self.circuit_open = Gauge("modelramp_circuit_open", "Breaker open", ["experiment", "arm"], registry=self.registry)

    def traffic(self) -> None:
        """One burst of both arms' traffic, outcomes, errors, fallbacks and anomalies."""
        self.serve(EXPERIMENT, "legacy", requests=99, successes=60, failures=20, latency=0.02)
        self.serve(EXPERIMENT, "model", requests=10, successes=7, failures=2, errors=1, fallbacks=1, latency=0.04, protocol="grpc")
        for kind in ("missing", "out_of_range"):
            self.anomalies.labels(MODEL, "tenure", kind).inc()


@pytest.fixture(scope="module")
def prometheus():
    exporter = SkewExporter()
    exporter.set_weights(EXPERIMENT, {"legacy": 0.99, "model": 0.01})
    for arm in ("legacy", "model"):
        exporter.circuit_open.labels(EXPERIMENT, arm).set(0)
    for i, feature in enumerate(FEATURES):
        for statistic in ("psi", "js_distance", "linf"):
            exporter.drift.labels(MODEL, feature, statistic).set(0.01 * (i + 1))
    exporter.traffic()
    server = PrometheusServer([exporter.target])
    yield server, exporter
    server.stop()
    exporter.close()


def substitute(expr: str) -> str:
    unknown = set(re.findall(r"\$\{?(\w+)", expr)) - set(GRAFANA_VARIABLES)
    assert not unknown, f"variables no test substitutes: {unknown}"
    return re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARIABLES[m.group(1)], expr)


def _finite(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(float(s["value"][1])) for s in result)


@pytest.mark.parametrize("dashboard", list(dashboards.DASHBOARDS))
def test_every_panel_query_returns_finite_data_from_real_prometheus(prometheus, dashboard):
    server, exporter = prometheus
    board = boards()[dashboard]
    for title, expr in dashboards.panel_queries(board):
        query = substitute(expr)

        def answered() -> bool:
            exporter.traffic()  # counters keep moving, so rates and ratios are defined
            return _finite(server.query(query))

        try:
            server.wait_for(query, lambda _: answered(), what=f"{dashboard} / {title}: data for {query}")
        except TimeoutError:
            pytest.fail(f"{dashboard} / {title}: no finite data for\n{query}\ngot {server.query(query)}")
    for annotation in board.get("annotations", {}).get("list", []):
        server.query(substitute(annotation["expr"]))  # parses and evaluates (status success)


@pytest.mark.parametrize("variable, metric, value", [("experiment", "modelramp_traffic_weight", EXPERIMENT),
                                                     ("experiment", "modelramp_requests_total", EXPERIMENT),
                                                     ("model", "modelramp_feature_drift", MODEL)])
def test_template_variables_find_their_values(prometheus, variable, metric, value):
    """Grafana's label_values(metric, label) asks Prometheus' label values API like this."""
    server, _ = prometheus
    board_vars = [v for b in boards().values() for v in b["templating"]["list"] if v["name"] == variable]
    assert any(v["query"] == f"label_values({metric}, {variable})" for v in board_vars) or metric == "modelramp_requests_total"
    body = httpx.get(f"{server.url}/api/v1/label/{variable}/values", params={"match[]": metric}).json()
    assert value in body["data"]
