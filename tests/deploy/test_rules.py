"""The Prometheus alert rules (skew, guardrails, ramp decisions): promtool checks them and runs their unit tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import helm_python
import pytest
import yaml
from helm_python import Chart

from experiments.live import promql
from tests.deploy.manifests import CHART, K8S, OPTION_SETS, find, option_values, render
from tests.support.binaries import require_binary

RULES = K8S / "rules" / "modelramp.rules.yaml"
UNIT_TESTS = sorted((K8S / "rules" / "tests").glob("*.test.yaml"))
ALERTS = {
    "ModelrampFeatureDrift", "ModelrampPredictionDrift", "ModelrampFeatureAnomalyRate",
    "ModelrampModelArmErrorRate", "ModelrampModelArmLatencyP99", "ModelrampFallbackRate",
    "ModelrampRolledBack", "ModelrampDecisionBlocked", "ModelrampSampleRatioMismatch", "ModelrampDecisionStale",
    "ModelrampRoutersAbsent", "ModelrampRoutersDown", "ModelrampControllerFailing", "ModelrampControllerNotReporting",
}
DECISION_ALERTS = {"ModelrampRolledBack", "ModelrampDecisionBlocked", "ModelrampSampleRatioMismatch", "ModelrampDecisionStale"}
AVAILABILITY_ALERTS = {"ModelrampRoutersAbsent", "ModelrampRoutersDown", "ModelrampControllerFailing", "ModelrampControllerNotReporting"}
README = K8S / "README.md"
RUNBOOK_BASE = "https://github.com/modelramp/modelramp/blob/main/k8s/README.md"


def promtool(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_promtool_check_rules_accepts_the_rule_file():
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_pass():
    assert UNIT_TESTS
    done = promtool("test", "rules", *UNIT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_unit_test():
    fired = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert fired == ALERTS


def test_unit_tests_catch_a_wrong_expectation(tmp_path):
    """promtool really compares: a test expecting another value fails."""
    broken = UNIT_TESTS[0].read_text().replace("497.5ms", "400ms").replace("../modelramp.rules.yaml", str(RULES))
    assert broken != UNIT_TESTS[0].read_text()
    (tmp_path / "broken.test.yaml").write_text(broken)
    done = promtool("test", "rules", tmp_path / "broken.test.yaml")
    assert done.returncode != 0 and "497.5ms" in done.stdout + done.stderr


def test_rule_file_is_the_prometheusrule_of_kustomize_and_of_the_chart():
    plain = yaml.safe_load(RULES.read_text())["groups"]
    crd = yaml.safe_load((K8S / "rules" / "prometheusrule.yaml").read_text())
    assert crd["spec"]["groups"] == plain
    assert find(render(), "PrometheusRule", "modelramp")["spec"]["groups"] == plain
    assert {r["alert"] for g in plain for r in g["rules"]} == ALERTS


@pytest.mark.parametrize("path", OPTION_SETS, ids=[p.stem for p in OPTION_SETS])
def test_rules_rendered_with_other_values_pass_promtool(path, tmp_path):
    rules = [o for o in render(option_values(path)) if o["kind"] == "PrometheusRule"]
    if not rules:
        pytest.skip(f"{path.name} switches the PrometheusRule off")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}))
    done = promtool("check", "rules", tmp_path / "rules.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_guardrail_alerts_ignore_low_traffic_and_use_the_model_arm():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if group["name"] == "modelramp.guardrails":
                assert 'arm="model"' in rule["expr"] and ">= 20" in rule["expr"], rule["alert"]
                assert rule["labels"]["severity"] == "critical"
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_chart_templates_escape_prometheus_templating():
    """Alert annotations reach Prometheus with their {{ $labels.x }} intact, not eaten by Helm."""
    text = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert "{{ $labels.feature }}" in text
    rendered = find(render(), "PrometheusRule", "modelramp")["spec"]["groups"][0]["rules"][0]
    assert "{{ $labels.feature }}" in rendered["annotations"]["summary"]


@pytest.mark.parametrize("values", [{}, *map(option_values, OPTION_SETS)], ids=["defaults", *(p.stem for p in OPTION_SETS)])
def test_skew_alerts_are_the_named_queries_of_experiments_promql(values):
    """Alerts, dashboards and `modelramp skew` ask the same questions: the chart renders promql.py's alert queries."""
    pr = {"window": "5m", "anomalyRateThreshold": 0.01, **values.get("monitoring", {}).get("prometheusRule", {})}
    if pr.get("enabled") is False:
        pytest.skip("the option set switches the PrometheusRule off")
    groups = find(render(values), "PrometheusRule", "modelramp")["spec"]["groups"]
    exprs = {r["alert"]: r["expr"] for g in groups for r in g["rules"]}
    assert exprs["ModelrampFeatureDrift"] == promql.render("alert_feature_drift")
    assert exprs["ModelrampPredictionDrift"] == promql.render("alert_prediction_drift")
    assert exprs["ModelrampFeatureAnomalyRate"] == \
        f"{promql.render('alert_feature_anomaly_share', window=pr['window'])}\n> {pr['anomalyRateThreshold']}"


def test_drift_alerts_follow_the_routers_verdict_and_limits_not_fixed_numbers():
    for name in ("alert_feature_drift", "alert_prediction_drift"):
        expr = promql.render(name)
        assert "modelramp_feature_drifted" in expr and "/ modelramp_feature_drift_threshold" in expr
        assert not [n for n in expr.replace("== 1", "").split() if n.replace(".", "").isdigit()], expr
    # Anomalies are a share of the same model's sketched values of the feature, not of requests.
    anomaly = promql.render("alert_feature_anomaly_share", window="5m")
    assert "modelramp_requests_total" not in anomaly
    assert "/ on (namespace, model, feature) group_left" in anomaly and "modelramp_feature_values_total" in anomaly


@pytest.mark.parametrize("values", [{}, *map(option_values, OPTION_SETS)], ids=["defaults", *(p.stem for p in OPTION_SETS)])
def test_decision_alerts_are_the_named_queries_of_experiments_promql(values):
    """The decision alerts ask what the experiment dashboard shows, with only their durations added."""
    pr = {"blockedFor": "30m", "decisionStaleSeconds": 1800, **values.get("monitoring", {}).get("prometheusRule", {})}
    if pr.get("enabled") is False:
        pytest.skip("the option set switches the PrometheusRule off")
    groups = {g["name"]: g["rules"] for g in find(render(values), "PrometheusRule", "modelramp")["spec"]["groups"]}
    rules = {r["alert"]: r for r in groups["modelramp.decisions"]}
    assert set(rules) == DECISION_ALERTS
    assert rules["ModelrampRolledBack"]["expr"] == promql.render("alert_decision_rollback")
    assert rules["ModelrampDecisionBlocked"]["expr"] == promql.render("alert_decision_blocked")
    assert rules["ModelrampSampleRatioMismatch"]["expr"] == promql.render("alert_sample_ratio_mismatch")
    assert rules["ModelrampDecisionStale"]["expr"] == f"{promql.render('alert_decision_age_seconds')}\n> {pr['decisionStaleSeconds']}"
    assert rules["ModelrampDecisionBlocked"]["for"] == pr["blockedFor"]
    # Rollback and a sample ratio mismatch are the analyzer's verdicts: no threshold, no wait of their own.
    assert "for" not in rules["ModelrampRolledBack"] and "for" not in rules["ModelrampSampleRatioMismatch"]
    assert {r["alert"]: r["labels"]["severity"] for r in rules.values()} == {
        "ModelrampRolledBack": "critical", "ModelrampSampleRatioMismatch": "critical",
        "ModelrampDecisionBlocked": "warning", "ModelrampDecisionStale": "warning"}


def test_decision_alert_values_reach_the_rules():
    groups = find(render({"monitoring": {"prometheusRule": {"blockedFor": "2h", "decisionStaleSeconds": 7200}}}),
                  "PrometheusRule", "modelramp")["spec"]["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert rules["ModelrampDecisionBlocked"]["for"] == "2h"
    assert "for 2h (" in rules["ModelrampDecisionBlocked"]["annotations"]["description"]
    assert rules["ModelrampDecisionStale"]["expr"].endswith("\n> 7200")
    assert "older than 7200 s" in rules["ModelrampDecisionStale"]["annotations"]["description"]
    assert "{{ $labels.experiment }}" in rules["ModelrampDecisionStale"]["annotations"]["summary"]


@pytest.mark.parametrize("prometheus_rule, key, what", [({"decisionStaleSeconds": 10}, "decisionStaleSeconds", "minimum"),
                                                       ({"decisionStaleSeconds": "1800"}, "decisionStaleSeconds", "want integer"),
                                                       ({"blockedFor": "30 minutes"}, "blockedFor", "pattern")])
def test_the_schema_refuses_bad_decision_alert_values(prometheus_rule, key, what):
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render({"monitoring": {"prometheusRule": prometheus_rule}}, name="modelramp", namespace="shop")
    assert f"at '/monitoring/prometheusRule/{key}'" in str(err.value) and what in str(err.value), str(err.value)


def routers_absent(job: str) -> str:
    """No router target of the job up: all down, or none discovered (absent() of a filtered expression keeps no labels)."""
    return f'absent(up{{job="{job}"}} == 1)'


def routers_down(job: str) -> str:
    """Router targets Prometheus discovers but cannot scrape, per namespace."""
    return f'count by (namespace, job) (up{{job="{job}"}} == 0)'


def rules_of(values: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in find(render(values), "PrometheusRule", "modelramp")["spec"]["groups"] for r in g["rules"]}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as dashes."""
    return "".join(c for c in heading.strip().lower() if c.isalnum() or c in " -_").replace(" ", "-")


def test_every_alert_links_its_runbook_section_in_k8s_readme():
    anchors = {github_anchor(line.lstrip("#")) for line in README.read_text().splitlines() if line.startswith("#")}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url == f"{RUNBOOK_BASE}#{rule['alert'].lower()}", rule["alert"]
            assert url.split("#")[1] in anchors, f"k8s/README.md has no runbook section for {rule['alert']}"
    # Each runbook says what the alert means, what to check and what to do.
    text = README.read_text()
    for alert in ALERTS:
        section = text.split(f"### {alert}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means**", "**Check**", "**Do**"):
            assert part in section, f"{alert}: no {part} in its runbook"


def test_runbook_base_url_comes_from_the_values():
    rules = rules_of({"monitoring": {"prometheusRule": {"runbookBaseUrl": "https://wiki.example.com/modelramp/runbooks"}}})
    assert {r["annotations"]["runbook_url"] for r in rules.values()} == \
        {f"https://wiki.example.com/modelramp/runbooks#{a.lower()}" for a in ALERTS}


@pytest.mark.parametrize("values", [{}, *map(option_values, OPTION_SETS)], ids=["defaults", *(p.stem for p in OPTION_SETS)])
def test_availability_alerts_are_the_named_queries_of_experiments_promql(values):
    pr = {"routersDownFor": "5m", "controllerHoldFor": "30m", "controllerAbsentFor": "30m", "routerJob": "",
          **values.get("monitoring", {}).get("prometheusRule", {})}
    if pr.get("enabled") is False:
        pytest.skip("the option set switches the PrometheusRule off")
    groups = {g["name"]: g["rules"] for g in find(render(values), "PrometheusRule", "modelramp")["spec"]["groups"]}
    rules = {r["alert"]: r for r in groups["modelramp.availability"]}
    assert set(rules) == AVAILABILITY_ALERTS
    job = pr["routerJob"] or "modelramp-router"  # the router Service's name: the Prometheus Operator's job label
    experiment = values.get("experiment", {}).get("name", "churn-v2-vs-legacy")
    assert rules["ModelrampRoutersAbsent"]["expr"] == routers_absent(job)
    assert rules["ModelrampRoutersDown"]["expr"] == routers_down(job)
    assert rules["ModelrampControllerFailing"]["expr"] == promql.render("alert_controller_holding")
    assert rules["ModelrampControllerNotReporting"]["expr"] == promql.render("alert_controller_absent", experiment=experiment)
    assert rules["ModelrampRoutersAbsent"]["for"] == rules["ModelrampRoutersDown"]["for"] == pr["routersDownFor"]
    assert rules["ModelrampControllerFailing"]["for"] == pr["controllerHoldFor"]
    assert rules["ModelrampControllerNotReporting"]["for"] == pr["controllerAbsentFor"]
    assert {a: r["labels"]["severity"] for a, r in rules.items()} == {
        "ModelrampRoutersAbsent": "critical", "ModelrampRoutersDown": "warning",
        "ModelrampControllerFailing": "warning", "ModelrampControllerNotReporting": "warning"}


def test_routers_service_is_the_job_the_absent_alert_selects():
    objs = render()
    service = find(objs, "Service", "modelramp-router")
    monitor = find(objs, "ServiceMonitor", "modelramp-router")
    assert "jobLabel" not in monitor["spec"], "a jobLabel would change the job the alerts select"
    assert f'job="{service["metadata"]["name"]}"' in rules_of({})["ModelrampRoutersAbsent"]["expr"]


def test_availability_alert_values_reach_the_rules():
    rules = rules_of({"experiment": {"name": "upsell-v3"},
                      "monitoring": {"prometheusRule": {"routerJob": "shop/routers", "routersDownFor": "2m",
                                                        "controllerHoldFor": "1h", "controllerAbsentFor": "2h"}}})
    assert rules["ModelrampRoutersAbsent"]["expr"] == 'absent(up{job="shop/routers"} == 1)'
    assert rules["ModelrampRoutersDown"]["for"] == "2m" and "for 2m:" in rules["ModelrampRoutersDown"]["annotations"]["description"]
    assert rules["ModelrampControllerFailing"]["for"] == "1h"
    assert rules["ModelrampControllerNotReporting"]["expr"] == 'absent(modelramp_decision_timestamp_seconds{experiment="upsell-v3"})'
    assert "for 2h:" in rules["ModelrampControllerNotReporting"]["annotations"]["description"]


@pytest.mark.parametrize("prometheus_rule, key, what", [({"runbookBaseUrl": "k8s/README.md"}, "runbookBaseUrl", "pattern"),
                                                       ({"runbookBaseUrl": "https://x.example/r#top"}, "runbookBaseUrl", "pattern"),
                                                       ({"routersDownFor": "5"}, "routersDownFor", "pattern"),
                                                       ({"controllerHoldFor": "1 hour"}, "controllerHoldFor", "pattern")])
def test_the_schema_refuses_bad_availability_alert_values(prometheus_rule, key, what):
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render({"monitoring": {"prometheusRule": prometheus_rule}}, name="modelramp", namespace="shop")
    assert f"at '/monitoring/prometheusRule/{key}'" in str(err.value) and what in str(err.value), str(err.value)


def test_controller_alerts_only_with_the_charts_controller():
    rules = rules_of({"rampController": {"enabled": False}})
    assert set(rules) == ALERTS - {"ModelrampControllerFailing", "ModelrampControllerNotReporting"}
