"""Grafana dashboards: the committed JSON is what the builder writes, and the panels are what an operator needs to see.

Whether every panel's query returns data is checked against a real Prometheus scraping real
routers, in test_dashboards_real_router.py.
"""

from __future__ import annotations

import json

import pytest

from k8s import dashboards
from tests.deploy.manifests import CHART, K8S


def boards() -> dict[str, dict]:
    return {name: json.loads(dashboards.render(name)) for name in dashboards.DASHBOARDS}


@pytest.mark.parametrize("folder", [K8S / "dashboards", CHART / "dashboards"], ids=["k8s", "chart"])
def test_committed_json_is_what_the_builder_writes(folder):
    for name in dashboards.DASHBOARDS:
        assert (folder / f"{name}.json").read_text() == dashboards.render(name), \
            f"{folder / name}.json is stale: run python -m k8s.dashboards"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(dashboards.DASHBOARDS)


def test_dashboards_cover_what_issue_6_asks_for():
    titles = {name: [p["title"] for p in b["panels"]] for name, b in boards().items()}
    for name, wanted in {
        "modelramp-experiment": ["Traffic share per arm", "Exposures per arm", "Success rate per arm (95% Wilson interval)",
                                 "Decisions: model share over time"],
        "modelramp-serving": ["Request rate per arm", "Latency percentiles per arm", "Backend error rate per arm", "Fallback rate per arm"],
        "modelramp-skew": ["Drift per feature (all statistics)", "Features judged drifted", "Prediction drift", "Anomaly rate by feature and kind",
                           "Anomalous share of sketched values"],
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
    shown = (*dashboards.LOOK_COUNTS, "model_error_rate", "model_fallback_rate", "model_p99_latency_seconds", "traffic_weight",
             "traffic_weight_spread", "request_rate", "error_rate",
             "fallback_rate", "success_rate", "p99_latency_seconds", "feature_drift", "feature_anomaly_rate", "feature_drifted",
             "feature_anomaly_share")
    for name in shown:
        assert dashboards.q(name) in text, f"no panel shows experiments.live.promql query {name!r}"
