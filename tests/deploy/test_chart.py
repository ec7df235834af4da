"""The Helm chart, rendered by Helm's own engine for the defaults and every option set in helm/modelramp/ci."""

from __future__ import annotations

import json

import helm_python
import pytest
import yaml
from helm_python import Chart

from experiments.config import parse_config
from tests.deploy.manifests import (
    CHART,
    OPTION_SETS,
    find,
    option_values,
    pod_specs,
    render,
    security_violations,
    validate,
)

CASES = [pytest.param({}, id="defaults")] + [pytest.param(option_values(p), id=p.stem) for p in OPTION_SETS]


@pytest.fixture(scope="module", params=CASES)
def rendered(request) -> list[dict]:
    return render(request.param, namespace="modelramp")


@pytest.mark.parametrize("values", CASES)
def test_helm_lint_finds_nothing_above_info(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.37.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], report


def test_every_rendered_object_matches_its_kubernetes_or_crd_schema(rendered):
    for obj in rendered:
        validate(obj)


def test_every_container_follows_the_security_and_resource_rules(rendered):
    workloads = [o for o in rendered if any(pod_specs(o))]
    assert workloads
    problems = [p for o in workloads for p in security_violations(o)]
    assert not problems, "\n".join(problems)


def test_run_to_completion_looks_are_bounded_instead_of_probed(rendered):
    for cron in (o for o in rendered if o["kind"] == "CronJob"):
        job = cron["spec"]["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0 and cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_experiment_configmap_is_a_valid_experiment_config_mounted_as_a_directory(rendered):
    cm = find(rendered, "ConfigMap", "modelramp-experiment")
    config = parse_config(yaml.safe_load(cm["data"]["experiment.yaml"]))  # the router's own validation
    assert sum(config.weights.values()) == pytest.approx(1.0)
    router = find(rendered, "Deployment", "modelramp-router")
    container = router["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["router", "--config", "/etc/modelramp/experiment.yaml"]  # and --baseline (test_chart_baseline)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/etc/modelramp")
    # A subPath mount never sees ConfigMap updates: the router could not reload its weights.
    assert "subPath" not in mount


def test_router_service_exposes_http_8080_and_grpc_8090(rendered):
    ports = {p["name"]: p["port"] for p in find(rendered, "Service", "modelramp-router")["spec"]["ports"]}
    assert ports == {"http": 8080, "grpc": 8090}
    router = find(rendered, "Deployment", "modelramp-router")["spec"]["template"]["spec"]
    assert {p["containerPort"] for p in router["containers"][0]["ports"]} == {8080, 8090}
    assert router["automountServiceAccountToken"] is False


def test_ramp_controller_may_read_the_experiment_configmap_and_write_only_the_weights_configmap(rendered):
    """Create cannot be limited by name in Kubernetes; get, patch and update are (tests/deploy/test_chart_weights.py)."""
    roles = [o for o in rendered if o["kind"] in ("Role", "ClusterRole")]
    if not any(o["kind"] in ("CronJob", "Deployment") and o["metadata"]["name"].endswith("ramp-controller") for o in rendered):
        assert not roles
        return
    (role,) = roles
    assert role["kind"] == "Role" and role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["modelramp-experiment"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["modelramp-weights"], "verbs": ["get", "patch", "update"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
    binding = find(rendered, "RoleBinding", role["metadata"]["name"])
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelramp-ramp-controller", "namespace": "modelramp"}]


def test_defaults_deploy_every_component():
    objs = {(o["kind"], o["metadata"]["name"]) for o in render()}
    assert {
        ("Deployment", "modelramp-tfserving"), ("Service", "modelramp-tfserving"),
        ("Deployment", "modelramp-router"), ("Service", "modelramp-router"),
        ("HorizontalPodAutoscaler", "modelramp-router"), ("PodDisruptionBudget", "modelramp-router"),
        ("ConfigMap", "modelramp-experiment"), ("Secret", "modelramp-router"),
        ("ServiceAccount", "modelramp-router"), ("ServiceAccount", "modelramp-ramp-controller"),
        ("Role", "modelramp-ramp-controller"), ("RoleBinding", "modelramp-ramp-controller"),
        ("Deployment", "modelramp-legacy"), ("Service", "modelramp-legacy"),
        ("CronJob", "modelramp-ramp-controller"), ("PersistentVolumeClaim", "modelramp-ramp-audit"),
        ("ServiceMonitor", "modelramp-router"), ("PrometheusRule", "modelramp"),
        ("ConfigMap", "modelramp-dashboard-experiment"), ("ConfigMap", "modelramp-dashboard-serving"),
        ("ConfigMap", "modelramp-dashboard-skew"),
    } <= objs


def test_tf_serving_uses_the_official_image_and_is_ready_only_with_the_model_loaded():
    objs = render()
    pod = find(objs, "Deployment", "modelramp-tfserving")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].startswith("tensorflow/serving:")
    assert "--model_base_path=/models/churn" in server["args"]
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models/churn/metadata"
    (copy,) = pod["initContainers"]  # model image -> emptyDir
    assert copy["command"] == ["cp", "-R", "/models/churn", "/models/"]
    pvc = render({"tfserving": {"model": {"source": "pvc", "pvc": {"claimName": "models"}}}})
    pod = find(pvc, "Deployment", "modelramp-tfserving")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]


def test_model_arm_sends_rest_rows_to_the_tf_serving_pods_rest_port_unless_told_not_to():
    def model_backend(values: dict | None = None) -> dict:
        config = yaml.safe_load(find(render(values), "ConfigMap", "modelramp-experiment")["data"]["experiment.yaml"])
        return config["arms"]["model"]["backend"]

    # The headless Service's pods, gRPC and REST: the router balances both over every ready pod.
    assert model_backend() == {**model_backend(), "kind": "tfserving_grpc", "target": "dns:///modelramp-tfserving-headless:8500",
                               "rest_port": 8501}
    assert model_backend({"tfserving": {"restPort": 9001}})["rest_port"] == 9001
    assert "rest_port" not in model_backend({"experiment": {"modelBackend": {"restRows": False}}})
    def external(**model: object) -> dict:
        return {"tfserving": {"enabled": False}, "experiment": {"modelBackend": {"externalTarget": "dns:///tfs.models:8500", **model}}}

    assert "rest_port" not in model_backend(external())  # an external TF Serving's REST port is not known ...
    assert model_backend(external(externalRestPort=8601))["rest_port"] == 8601  # ... unless given
    rest = model_backend({"experiment": {"modelBackend": {"protocol": "rest"}}})
    assert rest["kind"] == "tfserving_rest" and "rest_port" not in rest


def test_legacy_arm_points_at_the_external_url_when_the_local_one_is_off():
    objs = render({"legacy": {"local": {"enabled": False}, "externalUrl": "https://legacy.example.com"}})
    config = yaml.safe_load(find(objs, "ConfigMap", "modelramp-experiment")["data"]["experiment.yaml"])
    assert config["arms"]["legacy"]["backend"]["url"] == "https://legacy.example.com"
    assert not [o for o in objs if "legacy" in o["metadata"]["name"]]


def test_dashboards_configmaps_are_labelled_for_the_grafana_sidecar_and_hold_the_committed_json():
    objs = render()
    for name in ("experiment", "serving", "skew"):
        cm = find(objs, "ConfigMap", f"modelramp-dashboard-{name}")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        committed = json.loads((CHART.parents[1] / "k8s" / "dashboards" / f"modelramp-{name}.json").read_text())
        assert json.loads(cm["data"][f"modelramp-{name}.json"]) == committed


def test_alert_thresholds_follow_the_experiment_guardrails():
    objs = render({"experiment": {"guardrails": {"maxErrorRate": 0.02, "maxP99LatencyMs": 120, "maxFallbackRate": 0.03}}})
    rules = {r["alert"]: r["expr"] for g in find(objs, "PrometheusRule", "modelramp")["spec"]["groups"] for r in g["rules"]}
    assert ") > 0.02\n" in rules["ModelrampModelArmErrorRate"]
    assert "> 0.12\n" in rules["ModelrampModelArmLatencyP99"]
    assert ") > 0.03\n" in rules["ModelrampFallbackRate"]


BAD_VALUES = [
    ({"experiment": {"modelWeight": 1.5}}, "/experiment/modelWeight", "maximum"),
    ({"experiment": {"name": "Churn_V2"}}, "/experiment/name", "does not match pattern"),
    ({"experiment": {"criteria": {"alpha": 0.7}}}, "/experiment/criteria/alpha", "exclusiveMaximum"),
    ({"experiment": {"modelBackend": {"protocol": "thrift"}}}, "/experiment/modelBackend/protocol", "grpc"),
    ({"experiment": {"ramp": {"stages": []}}}, "/experiment/ramp/stages", "minItems"),
    ({"experiment": {"ramp": {"stages": [{"percent": 150, "minDurationSeconds": 0, "minSamples": 0}]}}},
     "/experiment/ramp/stages/0/percent", "maximum"),
    ({"router": {"replicas": 0}}, "/router/replicas", "minimum"),
    ({"router": {"service": {"httpPort": 70000}}}, "/router/service/httpPort", "maximum"),
    ({"router": {"resources": {"limits": None}}}, "/router/resources", "limits"),  # null deletes a default in Helm
    ({"router": {"replica": 3}}, "/router", "replica"),
    ({"router": {"secret": {"outcomeSigningKey": "short"}}}, "/router/secret/outcomeSigningKey", "minLength"),
    ({"legacy": {"local": {"enabled": False}}}, "/legacy/externalUrl", "minLength"),
    ({"legacy": {"externalUrl": "legacy:8081"}}, "/legacy/externalUrl", "pattern"),
    ({"tfserving": {"model": {"source": "pvc"}}}, "/tfserving/model/pvc/claimName", "minLength"),
    ({"tfserving": {"runAsUser": 0}}, "/tfserving/runAsUser", "minimum"),
    ({"rampController": {"mode": "daemon"}}, "/rampController/mode", "cronjob"),
    ({"rampController": {"audit": {"type": "postgres"}}}, "/rampController/audit/postgres/existingSecret", "minLength"),
    ({"monitoring": {"serviceMonitor": {"interval": "15 seconds"}}}, "/monitoring/serviceMonitor/interval", "pattern"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "IfNotPresent"),
]


@pytest.mark.parametrize("values, where, what", BAD_VALUES, ids=[w for _, w, _ in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_key(values, where, what):
    with Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmValuesError) as err:
            chart.render(values, name="modelramp", namespace="modelramp")
    message = str(err.value)
    assert f"at '{where}'" in message and what in message, message


@pytest.mark.parametrize("values, message", [
    ({"experiment": {"ramp": {"stages": [{"percent": 20, "minDurationSeconds": 0, "minSamples": 0},
                                         {"percent": 5, "minDurationSeconds": 0, "minSamples": 0}]}}},
     "experiment.ramp.stages: percent must increase strictly"),
    ({"router": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}, "minReplicas (5) must not exceed maxReplicas (2)"),
    ({"tfserving": {"enabled": False}}, "experiment.modelBackend.externalTarget is required"),
])
def test_rules_a_schema_cannot_express_fail_the_render_with_a_clear_message(values, message):
    with Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmRenderError) as err:
            chart.render(values, name="modelramp", namespace="modelramp")
    assert message in str(err.value)


def test_values_yaml_documents_every_value():
    """Every key has a comment above it (one comment may cover adjacent sibling keys, as nodeSelector/tolerations/affinity)."""
    lines = (CHART / "values.yaml").read_text().splitlines()

    def indent(text: str) -> int:
        return len(text) - len(text.lstrip())

    undocumented = []
    for i, line in enumerate(lines):
        text = line.strip()
        if not text or text.startswith(("#", "-")) or text.endswith(":"):
            continue  # comments, list items and sections (whose children are checked)
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("#") and indent(lines[j]) == indent(line) \
                and not lines[j].strip().endswith(":"):
            j -= 1  # walk over undocumented siblings to the comment that covers the group
        while j >= 0 and lines[j].strip().startswith("- "):
            j -= 1
        if j >= 0 and lines[j].strip().endswith(":") and indent(lines[j]) < indent(line):
            j -= 1  # a direct child of a section: the section's comment documents it
        if j < 0 or not lines[j].strip().startswith("#"):
            undocumented.append(f"line {i + 1}: {text}")
    assert not undocumented, "\n".join(undocumented)
    assert (CHART / "README.md").exists()


def test_modelramp_containers_call_the_real_command_line(rendered):
    """Every modelramp container's args parse with the `modelramp` console script's own parser."""
    from experiments.cli import build_parser

    parser = build_parser()
    checked = 0
    for obj in rendered:
        for pod in pod_specs(obj):
            for c in pod["containers"]:
                if not c["image"].rsplit("/", 1)[-1].startswith("modelramp-"):  # whatever registry or mirror
                    continue
                checked += 1
                # What the kubelet does with $(VAR) references to the container's env.
                args = [a.replace("$(POD_NAMESPACE)", "ns").replace("$(POD_NAME)", "pod")
                        .replace("$(MODELRAMP_AUDIT_DB)", "sqlite:////tmp/audit.db") for a in c["args"]]
                try:
                    parsed = parser.parse_args(args)
                except SystemExit:
                    pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: `modelramp {' '.join(args)}` does not parse")
                assert parsed.command == args[0]
    assert checked >= 1, "no modelramp container found: the router (and the legacy system, the ramp controller) run the modelramp images"


def test_the_controller_pushes_its_decision_gauges_only_when_a_pushgateway_is_set():
    def ramp_args(values: dict) -> list[str]:
        cron = find(render(values), "CronJob", "modelramp-ramp-controller")
        return cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]

    assert not any(a.startswith("--pushgateway") for a in ramp_args({}))
    pushed = ramp_args({"rampController": {"pushgatewayUrl": "http://pushgateway.monitoring:9091"}})
    assert "--pushgateway=http://pushgateway.monitoring:9091" in pushed


def test_service_monitors_select_a_service_with_the_named_port(rendered):
    services = [o for o in rendered if o["kind"] == "Service"]
    for monitor in (o for o in rendered if o["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in services if wanted.items() <= s["metadata"]["labels"].items()]
        ports = {p["name"] for p in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports, (monitor["metadata"]["name"], endpoint["port"], ports)


def test_schema_checks_catch_broken_objects():
    """The validators are not vacuous: an unknown field, a wrong type and a CRD typo all fail."""
    from tests.deploy.manifests import validation_error_types

    objs = render()
    broken = []
    deployment = json.loads(json.dumps(find(objs, "Deployment", "modelramp-router")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    broken.append(deployment)
    service = json.loads(json.dumps(find(objs, "Service", "modelramp-router")))
    service["spec"]["ports"][0]["port"] = "eighty"
    broken.append(service)
    monitor = json.loads(json.dumps(find(objs, "ServiceMonitor", "modelramp-router")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    broken.append(monitor)
    rule = json.loads(json.dumps(find(objs, "PrometheusRule", "modelramp")))
    del rule["spec"]["groups"][0]["name"]
    broken.append(rule)
    for obj in broken:
        with pytest.raises(validation_error_types()):
            validate(obj)
