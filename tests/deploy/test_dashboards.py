"""Grafana dashboards: the committed JSON is what the builder writes, and the panels are what an operator needs to see.

Whether every panel's query returns data is checked against a real Prometheus scraping real
routers, in test_dashboards_real_router.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from experiments.live.analysis import DECISIONS
from k8s import dashboards
from tests.deploy.manifests import CHART, K8S

# The ramp decision's named queries (experiments.live.promql) the experiment dashboard shows.
DECISION_QUERIES = ("decision", "decision_reason", "decision_stage_percent", "decision_stage_index", "decision_stage_duration_seconds",
                    "decision_stage_min_duration_seconds", "decision_model_exposures", "decision_min_samples", "decision_difference",
                    "decision_srm_p_value", "decision_outcome_rate_p_value", "decision_guardrail_breached", "decision_age_seconds")


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
             "feature_anomaly_share", *DECISION_QUERIES)
    for name in shown:
        assert dashboards.q(name) in text, f"no panel shows experiments.live.promql query {name!r}"


def test_panels_do_not_overlap():
    for name, board in boards().items():
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:
            pos = panel["gridPos"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{name}: {panel['title']!r} overlaps {cells[(x, y)]!r} at x={x}, y={y}"
                    cells[(x, y)] = panel["title"]


def row_of(board: dict) -> dict[str, str]:
    """Panel title -> the title of the row above it (panels are laid out top to bottom)."""
    rows, current = {}, ""
    for panel in sorted(board["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if panel["type"] == "row":
            current = panel["title"]
        else:
            rows[panel["title"]] = current
    return rows


def test_the_decisions_row_shows_the_decision_and_what_it_rests_on():
    board = boards()["modelramp-experiment"]
    panels = {p["title"]: p for p in board["panels"]}
    decision_panels = [t for t, row in row_of(board).items() if row == "Decisions"]
    assert {"Decisions: model share over time", "Replica weight disagreement", "Current decision", "Decision reason", "Stage",
            "Age of the latest decision", "Guardrails breached", "Time in stage against its minimum",
            "Model-arm exposures against the stage minimum", "SRM and outcome-rate p-values",
            "Difference model - legacy: estimate, always-valid CI, harm and non-inferiority bounds"} == set(decision_panels)
    in_row = "\n".join(t["expr"] for title in decision_panels for t in panels[title]["targets"])
    for name in DECISION_QUERIES:
        assert dashboards.q(name) in in_row, name
    # The current decision and reason: one series filtered to == 1, shown by its label's name, every decision coloured.
    for title, label in (("Current decision", "decision"), ("Decision reason", "code")):
        panel = panels[title]
        [target] = panel["targets"]
        assert target["expr"].endswith("== 1") and target["legendFormat"] == f"{{{{{label}}}}}" and target["instant"]
        assert panel["type"] == "stat" and panel["options"]["textMode"] == "name"
    colored = {o["matcher"]["options"] for o in panels["Current decision"]["fieldConfig"]["overrides"]}
    assert colored == set(DECISIONS)
    rollback = next(o for o in panels["Current decision"]["fieldConfig"]["overrides"] if o["matcher"]["options"] == "rollback")
    assert rollback["properties"] == [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]
    # The age turns red where the stale-decision alert fires by default.
    steps = panels["Age of the latest decision"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": dashboards.DECISION_STALE_SECONDS}
    assert panels["Age of the latest decision"]["targets"][0]["expr"].startswith("time() - ")
    # The difference is a time series of every bound, one series per `bound` label.
    diff = panels["Difference model - legacy: estimate, always-valid CI, harm and non-inferiority bounds"]
    assert diff["type"] == "timeseries" and [t["legendFormat"] for t in diff["targets"]] == ["{{bound}}"]
    assert not diff["targets"][0]["instant"]
    mapping = panels["Guardrails breached"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert mapping["1"]["text"] == "breached" and mapping["0"]["text"] == "ok"


def test_stale_decision_default_matches_the_chart():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["monitoring"]["prometheusRule"]["decisionStaleSeconds"] == dashboards.DECISION_STALE_SECONDS
