"""The chart ships the served model version's feature baseline to the router (`--baseline`), or says skew monitoring is off.

Rendered by Helm's engine; the last tests start a real `modelramp router` with the rendered
command line and files laid out as the kubelet projects the ConfigMaps, so "the router monitors
skew" and "the router still starts without a baseline" are checked against the router itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import helm_python
import httpx
import pytest
import yaml
from helm_python import Chart
from prometheus_client.parser import text_string_to_metric_families

from experiments.config import parse_config
from router.skew.sink import load_baseline
from router.skew.sketches import PREDICTION, sketches_from_baseline
from tests.deploy.manifests import CHART, find, option_values, render
from tests.support.processes import Process, free_port, wait_ready

MOUNT = "/etc/modelramp-baseline"
ARG = ["--baseline", f"{MOUNT}/baseline.json"]
CI_SET = option_values(CHART / "ci" / "skew-baseline-values.yaml")
WEIGHTS_ARG = ["--weights", "/etc/modelramp-weights/weights.yaml"]  # tests/deploy/test_chart_weights.py


def router_pod(objs: list[dict]) -> dict:
    return find(objs, "Deployment", "modelramp-router")["spec"]["template"]


def experiment_doc(objs: list[dict]) -> dict:
    return yaml.safe_load(find(objs, "ConfigMap", "modelramp-experiment")["data"]["experiment.yaml"])


def notes(values: dict) -> str:
    with Chart.load(CHART) as chart:
        rendered = chart.render(values, name="modelramp", namespace="shop")
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def with_baseline(content: str, **experiment) -> dict:
    return {"experiment": {**experiment, "skew": {"baseline": {"content": content}}}}


@pytest.fixture(scope="module")
def real_baseline(models_dir: Path) -> str:
    """What `--set-file experiment.skew.baseline.content=models/churn/2/modelramp/baseline.json` passes."""
    return (models_dir / "churn" / "2" / "modelramp" / "baseline.json").read_text()


def test_without_a_baseline_the_router_gets_none_and_notes_say_skew_monitoring_is_off():
    objs = render()
    pod = router_pod(objs)
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["router", "--config", "/etc/modelramp/experiment.yaml", *WEIGHTS_ARG]
    assert "baseline" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert "annotations" not in pod["metadata"]
    assert not [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "modelramp-baseline"]
    text = notes({})
    assert "Skew monitors: OFF" in text and "--set-file experiment.skew.baseline.content=models/churn/<version>/modelramp/baseline.json" in text


def test_baseline_content_becomes_a_configmap_mounted_read_only_and_passed_as_baseline(real_baseline):
    objs = render(with_baseline(real_baseline, modelBackend={"version": 2}))
    cm = find(objs, "ConfigMap", "modelramp-baseline")
    assert cm["data"]["baseline.json"] == real_baseline  # byte for byte, as training wrote it
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "router"
    pod = router_pod(objs)
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["router", "--config", "/etc/modelramp/experiment.yaml", *WEIGHTS_ARG, *ARG]
    assert {"name": "baseline", "mountPath": MOUNT, "readOnly": True} in container["volumeMounts"]
    assert {"name": "baseline", "configMap": {"name": "modelramp-baseline", "items": [{"key": "baseline.json", "path": "baseline.json"}]}} \
        in pod["spec"]["volumes"]
    # The router reads the baseline at start only: another baseline must change the pod template.
    assert pod["metadata"]["annotations"]["checksum/baseline"] == hashlib.sha256(real_baseline.encode()).hexdigest()
    assert "Skew monitors: ON" in notes(with_baseline(real_baseline)) and "ConfigMap modelramp-baseline" in notes(with_baseline(real_baseline))


def test_the_ci_option_set_ships_a_baseline_the_router_can_sketch_with_its_own_limits():
    objs = render(CI_SET)
    text = find(objs, "ConfigMap", "modelramp-baseline")["data"]["baseline.json"]
    assert json.loads(text) == json.loads(CI_SET["experiment"]["skew"]["baseline"]["content"])
    assert router_pod(objs)["spec"]["containers"][0]["args"][-2:] == ARG
    config = parse_config(experiment_doc(objs))  # the router's own validation
    assert config.router.feature_sample_share == 0.25
    assert config.skew.min_sample == 500 and config.skew.window_seconds == 1800
    assert config.skew.thresholds_for("number_customer_service_calls", "numeric") == {"psi": 0.5, "js_distance": 0.2}
    assert config.skew.thresholds_for("international_plan", "categorical") == {"psi": 0.25, "linf": 0.1}
    assert config.skew.thresholds_for(PREDICTION, "numeric") == {"psi": 0.25, "js_distance": 0.05}
    assert set(sketches_from_baseline(json.loads(text))) == {"international_plan", "number_customer_service_calls", PREDICTION}


def test_an_existing_configmap_is_mounted_by_name_and_key_without_a_chart_copy():
    objs = render({"experiment": {"skew": {"baseline": {"existingConfigMap": "churn-v2-baseline", "key": "churn.json"}}}})
    pod = router_pod(objs)
    assert {"name": "baseline", "configMap": {"name": "churn-v2-baseline", "items": [{"key": "churn.json", "path": "baseline.json"}]}} \
        in pod["spec"]["volumes"]
    assert pod["spec"]["containers"][0]["args"][-2:] == ARG
    assert not [o for o in objs if o["kind"] == "ConfigMap" and "baseline" in o["metadata"]["name"]]


def test_the_experiment_file_carries_the_skew_settings_but_no_baseline_path():
    config = parse_config(experiment_doc(render()))
    assert config.skew.baseline is None  # the router gets the mounted file through --baseline
    assert config.router.feature_sample_share == 1.0  # what a baseline, when shipped, is sketched with
    assert config.skew.thresholds == {"psi": 0.2, "js_distance": 0.1, "linf": 0.1}


BAD = [
    ({"experiment": {"skew": {"baseline": {"content": {"features": {}}}}}}, "/experiment/skew/baseline/content", "want string"),
    ({"experiment": {"skew": {"baseline": {"content": "x" * 1_000_001}}}}, "/experiment/skew/baseline/content", "maxLength"),
    ({"experiment": {"skew": {"baseline": {"existingConfigMap": "Churn_Baseline"}}}}, "/experiment/skew/baseline/existingConfigMap", "pattern"),
    ({"experiment": {"skew": {"baseline": {"key": "a/b"}}}}, "/experiment/skew/baseline/key", "pattern"),
    ({"experiment": {"skew": {"sampleShare": 1.5}}}, "/experiment/skew/sampleShare", "maximum"),
    ({"experiment": {"skew": {"thresholds": {"kl": 0.1}}}}, "/experiment/skew/thresholds", "kl"),
    ({"experiment": {"skew": {"thresholds": {"psi": 0}}}}, "/experiment/skew/thresholds/psi", "exclusiveMinimum"),
    ({"experiment": {"skew": {"features": {"tenure": {"psi": -1}}}}}, "/experiment/skew/features/tenure/psi", "exclusiveMinimum"),
    ({"experiment": {"skew": {"minSample": 0}}}, "/experiment/skew/minSample", "minimum"),
    ({"experiment": {"skew": {"alpha": 0.5}}}, "/experiment/skew/alpha", "exclusiveMaximum"),
    ({"experiment": {"skew": {"windowSeconds": 0}}}, "/experiment/skew/windowSeconds", "exclusiveMinimum"),
    # The drift alerts follow the router's limits now: the old key is refused, not silently ignored.
    ({"monitoring": {"prometheusRule": {"driftThresholds": {"psi": 0.3}}}}, "/monitoring/prometheusRule", "driftThresholds"),
]


@pytest.mark.parametrize("values, where, what", BAD, ids=[f"{w}-{x}" for _, w, x in BAD])
def test_schema_rejects_bad_skew_values_naming_the_key(values, where, what):
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values, name="modelramp", namespace="shop")
    assert f"at '{where}'" in str(err.value) and what in str(err.value), str(err.value)


@pytest.mark.parametrize("values, message", [
    (with_baseline("features: {}"), "experiment.skew.baseline.content is not JSON"),
    (with_baseline('{"model": "churn", "rows": 3}'), 'it has no "features" mapping'),
    (with_baseline('{"model": "fraud", "features": {}}'), 'the baseline of model "fraud", but experiment.modelName is "churn"'),
    (with_baseline('{"model": "churn", "version": 2, "features": {}}', modelBackend={"version": 1}),
     "the baseline of version 2, but the router serves version 1"),
    ({"experiment": {"skew": {"baseline": {"content": '{"features": {}}', "existingConfigMap": "b"}}}}, "set content or existingConfigMap, not both"),
])
def test_a_baseline_that_cannot_be_the_served_versions_fails_the_render(values, message):
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(values, name="modelramp", namespace="shop")
    assert message in str(err.value)


def start_rendered_router(objs: list[dict], tmp: Path) -> tuple[Process, str]:
    """`modelramp router` with the Deployment's args, each mounted ConfigMap's items laid out as the kubelet does."""
    pod = router_pod(objs)["spec"]
    configmaps = {o["metadata"]["name"]: o["data"] for o in objs if o["kind"] == "ConfigMap"}
    paths = {}
    for volume in pod["volumes"]:
        if "configMap" not in volume:
            continue
        mount = next(m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        folder = tmp / volume["name"]
        folder.mkdir()
        if volume["configMap"].get("optional") and volume["configMap"]["name"] not in configmaps:
            paths[mount] = str(folder)  # not rendered (the ramp controller's weights): an empty folder until it is created
            continue
        data = configmaps[volume["configMap"]["name"]]
        items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        for item in items:
            (folder / item["path"]).write_text(data[item["key"]])
        paths[mount] = str(folder)
    args = pod["containers"][0]["args"]
    for mount, folder in paths.items():
        args = [a.replace(mount + "/", folder + "/") for a in args]
    port = free_port()
    # Loopback backends nobody listens on: the cluster's Service names do not resolve here.
    proc = Process([*args, "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(free_port()),
                    "--legacy-url", f"http://127.0.0.1:{free_port()}", "--model-target", f"127.0.0.1:{free_port()}"],
                   tmp / "router.log", env={"MODELRAMP_SIGNING_KEY": "chart-baseline-test-key"})
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{url}/healthz", "router up")
    return proc, url


def sketched_features(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {s.labels["feature"] for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "modelramp_feature_values_total"}


@pytest.mark.slow
def test_the_rendered_router_sketches_the_shipped_baseline(real_baseline, tmp_path):
    proc, url = start_rendered_router(render(with_baseline(real_baseline, modelBackend={"version": 2})), tmp_path)
    try:
        expected = set(sketches_from_baseline(load_baseline(tmp_path / "baseline" / "baseline.json")))
        assert len(expected) > 10 and sketched_features(url) == expected
    finally:
        proc.stop()


@pytest.mark.slow
def test_the_rendered_router_starts_without_a_baseline_and_sketches_nothing(tmp_path):
    proc, url = start_rendered_router(render(), tmp_path)
    try:
        assert "modelramp_traffic_weight" in httpx.get(f"{url}/metrics", timeout=5).text
        assert sketched_features(url) == set() and proc.proc.poll() is None
    finally:
        proc.stop()
