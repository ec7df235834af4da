"""The chart's conventional values (as bitnami and prometheus-community charts have them), each shown to change the render.

Rendered by Helm's engine (helm-python-sdk), validated against the Kubernetes and Prometheus
Operator schemas like every other render: `global` (the chart as a subchart of a parent chart),
pod annotations and labels, priorityClassName, topologySpreadConstraints, ServiceAccounts,
extraArgs / extraVolumes / extraVolumeMounts, image registry and digest, ServiceMonitor
relabelings, the dashboards' namespace, NetworkPolicies, the router's preStop drain and the
`helm test` pod, whose script runs here against a real router.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import helm_python
import httpx
import pytest
import yaml
from helm_python import Chart

from experiments.config import parse_config
from k8s import render_base
from tests.deploy.manifests import CHART, find, option_values, pod_specs, render, security_violations, validate
from tests.support.processes import Process, free_port, wait_ready

Obj = dict
COMPONENTS = ("router", "tfserving", "legacy", "ramp-controller")
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def at(component: str, values: dict) -> dict:
    """`values` under a component's own key."""
    return {"router": {"router": values}, "tfserving": {"tfserving": values}, "legacy": {"legacy": {"local": values}},
            "ramp-controller": {"rampController": values}}[component]


def templates(objs: list[Obj]) -> dict[str, Obj]:
    """component -> the pod template of its workload (Deployment or the CronJob's Job)."""
    out = {}
    for obj in objs:
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        out[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    assert set(out) == set(COMPONENTS), sorted(out)
    return out


def container(objs: list[Obj], component: str) -> Obj:
    return templates(objs)[component]["spec"]["containers"][0]


def pod_annotations(objs: list[Obj], component: str) -> dict:
    return templates(objs)[component]["metadata"].get("annotations", {})


def labels(objs: list[Obj], component: str) -> dict:
    return templates(objs)[component]["metadata"]["labels"]


def spec(objs: list[Obj], component: str) -> Obj:
    return templates(objs)[component]["spec"]


def helm_test_pod(objs: list[Obj]) -> Obj:
    return find(objs, "Pod", "modelramp-test-router")


def service_accounts(objs: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}


def experiment(objs: list[Obj]) -> dict:
    return yaml.safe_load(find(objs, "ConfigMap", "modelramp-experiment")["data"]["experiment.yaml"])


def policies(objs: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "NetworkPolicy"}


def endpoints(objs: list[Obj]) -> list[Obj]:
    return [e for o in objs if o["kind"] == "ServiceMonitor" for e in o["spec"]["endpoints"]]


def images(objs: list[Obj]) -> dict[str, str]:
    """container name -> image, over every pod (workloads and the test pod), init containers too."""
    out = {}
    for obj in objs:
        specs = list(pod_specs(obj)) + ([obj["spec"]] if obj["kind"] == "Pod" else [])
        for pod in specs:
            for c in pod.get("initContainers", []) + pod["containers"]:
                out[c["name"]] = c["image"]
    return out


def selector(component: str) -> dict:
    return {"app.kubernetes.io/name": "modelramp", "app.kubernetes.io/instance": "modelramp", "app.kubernetes.io/component": component}


ZONE_SPREAD = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
VOLUME = {"name": "extra-ca", "secret": {"secretName": "corporate-ca"}}
MOUNT = {"name": "extra-ca", "mountPath": "/etc/extra-ca", "readOnly": True}
EXTRA_ARGS = {"router": ["--watch-interval", "5"], "tfserving": ["--enable_batching=true"],
              "legacy": ["--api", "foreign"], "ramp-controller": ["--dry-run"]}


def per_component(component: str) -> list:
    """The options every component has, each with the check that sees it in the render."""
    c = component
    return [
        pytest.param(at(c, {"podAnnotations": {"example.com/owner": c}}),
                     lambda o: pod_annotations(o, c).get("example.com/owner") == c
                     and all("example.com/owner" not in pod_annotations(o, x) for x in COMPONENTS if x != c),
                     id=f"{c}.podAnnotations"),
        pytest.param(at(c, {"podLabels": {"example.com/tier": c}}),
                     lambda o: labels(o, c).get("example.com/tier") == c
                     and all("example.com/tier" not in labels(o, x) for x in COMPONENTS if x != c),
                     id=f"{c}.podLabels"),
        pytest.param(at(c, {"priorityClassName": "modelramp-critical"}),
                     lambda o: spec(o, c).get("priorityClassName") == "modelramp-critical"
                     and all("priorityClassName" not in spec(o, x) for x in COMPONENTS if x != c),
                     id=f"{c}.priorityClassName"),
        pytest.param(at(c, {"topologySpreadConstraints": [ZONE_SPREAD]}),
                     lambda o: spec(o, c).get("topologySpreadConstraints") == [{**ZONE_SPREAD, "labelSelector": {"matchLabels": selector(c)}}],
                     id=f"{c}.topologySpreadConstraints"),
        pytest.param(at(c, {"extraArgs": EXTRA_ARGS[c]}),
                     lambda o: container(o, c)["args"][-len(EXTRA_ARGS[c]):] == EXTRA_ARGS[c],
                     id=f"{c}.extraArgs"),
        pytest.param(at(c, {"extraVolumes": [VOLUME], "extraVolumeMounts": [MOUNT]}),
                     lambda o: VOLUME in spec(o, c)["volumes"] and MOUNT in container(o, c)["volumeMounts"],
                     id=f"{c}.extraVolumes+extraVolumeMounts"),
    ]


def _rbac_subject(objs: list[Obj]) -> str:
    return find(objs, "RoleBinding", "modelramp-ramp-controller")["subjects"][0]["name"]


OPTIONS = [
    # Shared defaults: every component's pods, and a component's own value wins.
    pytest.param({"podAnnotations": {"example.com/team": "ml"}},
                 lambda o: all(pod_annotations(o, c).get("example.com/team") == "ml" for c in COMPONENTS), id="podAnnotations"),
    pytest.param({"podAnnotations": {"example.com/team": "ml"}, "router": {"podAnnotations": {"example.com/team": "edge"}}},
                 lambda o: pod_annotations(o, "router")["example.com/team"] == "edge" and pod_annotations(o, "legacy")["example.com/team"] == "ml",
                 id="router.podAnnotations-over-podAnnotations"),
    pytest.param({"podLabels": {"example.com/cost-center": "42"}},
                 lambda o: all(labels(o, c).get("example.com/cost-center") == "42" for c in COMPONENTS), id="podLabels"),
    pytest.param({"priorityClassName": "high"},
                 lambda o: all(spec(o, c).get("priorityClassName") == "high" for c in COMPONENTS), id="priorityClassName"),
    pytest.param({"priorityClassName": "high", "tfserving": {"priorityClassName": "gpu-critical"}},
                 lambda o: spec(o, "tfserving")["priorityClassName"] == "gpu-critical" and spec(o, "router")["priorityClassName"] == "high",
                 id="tfserving.priorityClassName-over-priorityClassName"),
    pytest.param({"topologySpreadConstraints": [ZONE_SPREAD]},
                 lambda o: all(spec(o, c)["topologySpreadConstraints"] == [{**ZONE_SPREAD, "labelSelector": {"matchLabels": selector(c)}}]
                               for c in COMPONENTS), id="topologySpreadConstraints-each-component-by-itself"),
    pytest.param({"router": {"topologySpreadConstraints": [{**ZONE_SPREAD, "labelSelector": {"matchLabels": {"tier": "edge"}}}]}},
                 lambda o: spec(o, "router")["topologySpreadConstraints"][0]["labelSelector"] == {"matchLabels": {"tier": "edge"}},
                 id="router.topologySpreadConstraints-own-labelSelector-kept"),
    *[p for c in COMPONENTS for p in per_component(c)],
    # ServiceAccounts.
    pytest.param({"router": {"serviceAccount": {"create": False, "name": "shared-router"}}},
                 lambda o: "modelramp-router" not in service_accounts(o) and spec(o, "router")["serviceAccountName"] == "shared-router",
                 id="router.serviceAccount.create=false"),
    pytest.param({"router": {"serviceAccount": {"name": "edge-router", "annotations": {"iam.gke.io/gcp-service-account": "r@p.iam"}}}},
                 lambda o: service_accounts(o)["edge-router"]["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "r@p.iam"}
                 and spec(o, "router")["serviceAccountName"] == "edge-router", id="router.serviceAccount.name+annotations"),
    pytest.param({"tfserving": {"serviceAccount": {"create": True, "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/models"}}}},
                 lambda o: spec(o, "tfserving").get("serviceAccountName") == "modelramp-tfserving"
                 and service_accounts(o)["modelramp-tfserving"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/models"),
                 id="tfserving.serviceAccount.create"),
    pytest.param({"tfserving": {"serviceAccount": {"name": "model-reader"}}},
                 lambda o: spec(o, "tfserving").get("serviceAccountName") == "model-reader" and "model-reader" not in service_accounts(o),
                 id="tfserving.serviceAccount.name"),
    pytest.param({"rampController": {"serviceAccount": {"create": False, "name": "ramp"}}},
                 lambda o: spec(o, "ramp-controller")["serviceAccountName"] == "ramp" == _rbac_subject(o)
                 and "modelramp-ramp-controller" not in service_accounts(o), id="rampController.serviceAccount.create=false"),
    pytest.param({"rampController": {"serviceAccount": {"annotations": {"example.com/audit": "db"}}}},
                 lambda o: service_accounts(o)["modelramp-ramp-controller"]["metadata"].get("annotations") == {"example.com/audit": "db"},
                 id="rampController.serviceAccount.annotations"),
    # Images.
    pytest.param({"image": {"digest": {"router": DIGEST}}},
                 lambda o: images(o)["router"] == images(o)["legacy"] == images(o)["test"] == f"ghcr.io/modelramp/modelramp-router@{DIGEST}"
                 and images(o)["ramp-controller"] == "ghcr.io/modelramp/modelramp-controller:0.1.0", id="image.digest.router"),
    pytest.param({"image": {"digest": {"controller": DIGEST}}},
                 lambda o: images(o)["ramp-controller"] == f"ghcr.io/modelramp/modelramp-controller@{DIGEST}"
                 and images(o)["router"].endswith(":0.1.0"), id="image.digest.controller"),
    pytest.param({"image": {"registry": "registry.example.com", "repository": "ml/modelramp", "tag": "1.2.3"}},
                 lambda o: images(o)["router"] == "registry.example.com/ml/modelramp-router:1.2.3"
                 and images(o)["ramp-controller"] == "registry.example.com/ml/modelramp-controller:1.2.3", id="image.registry"),
    pytest.param({"tfserving": {"image": {"registry": "docker.io", "digest": DIGEST}}},
                 lambda o: images(o)["tfserving"] == f"docker.io/tensorflow/serving@{DIGEST}", id="tfserving.image.registry+digest"),
    pytest.param({"tfserving": {"model": {"image": {"digest": OTHER_DIGEST}}}},
                 lambda o: images(o)["copy-model"] == f"ghcr.io/modelramp/churn-model@{OTHER_DIGEST}", id="tfserving.model.image.digest"),
    pytest.param({"global": {"imageRegistry": "mirror.example.com:5000"}},
                 lambda o: images(o) == {"router": "mirror.example.com:5000/modelramp/modelramp-router:0.1.0",
                                         "legacy": "mirror.example.com:5000/modelramp/modelramp-router:0.1.0",
                                         "test": "mirror.example.com:5000/modelramp/modelramp-router:0.1.0",
                                         "ramp-controller": "mirror.example.com:5000/modelramp/modelramp-controller:0.1.0",
                                         "tfserving": "mirror.example.com:5000/tensorflow/serving:2.21.0",
                                         "copy-model": "mirror.example.com:5000/modelramp/churn-model:2"},
                 id="global.imageRegistry-replaces-every-registry"),
    pytest.param({"global": {"imagePullSecrets": ["mirror-pull", {"name": "regcred"}]}, "imagePullSecrets": [{"name": "regcred"}]},
                 lambda o: all(spec(o, c)["imagePullSecrets"] == [{"name": "mirror-pull"}, {"name": "regcred"}] for c in COMPONENTS)
                 and helm_test_pod(o)["spec"]["imagePullSecrets"] == [{"name": "mirror-pull"}, {"name": "regcred"}],
                 id="global.imagePullSecrets"),
    # Monitoring.
    pytest.param({"monitoring": {"serviceMonitor": {"relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]}}},
                 lambda o: len(endpoints(o)) == 2 and all(e.get("relabelings") == [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                                                    "targetLabel": "node"}] for e in endpoints(o)),
                 id="serviceMonitor.relabelings"),
    pytest.param({"monitoring": {"serviceMonitor": {"metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]}}},
                 lambda o: len(endpoints(o)) == 2 and all(e.get("metricRelabelings", [{}])[0].get("action") == "drop" for e in endpoints(o)),
                 id="serviceMonitor.metricRelabelings"),
    pytest.param({"monitoring": {"dashboards": {"namespace": "grafana"}}},
                 lambda o: {c["metadata"].get("namespace") for c in o if c["metadata"]["name"].startswith("modelramp-dashboard-")} == {"grafana"},
                 id="dashboards.namespace"),
    # The router's drain, network policies, the test pod.
    pytest.param({"router": {"preStopSleepSeconds": 0}},
                 lambda o: "lifecycle" not in container(o, "router"), id="router.preStopSleepSeconds=0"),
    pytest.param({"router": {"preStopSleepSeconds": 12}},
                 lambda o: container(o, "router")["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "12"]}}},
                 id="router.preStopSleepSeconds"),
    pytest.param({"networkPolicy": {"enabled": True}},
                 lambda o: set(policies(o)) == {f"modelramp-{c}" for c in COMPONENTS}, id="networkPolicy.enabled"),
    pytest.param({"tests": {"enabled": False}},
                 lambda o: not [x for x in o if x["kind"] == "Pod"] and "qa" not in experiment(o), id="tests.enabled=false"),
    pytest.param({"tests": {"units": {"legacy": "probe-l", "model": "probe-m"}}},
                 lambda o: experiment(o)["qa"] == {"units": {"probe-l": "legacy", "probe-m": "model"}}
                 and json.loads(env(helm_test_pod(o))["UNITS"]) == {"legacy": "probe-l", "model": "probe-m"}, id="tests.units"),
]


def env(pod: Obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


@pytest.fixture(scope="module")
def defaults() -> list[Obj]:
    return render(namespace="modelramp")


def sees(seen: Callable[[list[Obj]], bool], objs: list[Obj]) -> bool:
    """The check on a render; a field or object it looks for and does not find is "not seen"."""
    try:
        return bool(seen(objs))
    except (KeyError, IndexError, AssertionError):
        return False


@pytest.mark.parametrize("values, seen", OPTIONS)
def test_each_option_changes_the_render_and_the_result_validates(values: dict, seen: Callable[[list[Obj]], bool], defaults):
    objs = render(values, namespace="modelramp")
    assert seen(objs), "the option is not in the render"
    assert not sees(seen, defaults), "the defaults already look like this: the check would pass with the option ignored"
    for obj in objs:
        validate(obj)
    problems = [p for o in objs if any(pod_specs(o)) for p in security_violations(o)]
    assert not problems, "\n".join(problems)


def test_defaults_have_no_network_policy_extra_pod_settings_or_digests(defaults):
    assert not policies(defaults)
    for c in COMPONENTS:
        assert "priorityClassName" not in spec(defaults, c) and "topologySpreadConstraints" not in spec(defaults, c)
    assert all("@" not in image for image in images(defaults).values())
    # The router's drain is on by default: SIGTERM comes 5 s after the pod starts terminating.
    assert container(defaults, "router")["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "5"]}}}


def test_the_charts_own_labels_win_over_pod_labels():
    """A podLabel may not move a pod out of its Deployment's selector, or into another's."""
    objs = render({"podLabels": {"app.kubernetes.io/component": "x"}, "router": {"podLabels": {"app.kubernetes.io/name": "y"}}})
    for c in COMPONENTS:
        assert selector(c).items() <= labels(objs, c).items()


def test_the_charts_own_annotations_win_over_pod_annotations():
    baseline = json.dumps({"model": "churn", "features": {}})
    objs = render({"experiment": {"skew": {"baseline": {"content": baseline}}},
                   "router": {"podAnnotations": {"checksum/baseline": "mine", "example.com/x": "1"}}})
    got = pod_annotations(objs, "router")
    assert got["example.com/x"] == "1" and got["checksum/baseline"] != "mine" and len(got["checksum/baseline"]) == 64


# NetworkPolicies: who may reach each component, checked against the pods the policies select.


def _peer_selects(peer: Obj, pod_labels: dict) -> bool:
    """A same-namespace podSelector peer that selects pods with these labels."""
    return "namespaceSelector" not in peer and peer.get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items()


def _named_ports(objs: list[Obj], component: str) -> set[str]:
    return {p["name"] for c in spec(objs, component)["containers"] for p in c.get("ports", [])}


MONITORING = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def test_network_policies_open_the_router_and_only_the_router_reaches_the_backends():
    objs = render({"networkPolicy": {"enabled": True}})
    pols = policies(objs)
    for c in COMPONENTS:
        pol = pols[f"modelramp-{c}"]
        # Each policy selects its component's pods, and no other component's.
        chosen = pol["spec"]["podSelector"]["matchLabels"]
        assert [x for x in COMPONENTS if chosen.items() <= labels(objs, x).items()] == [c]
        assert pol["spec"]["policyTypes"] == ["Ingress"]
        for rule in pol["spec"].get("ingress", []):
            assert {p["port"] for p in rule["ports"]} <= _named_ports(objs, c), (c, rule)
    (router_rule,) = pols["modelramp-router"]["spec"]["ingress"]
    assert "from" not in router_rule and {p["port"] for p in router_rule["ports"]} == {"http", "grpc"}  # anyone, both fronts
    router_labels = labels(objs, "router")
    for backend, ports in (("tfserving", {"grpc", "http"}), ("legacy", {"http"})):
        callers, *metrics = pols[f"modelramp-{backend}"]["spec"]["ingress"]
        (peer,) = callers["from"]
        assert _peer_selects(peer, router_labels), backend
        assert not any(_peer_selects(peer, labels(objs, other)) for other in COMPONENTS if other != "router")
        assert {p["port"] for p in callers["ports"]} == ports
        if backend == "tfserving":  # its metrics, on the REST port, from Prometheus' namespace only
            (scrape,) = metrics
            assert scrape["from"] == [{"namespaceSelector": MONITORING}] and scrape["ports"] == [{"port": "http", "protocol": "TCP"}]
        else:
            assert not metrics
    assert "ingress" not in pols["modelramp-ramp-controller"]["spec"]  # serves nothing, takes nothing


def test_network_policy_ingress_from_narrows_the_router_and_keeps_metrics_and_the_test_pod():
    clients = [{"namespaceSelector": {"matchLabels": {"team": "shop"}}}]
    prometheus = {"namespaceSelector": {"matchLabels": {"team": "observability"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    objs = render({"networkPolicy": {"enabled": True, "ingressFrom": clients, "metrics": prometheus}})
    callers, scrape = policies(objs)["modelramp-router"]["spec"]["ingress"]
    *given, test_peer = callers["from"]
    assert given == clients and {p["port"] for p in callers["ports"]} == {"http", "grpc"}
    assert _peer_selects(test_peer, helm_test_pod(objs)["metadata"]["labels"])
    assert not _peer_selects(test_peer, labels(objs, "router"))
    assert scrape == {"from": [prometheus], "ports": [{"port": "http", "protocol": "TCP"}]}  # /metrics is on the HTTP port
    tfs_scrape = policies(objs)["modelramp-tfserving"]["spec"]["ingress"][1]
    assert tfs_scrape["from"] == [prometheus]
    for obj in policies(objs).values():
        validate(obj)


def test_network_policies_follow_the_components_that_are_deployed():
    objs = render({"networkPolicy": {"enabled": True}, "tfserving": {"enabled": False, "metrics": False},
                   "experiment": {"modelBackend": {"externalTarget": "tfs.models:8500"}},
                   "legacy": {"local": {"enabled": False}, "externalUrl": "https://legacy.example.com"},
                   "rampController": {"enabled": False}})
    assert set(policies(objs)) == {"modelramp-router"}
    objs = render({"networkPolicy": {"enabled": True}, "tfserving": {"metrics": False}})
    assert len(policies(objs)["modelramp-tfserving"]["spec"]["ingress"]) == 1  # no metrics rule without metrics


# The `helm test` pod.


def test_the_helm_test_pod_is_a_test_hook_on_the_router_image_and_service(defaults):
    pod = helm_test_pod(defaults)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "hook-succeeded" in pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["automountServiceAccountToken"] is False
    (c,) = pod["spec"]["containers"]
    assert c["image"] == container(defaults, "router")["image"]  # an image the chart already runs
    assert c["command"][:2] == ["python3", "-c"]
    service = find(defaults, "Service", "modelramp-router")
    http = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert env(pod)["ROUTER_URL"] == f"http://{service['metadata']['name']}:{http}"
    assert "/readyz" in c["command"][2] and ":predict" in c["command"][2]
    # The pod follows the rules every container follows (restricted Pod Security, requests and limits).
    as_job = {"kind": "Job", "metadata": pod["metadata"], "spec": {"template": {"spec": pod["spec"]}}}
    assert security_violations(as_job) == []
    validate(pod)


def test_the_helm_test_units_are_qa_units_of_a_valid_experiment(defaults):
    config = parse_config(experiment(defaults))  # the router's own validation
    assert dict(config.qa.units) == {"modelramp-helm-test-legacy": "legacy", "modelramp-helm-test-model": "model"}
    assert json.loads(env(helm_test_pod(defaults))["UNITS"]) == {"legacy": "modelramp-helm-test-legacy", "model": "modelramp-helm-test-model"}
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmRenderError, match="must differ"):
        chart.render({"tests": {"units": {"legacy": "same", "model": "same"}}}, name="modelramp", namespace="modelramp")


def test_helm_hooks_stay_out_of_the_kustomize_base(defaults):
    hooks = [o for o in defaults if render_base.is_hook(o)]
    assert [o["kind"] for o in hooks] == ["Pod"]
    assert not list((CHART.parents[1] / "k8s" / "base").glob("test-*.yaml"))


def _start_router(objs: list[Obj], tmp: Path, legacy_url: str, model_target: str) -> tuple[Process, str]:
    """The rendered router (its args, the experiment ConfigMap as the kubelet lays it out) on loopback backends."""
    data = find(objs, "ConfigMap", "modelramp-experiment")["data"]
    folder = tmp / "config"
    folder.mkdir()
    (folder / "experiment.yaml").write_text(data["experiment.yaml"])
    args = [a.replace("/etc/modelramp/", f"{folder}/") for a in container(objs, "router")["args"]]
    port = free_port()
    proc = Process([*args, "--host", "127.0.0.1", "--http-port", str(port), "--grpc-port", str(free_port()),
                    "--legacy-url", legacy_url, "--model-target", model_target],
                   tmp / "router.log", env={"MODELRAMP_SIGNING_KEY": "chart-conventions-test-key"})
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{url}/healthz", "router up")
    return proc, url


def _run_test_pod(pod: Obj, url: str, timeout: str) -> subprocess.CompletedProcess:
    """The pod's command as its container runs it (the image's python3 is this interpreter's kind: stdlib only)."""
    (c,) = pod["spec"]["containers"]
    environment = {**env(pod), "ROUTER_URL": url, "TIMEOUT_SECONDS": timeout, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *c["command"][1:]], env=environment, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_the_helm_test_script_passes_on_a_real_router_and_counts_apart_from_the_experiment(model_server, legacy_server, tmp_path, defaults):
    proc, url = _start_router(defaults, tmp_path, legacy_server.url, model_server.grpc_target)
    try:
        done = _run_test_pod(helm_test_pod(defaults), url, "60")
        assert done.returncode == 0, done.stdout + done.stderr + proc.log()
        assert done.stdout.count("ok   ") == 4, done.stdout  # readyz, model status, one predict per arm
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        requests = [line for line in metrics.splitlines() if line.startswith("modelramp_requests_total{")]
        assert any('experiment="churn-v2-vs-legacy:qa"' in line and 'arm="model"' in line for line in requests), requests
        assert not any('experiment="churn-v2-vs-legacy"' in line for line in requests), requests
    finally:
        proc.stop()


@pytest.mark.slow
def test_the_helm_test_script_fails_when_the_model_arm_is_unreachable(legacy_server, tmp_path, defaults):
    proc, url = _start_router(defaults, tmp_path, legacy_server.url, f"127.0.0.1:{free_port()}")
    try:
        done = _run_test_pod(helm_test_pod(defaults), url, "3")
        assert done.returncode == 1 and "FAIL " in done.stdout, done.stdout + done.stderr
    finally:
        proc.stop()


# Values the schema accepts and refuses.


def test_schema_accepts_global_with_any_key_a_parent_chart_shares():
    with Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values({"global": {"imageRegistry": "mirror.example.com", "storageClass": "fast",
                                                             "postgresql": {"auth": {"existingSecret": "pg"}}}}))
        chart.render({"global": {"anything": True}}, name="modelramp", namespace="modelramp")


BAD_VALUES = [
    ({"globl": {}}, "", "globl"),
    ({"podAnnotation": {}}, "", "podAnnotation"),
    ({"router": {"podAnnotation": {"a": "b"}}}, "/router", "podAnnotation"),
    ({"router": {"podLabels": {"tier": 1}}}, "/router/podLabels/tier", "string"),
    ({"router": {"serviceAccount": {"create": True, "nme": "x"}}}, "/router/serviceAccount", "nme"),
    ({"tfserving": {"serviceAccount": {"name": "Not_A_Name"}}}, "/tfserving/serviceAccount/name", "pattern"),
    ({"legacy": {"local": {"serviceAccount": {"create": True}}}}, "/legacy/local", "serviceAccount"),
    ({"rampController": {"extraArgs": [1]}}, "/rampController/extraArgs/0", "string"),
    ({"router": {"extraVolumeMounts": [{"name": "x"}]}}, "/router/extraVolumeMounts/0", "mountPath"),
    ({"tfserving": {"topologySpreadConstraints": [{"maxSkew": 1}]}}, "/tfserving/topologySpreadConstraints/0", "topologyKey"),
    ({"priorityClassName": "High Priority"}, "/priorityClassName", "pattern"),
    ({"image": {"digest": {"router": "latest"}}}, "/image/digest/router", "pattern"),
    ({"image": {"digest": {"legacy": DIGEST}}}, "/image/digest", "legacy"),
    ({"tfserving": {"image": {"digest": "sha256:abc"}}}, "/tfserving/image/digest", "pattern"),
    ({"image": {"registry": "https://registry.example.com"}}, "/image/registry", "pattern"),
    ({"global": {"imageRegistry": "not a registry"}}, "/global/imageRegistry", "pattern"),
    ({"monitoring": {"serviceMonitor": {"relabeling": []}}}, "/monitoring/serviceMonitor", "relabeling"),
    ({"monitoring": {"dashboards": {"namespace": "Grafana"}}}, "/monitoring/dashboards/namespace", "pattern"),
    ({"networkPolicy": {"enable": True}}, "/networkPolicy", "enable"),
    ({"networkPolicy": {"metrics": {"namespaceSelector": {"matchLabel": {}}}}}, "/networkPolicy/metrics/namespaceSelector", "matchLabel"),
    ({"router": {"preStopSleepSeconds": 30}}, "/router/preStopSleepSeconds", "maximum"),
    ({"tests": {"unit": {}}}, "/tests", "unit"),
    ({"tests": {"units": {"legacy": ""}}}, "/tests/units/legacy", "minLength"),
]


@pytest.mark.parametrize("values, where, what", BAD_VALUES, ids=[f"{w or '/'}:{what}" for _, w, what in BAD_VALUES])
def test_schema_still_rejects_unknown_keys_and_bad_values_elsewhere(values, where, what):
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values, name="modelramp", namespace="modelramp")
    message = str(err.value)
    assert f"at '{where}'" in message and what in message, message


def test_every_new_schema_property_has_a_description():
    schema = json.loads((CHART / "values.schema.json").read_text())
    P = schema["properties"]
    new = {"global": P["global"], "podAnnotations": P["podAnnotations"], "podLabels": P["podLabels"],
           "priorityClassName": P["priorityClassName"], "topologySpreadConstraints": P["topologySpreadConstraints"],
           "networkPolicy": P["networkPolicy"], "tests": P["tests"], "image.registry": P["image"]["properties"]["registry"],
           "image.digest": P["image"]["properties"]["digest"],
           "serviceMonitor.relabelings": P["monitoring"]["properties"]["serviceMonitor"]["properties"]["relabelings"],
           "serviceMonitor.metricRelabelings": P["monitoring"]["properties"]["serviceMonitor"]["properties"]["metricRelabelings"],
           "dashboards.namespace": P["monitoring"]["properties"]["dashboards"]["properties"]["namespace"],
           "router.preStopSleepSeconds": P["router"]["properties"]["preStopSleepSeconds"]}
    for name, node in (("router", P["router"]), ("tfserving", P["tfserving"]), ("legacy.local", P["legacy"]["properties"]["local"]),
                       ("rampController", P["rampController"])):
        for key in ("podAnnotations", "podLabels", "priorityClassName", "topologySpreadConstraints", "extraArgs", "extraVolumes",
                    "extraVolumeMounts", *(("serviceAccount",) if name != "legacy.local" else ())):
            new[f"{name}.{key}"] = node["properties"][key]
    missing = [k for k, v in new.items() if not v.get("description")]
    assert not missing, missing


# Everything at once: lint and validation.

# ci/conventions-values.yaml: also one of test_chart.py's option sets (lint, schemas, rules, command lines).
ALL_OPTIONS = option_values(CHART / "ci" / "conventions-values.yaml")


def test_all_options_at_once_lint_clean_validate_and_parse():
    report = helm_python.lint(CHART, ALL_OPTIONS, strict=True, kube_version="v1.37.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report
    objs = render(ALL_OPTIONS, namespace="modelramp")
    for obj in objs:
        validate(obj)
    # Every option of the set is in the render.
    assert all(i.startswith("mirror.example.com/") for i in images(objs).values())
    assert {i.split("@")[1] for c, i in images(objs).items() if c != "copy-model"} == {DIGEST, OTHER_DIGEST}
    assert len(policies(objs)) == 4 and all(spec(objs, c).get("priorityClassName") for c in COMPONENTS)
    assert all(e.get("relabelings") and e.get("metricRelabelings") for e in endpoints(objs))
    assert not [p for o in objs if any(pod_specs(o)) for p in security_violations(o)]
    from experiments.cli import build_parser

    parser = build_parser()
    for c in ("router", "legacy", "ramp-controller"):  # extraArgs still make a command line modelramp parses
        args = [a.replace("$(POD_NAMESPACE)", "ns").replace("$(POD_NAME)", "pod").replace("$(MODELRAMP_AUDIT_DB)", "sqlite:////tmp/a.db")
                for a in container(objs, c)["args"]]
        parser.parse_args(args)


# The chart as a subchart: a parent chart depending on it through file://.


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory) -> Path:
    parent = tmp_path_factory.mktemp("parent") / "shop"
    parent.mkdir()
    (parent / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "shop", "version": "1.0.0",
        "dependencies": [{"name": "modelramp", "version": "0.1.0", "repository": f"file://{CHART}"}],
    }))
    (parent / "values.yaml").write_text(yaml.safe_dump({"global": {"imageRegistry": "mirror.shop.example"}}))
    (parent / "templates").mkdir()
    (parent / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-shop\ndata:\n  registry: {{ .Values.global.imageRegistry }}\n")
    helm_python.dependency_update(parent)  # file:// resolves offline
    assert [p.name for p in (parent / "charts").iterdir()] == ["modelramp-0.1.0.tgz"]
    return parent


def test_the_chart_renders_as_a_subchart_with_global_and_its_own_values(parent_chart):
    values = {"global": {"imagePullSecrets": ["shop-pull"]},
              "modelramp": {"router": {"autoscaling": {"enabled": False}, "replicas": 3}, "networkPolicy": {"enabled": True}}}
    with Chart.load(parent_chart) as chart:
        rendered = chart.render(values, name="shop", namespace="shop")
    objs = [d for path, text in rendered.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    assert find(objs, "ConfigMap", "shop-shop")["data"] == {"registry": "mirror.shop.example"}
    router = find(objs, "Deployment", "shop-modelramp-router")
    assert router["spec"]["replicas"] == 3  # the parent's values under the subchart's key
    pod = router["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "mirror.shop.example/modelramp/modelramp-router:0.1.0"  # the parent's global
    assert pod["imagePullSecrets"] == [{"name": "shop-pull"}]
    assert "shop-modelramp-router" in {o["metadata"]["name"] for o in objs if o["kind"] == "NetworkPolicy"}
    assert any(o["kind"] == "Pod" and o["metadata"]["annotations"]["helm.sh/hook"] == "test" for o in objs)
    config = yaml.safe_load(find(objs, "ConfigMap", "shop-modelramp-experiment")["data"]["experiment.yaml"])
    assert config["arms"]["model"]["backend"]["target"] == "dns:///shop-modelramp-tfserving-headless:8500"
    for obj in objs:
        validate(obj)


def test_the_parent_chart_lints_with_the_subchart(parent_chart):
    report = helm_python.lint(parent_chart, {"modelramp": {"router": {"replicas": 2}}}, strict=True, with_subcharts=True,
                              kube_version="v1.37.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report


def test_the_subcharts_schema_still_applies_under_the_parent(parent_chart):
    with Chart.load(parent_chart) as chart, pytest.raises(helm_python.HelmValuesError) as err:
        chart.render({"modelramp": {"router": {"replicas": 0}}}, name="shop", namespace="shop")
    assert "/router/replicas" in str(err.value) and "minimum" in str(err.value)


def test_notes_say_how_to_run_the_helm_test_only_when_there_is_one():
    def notes(values: dict) -> str:
        with Chart.load(CHART) as chart:
            rendered = chart.render(values, name="modelramp", namespace="shop")
        return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))

    assert "helm test modelramp -n shop" in notes({})
    assert "helm test" not in notes({"tests": {"enabled": False}})
