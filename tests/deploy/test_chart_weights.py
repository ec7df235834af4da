"""Ramp state outside what Helm owns: the weights live in `<release>-weights`, a ConfigMap no release renders.

The chart renders the experiment ConfigMap (the starting weights, and an annotation naming the
weights ConfigMap); the ramp controller creates and patches the weights ConfigMap; the routers
mount it as an optional volume and read it with `--weights`. So a `helm upgrade`, `kubectl apply
-k` or an Argo CD / Flux sync, which write what the chart renders, never touch the weights.

No Kubernetes API server can run here: the ConfigMaps live in `tests.support.kube_standin`, a
stand-in that speaks the ConfigMap REST API, written by the controller's real weight store through
the official `kubernetes` client, and by a simulated Helm (every rendered object written whole, the
objects of the previous release that the new one lacks deleted, as an upgrade does). The RBAC rules
are checked against the requests the store really sent, by a matcher of Kubernetes' rule semantics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.live.weights import ConfigMapWeightStore
from experiments.live.weights.configmap import WEIGHTS_ANNOTATION, WEIGHTS_KEY
from router.reload import ConfigFile
from tests.deploy.manifests import K8S, OPTION_SETS, find, kustomize, option_values, render
from tests.support.kube_standin import KubeStandin

NAMESPACE = "prod"
EXPERIMENT_CM = "modelramp-experiment"
WEIGHTS_CM = "modelramp-weights"
CASES = [pytest.param({}, id="defaults")] + [pytest.param(option_values(p), id=p.stem) for p in OPTION_SETS]


@pytest.fixture
def kube():
    server = KubeStandin()
    yield server
    server.close()


def _api(url: str):
    from kubernetes import client

    return client.CoreV1Api(client.ApiClient(client.Configuration(host=url)))


def _weights_name(objs: list[dict]) -> str:
    experiment = next(o for o in objs if o["kind"] == "ConfigMap" and WEIGHTS_ANNOTATION in (o["metadata"].get("annotations") or {}))
    return experiment["metadata"]["annotations"][WEIGHTS_ANNOTATION]


@pytest.mark.parametrize("values", CASES)
def test_the_chart_never_renders_the_weights_configmap_but_mounts_it_optional(values):
    objs = render(values, namespace=NAMESPACE)
    name = _weights_name(objs)
    assert name.endswith("-weights")
    assert not [o for o in objs if o["metadata"]["name"] == name], "a rendered weights object would be written back by every upgrade"
    pod = find(objs, "Deployment", "modelramp-router")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == name]
    assert volume["configMap"]["optional"] is True, "the router must start before the controller's first write"
    container = pod["containers"][0]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount and mount["readOnly"] is True  # a subPath mount never sees the kubelet's updates
    from experiments.cli import build_parser

    args = build_parser().parse_args(container["args"])
    assert args.weights == Path(mount["mountPath"]) / WEIGHTS_KEY


def test_no_kustomize_build_holds_the_weights_configmap():
    """`kubectl apply -k` (and a GitOps tool applying k8s/) writes only what the build holds."""
    for build in ("base", "overlays/demo", "overlays/production"):
        objs = kustomize(K8S / build)
        assert not [o for o in objs if o["metadata"]["name"].endswith("-weights")], build
        annotated = [o for o in objs if WEIGHTS_ANNOTATION in (o["metadata"].get("annotations") or {})]
        assert [o["metadata"]["annotations"][WEIGHTS_ANNOTATION] for o in annotated] == [WEIGHTS_CM], build


# A simulated Helm against the stand-in API server ---------------------------------------------------


def helm_apply(kube: KubeStandin, objs: list[dict], previous: list[dict] | None = None) -> None:
    """What `helm install`/`upgrade` does to ConfigMaps: write each rendered one whole, delete those the release no longer has."""
    rendered = {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    for obj in (o for o in objs if o["kind"] == "ConfigMap"):
        meta = obj["metadata"]
        kube.put_configmap(NAMESPACE, meta["name"], obj.get("data") or {}, meta.get("labels"), meta.get("annotations"))
    for obj in previous or []:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] not in rendered:
            kube.configmaps.pop((NAMESPACE, obj["metadata"]["name"]), None)


def routers_see(kube: KubeStandin, tmp_path: Path) -> dict[str, float]:
    """The weights a router computes from the two mounted ConfigMaps (the weights one absent: an empty folder)."""
    config, weights = tmp_path / "experiment.yaml", tmp_path / "weights.yaml"
    config.write_text(kube.configmaps[(NAMESPACE, EXPERIMENT_CM)]["data"]["experiment.yaml"])
    weights.unlink(missing_ok=True)
    if (NAMESPACE, WEIGHTS_CM) in kube.configmaps:
        weights.write_text(kube.configmaps[(NAMESPACE, WEIGHTS_CM)]["data"][WEIGHTS_KEY])
    return ConfigFile(config, weights=weights).load().weights


UPGRADES = [
    pytest.param({"experiment": {"modelWeight": 0.01, "guardrails": {"maxErrorRate": 0.02}}, "image": {"tag": "0.2.0"}},
                 id="new-guardrail-and-image"),
    pytest.param({"experiment": {"modelWeight": 0.02}}, id="new-starting-weight"),
    pytest.param({"experiment": {"modelWeight": 0.01}, "rampController": {"mode": "deployment"}}, id="controller-as-deployment"),
]


@pytest.mark.parametrize("upgrade", UPGRADES)
def test_a_helm_upgrade_cannot_change_the_weights_the_controller_wrote(kube, tmp_path, upgrade):
    installed = render({"experiment": {"modelWeight": 0.01}}, namespace=NAMESPACE)
    helm_apply(kube, installed)
    store = ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url))
    assert store.load().weights == {"legacy": 0.99, "model": 0.01}
    assert routers_see(kube, tmp_path) == {"legacy": 0.99, "model": 0.01}

    store.apply({"legacy": 0.95, "model": 0.05}, expected={"legacy": 0.99, "model": 0.01})  # the controller ramps to 5%
    written = json.dumps(kube.configmaps[(NAMESPACE, WEIGHTS_CM)], sort_keys=True)
    assert routers_see(kube, tmp_path) == {"legacy": 0.95, "model": 0.05}

    upgraded = render(upgrade, namespace=NAMESPACE)
    helm_apply(kube, upgraded, previous=installed)
    assert json.dumps(kube.configmaps[(NAMESPACE, WEIGHTS_CM)], sort_keys=True) == written, "the upgrade wrote the weights object"
    assert ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url)).load().weights == {"legacy": 0.95, "model": 0.05}
    assert routers_see(kube, tmp_path) == {"legacy": 0.95, "model": 0.05}, "the ramp survives the upgrade"
    assert not [r for r in kube.requests if r["method"] != "GET" and EXPERIMENT_CM in r["path"]], "the controller wrote Helm's object"


def test_without_the_weights_configmap_an_upgrade_would_undo_the_ramp(kube, tmp_path):
    """The check above is not vacuous: weights patched into the Helm-owned ConfigMap (the chart before) are written back."""

    def old_chart(values: dict) -> list[dict]:  # no annotation: the store patches the experiment ConfigMap itself
        objs = render(values, namespace=NAMESPACE)
        for obj in objs:
            (obj["metadata"].get("annotations") or {}).pop(WEIGHTS_ANNOTATION, None)
        return objs

    installed = old_chart({"experiment": {"modelWeight": 0.01}})
    helm_apply(kube, installed)
    ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url)).apply({"legacy": 0.95, "model": 0.05})
    assert routers_see(kube, tmp_path)["model"] == 0.05
    helm_apply(kube, old_chart({"experiment": {"modelWeight": 0.01}, "image": {"tag": "0.2.0"}}), installed)
    assert routers_see(kube, tmp_path)["model"] == 0.01


def test_an_upgrade_to_a_new_experiment_starts_from_its_own_weights(kube, tmp_path):
    installed = render({"experiment": {"modelWeight": 0.01}}, namespace=NAMESPACE)
    helm_apply(kube, installed)
    ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url)).apply({"legacy": 0.5, "model": 0.5})
    helm_apply(kube, render({"experiment": {"name": "churn-v3", "modelWeight": 0.01}}, namespace=NAMESPACE), installed)
    assert routers_see(kube, tmp_path)["model"] == 0.01, "the weights ConfigMap names the old experiment: not used"
    assert ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url)).load().weights["model"] == 0.01


# RBAC: the Role allows what the store does, and no write to the Helm-owned ConfigMap ----------------

_OBJECT = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/configmaps(/(?P<name>[^/?]+))?")
_VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def allowed(rules: list[dict], verb: str, name: str | None) -> bool:
    """Kubernetes RBAC for core configmaps: a rule with resourceNames matches only requests naming one of them."""
    for rule in rules:
        if "" not in rule["apiGroups"] or "configmaps" not in rule["resources"] or verb not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if not names or (name is not None and name in names):
            return True
    return False


def test_the_role_allows_every_request_the_store_sends_and_no_write_to_the_experiment_configmap(kube):
    objs = render(namespace=NAMESPACE)
    rules = find(objs, "Role", "modelramp-ramp-controller")["rules"]
    helm_apply(kube, objs)
    store = ConfigMapWeightStore(NAMESPACE, EXPERIMENT_CM, api=_api(kube.url))
    store.load()
    store.apply({"legacy": 0.95, "model": 0.05})  # create
    store.apply({"legacy": 0.8, "model": 0.2})  # patch
    sent = []
    for request in kube.requests:
        match = _OBJECT.match(request["path"])
        assert match and match["ns"] == NAMESPACE
        sent.append((_VERBS[request["method"]], match["name"]))
    assert {v for v, _ in sent} == {"get", "create", "patch"}
    for verb, name in sent:
        assert allowed(rules, verb, name), f"the Role refuses {verb} {name or 'configmaps'}"
    for verb in ("patch", "update", "delete"):
        assert not allowed(rules, verb, EXPERIMENT_CM), f"the controller may {verb} the Helm-owned experiment ConfigMap"
    assert not allowed(rules, "get", "some-other-configmap") and not allowed(rules, "patch", "some-other-configmap")
