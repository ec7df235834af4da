"""Grafana dashboards: the committed JSON is what the builder writes, and the panels are what an operator needs to see.

Whether every panel's query returns data is checked against a real Prometheus scraping real
routers, in test_dashboards_real_router.py.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from experiments.live.analysis import DECISIONS
from k8s import dashboards
from tests.deploy.manifests import CHART, K8S, find, render

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
        "modelramp-experiment": ["Traffic share per arm", "Exposures per arm", "Success rate per arm (time range)",
                                 "Decisions: model share over time", dashboards.COVERAGE_TITLE],
        "modelramp-serving": ["Request rate per arm", "Latency percentiles per arm", "Backend error rate per arm", "Fallback rate per arm",
                              dashboards.RELOADS_TITLE, dashboards.REJECTED_OUTCOMES_TITLE, "Rejected outcomes in the time range"],
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
    over_range = (*(f"{name}_in_window" for name in dashboards.LOOK_COUNTS), "model_error_rate_in_window", "model_fallback_rate_in_window",
                  "model_p99_latency_seconds_in_window", "bucket_coverage_in_window", "success_share_in_window", "outcome_coverage",
                  "config_reloads_rejected", "outcomes_rejected", "feature_anomalies_window")
    shown = ("traffic_weight", "traffic_weight_spread", "request_rate", "error_rate", "outcome_coverage", "outcomes_rejected_rate",
             "fallback_rate", "success_rate", "p99_latency_seconds", "feature_drift", "feature_anomaly_rate", "feature_drifted",
             "feature_anomaly_share", *DECISION_QUERIES)
    for name in shown:
        assert dashboards.q(name) in text, f"no panel shows experiments.live.promql query {name!r}"
    for name in over_range:
        assert dashboards.q(name, dashboards.RANGE) in text, f"no panel shows experiments.live.promql query {name!r} over the time range"


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
            dashboards.DIFFERENCE_TITLE} == set(decision_panels)
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
    # The age, beside the age where the stale-decision alert fires (the values' decisionStaleSeconds).
    age, alert_after = panels["Age of the latest decision"]["targets"]
    assert age["expr"].startswith("time() - ") and alert_after["expr"] == "vector($decision_stale_seconds)"
    # The difference is a time series of every bound, one series per `bound` label, and a zero line.
    diff = panels[dashboards.DIFFERENCE_TITLE]
    assert diff["type"] == "timeseries" and [t["legendFormat"] for t in diff["targets"]] == ["{{bound}}", "no difference"]
    assert not diff["targets"][0]["instant"]
    mapping = panels["Guardrails breached"]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert mapping["1"]["text"] == "breached" and mapping["0"]["text"] == "ok"


def test_the_limits_default_to_the_charts_values():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    constants = {v["name"]: v["query"] for b in boards().values() for v in b["templating"]["list"] if v["type"] == "constant"}
    assert set(constants) == set(dashboards.LIMITS)
    assert constants == {
        "max_error_rate": str(values["experiment"]["guardrails"]["maxErrorRate"]),
        "max_fallback_rate": str(values["experiment"]["guardrails"]["maxFallbackRate"]),
        "max_p99_latency_seconds": str(values["experiment"]["guardrails"]["maxP99LatencyMs"] / 1000),
        "srm_p_value": str(values["experiment"]["criteria"]["srmPValue"]),
        "decision_stale_seconds": str(values["monitoring"]["prometheusRule"]["decisionStaleSeconds"]),
        "anomaly_share_limit": str(values["monitoring"]["prometheusRule"]["anomalyRateThreshold"]),
    }


COUNTER = re.compile(r"\bmodelramp_\w+?(_total|_bucket)\b")
WINDOWED_COUNTER = re.compile(r"\b(rate|increase)\(modelramp_\w+?(_total|_bucket)(\{[^}]*\})?\[")


def test_totals_are_restart_safe():
    """No panel shows a raw counter (which drops when a router restarts): every counter is inside rate() or increase()."""
    for name, board in boards().items():
        for title, expr in dashboards.panel_queries(board):
            assert len(COUNTER.findall(expr)) == len(WINDOWED_COUNTER.findall(expr)), f"{name} / {title}: a raw counter in\n{expr}"


def test_no_fixed_horizon_interval_is_drawn():
    """The always-valid confidence sequence is the only interval: no Wilson or normal interval per arm (an invitation to peek)."""
    board = boards()["modelramp-experiment"]
    exprs = "\n".join(e for _, e in dashboards.panel_queries(board))
    assert "sqrt(" not in exprs and "1.959964" not in exprs
    panels = {p["title"]: p for p in board["panels"]}
    assert [t["legendFormat"] for t in panels["Success rate per arm (time range)"]["targets"]] == ["{{arm}}"]
    # The band of the confidence sequence: ci_upper filled down to ci_lower.
    overrides = {o["matcher"]["options"]: o["properties"] for o in panels[dashboards.DIFFERENCE_TITLE]["fieldConfig"]["overrides"]}
    assert {"id": "custom.fillBelowTo", "value": "ci_lower"} in overrides["ci_upper"]
    assert dashboards.q("decision_difference") in exprs


def test_namespace_and_experiment_variables():
    for name, board in boards().items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        namespace = variables["namespace"]
        assert namespace["type"] == "query" and namespace["includeAll"] and namespace["allValue"] == ".*"
        assert namespace["current"]["value"] == "$__all", "opens on every namespace"
        names = [v["name"] for v in board["templating"]["list"]]
        scoped_by = "model" if name == "modelramp-skew" else "experiment"
        assert names.index("namespace") < names.index(scoped_by), "the experiment (model) list follows the namespace"
        assert variables[scoped_by]["query"].startswith("label_values(") and 'namespace=~"$namespace"' in variables[scoped_by]["query"]
        for title, expr in dashboards.panel_queries(board):
            for selector in re.findall(r"\b(modelramp_\w+)(\{[^}]*\})?", expr):
                metric, labels = selector
                if metric.startswith("modelramp_decision"):
                    # The decision gauges come through the Pushgateway, whose namespace they take: not filtered.
                    assert "namespace" not in labels, (name, title)
                else:
                    assert 'namespace=~"$namespace"' in labels, f"{name} / {title}: {metric} not scoped to the namespace"


def test_guardrail_lines_are_the_values_constants_not_baked_numbers():
    panels = {p["title"]: p for p in boards()["modelramp-serving"]["panels"]}
    for title, constant in (("Latency percentiles per arm", "max_p99_latency_seconds"), ("Backend error rate per arm", "max_error_rate"),
                            ("Fallback rate per arm", "max_fallback_rate")):
        panel = panels[title]
        assert panel["targets"][-1]["expr"] == f"vector(${constant})" and panel["targets"][-1]["legendFormat"] == dashboards.LIMIT_LEGEND
        steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
        assert all(step.get("value") is None for step in steps), f"{title}: a threshold baked into the JSON"
    for title, constant in (("Model error rate (time range)", "max_error_rate"), ("Model p99 latency (time range)", "max_p99_latency_seconds")):
        assert panels[title]["targets"][1]["expr"] == f"vector(${constant})"
    # Every $variable a query uses is one of its dashboard's variables (or Grafana's own).
    for name, board in boards().items():
        declared = {v["name"] for v in board["templating"]["list"]}
        for title, expr in dashboards.panel_queries(board):
            used = set(re.findall(r"\$(\w+)", expr)) - {"__rate_interval", "__range", "__interval"}
            assert used <= declared, (name, title, used - declared)


OTHER_VALUES = {"experiment": {"guardrails": {"maxErrorRate": 0.02, "maxP99LatencyMs": 120, "maxFallbackRate": 0.03},
                               "criteria": {"srmPValue": 0.0001}},
                "monitoring": {"prometheusRule": {"decisionStaleSeconds": 7200, "anomalyRateThreshold": 0.05}}}


def test_the_chart_draws_the_releases_guardrails():
    objs = render(OTHER_VALUES)
    seen: dict[str, str] = {}
    for name in dashboards.DASHBOARDS:
        cm = find(objs, "ConfigMap", name.replace("modelramp-", "modelramp-dashboard-"))
        board = json.loads(cm["data"][f"{name}.json"])
        seen |= {v["name"]: v["query"] for v in board["templating"]["list"] if v["type"] == "constant"}
        # The same JSON as the builder writes for those values (python -m k8s.dashboards --values), constants aside from the committed.
        assert board == json.loads(dashboards.render(name, dashboards.merged_values_from(OTHER_VALUES)))
    assert seen == {"max_error_rate": "0.02", "max_fallback_rate": "0.03", "max_p99_latency_seconds": "0.12", "srm_p_value": "0.0001",
                    "decision_stale_seconds": "7200", "anomaly_share_limit": "0.05"}


def test_the_builder_writes_dashboards_for_a_values_file(tmp_path):
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(OTHER_VALUES))
    assert dashboards.main(["--values", str(tmp_path / "values.yaml"), "--out", str(tmp_path / "out")]) == 0
    serving = json.loads((tmp_path / "out" / "modelramp-serving.json").read_text())
    assert {v["name"]: v["query"] for v in serving["templating"]["list"] if v["type"] == "constant"} == \
        {"max_error_rate": "0.02", "max_fallback_rate": "0.03", "max_p99_latency_seconds": "0.12"}
    with pytest.raises(SystemExit):
        dashboards.main(["--values", str(tmp_path / "values.yaml")])
