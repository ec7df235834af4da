"""The skew alerts' expressions, as committed in k8s/rules, evaluated by a real Prometheus on a real router's metrics.

promtool's unit tests (test_rules.py) pin the rules' logic on synthetic series; this checks that
the metric names and labels they select are the ones `modelramp router --baseline` exports, and
that a per-feature limit set in the router's `skew.features` spares a feature the default would
flag. The router is tests/deploy/live.py's skew router: test-split rows with SCALED and SPARED
minutes sent as seconds and the area code 415 renamed.
"""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.live import MODEL, RENAMED, SCALED, SKEW_SETTINGS, SPARED
from tests.deploy.manifests import K8S

pytestmark = pytest.mark.slow

RULES = {r["alert"]: r for g in yaml.safe_load((K8S / "rules" / "modelramp.rules.yaml").read_text())["groups"] for r in g["rules"]}


def features(result: list[dict]) -> set[str]:
    return {s["metric"]["feature"] for s in result}


def settled(live_stack, expr: str, done) -> list[dict]:
    """Drive skewed traffic until the expression's result satisfies `done`; returns that result."""
    return live_stack.prometheus.settle(expr, done, timeout=90, each=live_stack.skew_traffic)


def test_drift_alert_follows_the_routers_verdict_and_per_feature_limits(live_stack):
    expr = RULES["ModelrampFeatureDrift"]["expr"]
    result = settled(live_stack, expr, lambda r: SCALED in features(r))
    assert SPARED not in features(result), "its own limits (skew.features) are out of reach"
    assert all(s["metric"]["model"] == MODEL and float(s["value"][1]) > 1 for s in result), result
    # SPARED is as far off as SCALED: the default psi limit the old fixed rule used would have fired.
    server = live_stack.prometheus
    psi = server.query(f'modelramp_feature_drift{{feature="{SPARED}", statistic="psi"}}')
    assert psi and float(psi[0]["value"][1]) > 0.2
    limit = server.query(f'modelramp_feature_drift_threshold{{feature="{SPARED}", statistic="psi"}}')
    assert float(limit[0]["value"][1]) == SKEW_SETTINGS["features"][SPARED]["psi"]
    verdict = server.query(f'modelramp_feature_drifted{{feature="{SPARED}"}}')
    assert verdict and float(verdict[0]["value"][1]) == 0


def test_anomaly_alert_divides_by_the_features_sketched_values(live_stack):
    expr = RULES["ModelrampFeatureAnomalyRate"]["expr"]
    wanted = {(SCALED, "out_of_range"), (SPARED, "out_of_range"), (RENAMED, "unseen_category")}
    result = settled(live_stack, expr, lambda r: wanted <= {(s["metric"]["feature"], s["metric"]["kind"]) for s in r})
    assert {(s["metric"]["feature"], s["metric"]["kind"]) for s in result} == wanted
    share = {s["metric"]["feature"]: float(s["value"][1]) for s in result}
    # Every scaled value is out of training's range, and about half of the area codes were 415
    # (a share of requests would be near 5 and 2.5: five rows per request). Rates of two counters
    # created at different scrapes extrapolate a little differently: hence the margins.
    assert 0.9 < share[SCALED] < 1.1 and 0.9 < share[SPARED] < 1.1
    assert 0.3 < share[RENAMED] < 0.7


def test_prediction_drift_alert_selects_the_score_the_router_exports(live_stack):
    rule = RULES["ModelrampPredictionDrift"]["expr"]
    # The verdict on the score depends on the model; its inputs (score, limit, verdict) must exist.
    inputs = rule.replace(") == 1", ") >= 0")
    result = settled(live_stack, inputs, lambda r: bool(r))
    assert features(result) == {"__prediction__"}
