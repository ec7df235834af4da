"""Render, build, validate and compare Kubernetes manifests for the deployment tests.

Real tools only: Helm's engine (helm-python-sdk) renders the chart, `kubectl kustomize` builds
`k8s/`, kubernetes-validate checks built-in kinds against Kubernetes' own OpenAPI schemas (strict:
unknown fields fail), and the Prometheus Operator's CRD schemas (vendored from the operator's
repository, tests/deploy/data) check ServiceMonitor and PrometheusRule objects, the Argo Rollouts and
Flagger ones (vendored likewise) the Rollout, AnalysisTemplate and Canary the chart renders under
progressiveDelivery.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from k8s import render_base
from tests.support.binaries import require_binary

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "modelramp"
K8S = REPO / "k8s"
OPTION_SETS = sorted((CHART / "ci").glob("*-values.yaml"))
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS = ("1.25", "1.37")
_CRDS = json.loads((Path(__file__).parent / "data" / "prometheus_operator_crds.json").read_text())
_DELIVERY_CRDS = {kind: crd for name in ("argo_rollouts_crds.json", "flagger_crds.json")
                  for kind, crd in json.loads((Path(__file__).parent / "data" / name).read_text())["schemas"].items()}


Obj = dict[str, Any]


def render(values: dict | None = None, namespace: str = "default") -> list[Obj]:
    """The chart rendered by Helm's engine for release "modelramp", every object in a flat list."""
    return [d for docs in render_base.render_chart(values, namespace=namespace).values() for d in docs]


def option_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def kustomize(directory: Path) -> list[Obj]:
    """`kubectl kustomize DIR`, parsed; fails with kubectl's message if the build fails."""
    kubectl = require_binary("kubectl")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _unknown_fields(value: Any, schema: dict, path: str) -> Iterator[str]:
    """Fields the API server would prune: the CRD schema does not declare them."""
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            if k in schema["properties"]:
                yield from _unknown_fields(v, schema["properties"][k], f"{path}.{k}")
            elif not schema.get("additionalProperties") and not schema.get("x-kubernetes-preserve-unknown-fields"):
                yield f"{path}.{k}"
    elif isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            yield from _unknown_fields(v, schema["items"], f"{path}[{i}]")


def validate_delivery(obj: Obj) -> None:
    """Raise if an Argo Rollouts or Flagger object does not match its CRD's openAPIV3Schema, or has fields
    the API server would prune."""
    crd = _DELIVERY_CRDS[obj["kind"]]
    assert obj["apiVersion"] == f"{crd['group']}/{crd['version']}", obj["apiVersion"]
    schema = crd["openAPIV3Schema"]
    jsonschema.Draft7Validator(schema).validate(obj)
    unknown = list(_unknown_fields(obj.get("spec", {}), schema["properties"]["spec"], "spec"))
    assert not unknown, f"{key(obj)}: fields unknown to the {obj['kind']} CRD: {unknown}"


def validate(obj: Obj) -> None:
    """Raise if `obj` does not match its Kubernetes (or Prometheus Operator, Argo Rollouts, Flagger CRD) schema."""
    if obj["apiVersion"].split("/")[0] in ("argoproj.io", "flagger.app"):
        validate_delivery(obj)
        return
    if obj["apiVersion"] == "monitoring.coreos.com/v1":
        schema = _CRDS["schemas"][obj["kind"]]
        jsonschema.Draft7Validator(schema).validate(obj)
        unknown = list(_unknown_fields(obj.get("spec", {}), schema["properties"]["spec"], "spec"))
        assert not unknown, f"{key(obj)}: fields unknown to the {obj['kind']} CRD: {unknown}"
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def pod_specs(obj: Obj) -> Iterator[Obj]:
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield obj["spec"]["template"]["spec"]
    elif kind == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def security_violations(obj: Obj) -> list[str]:
    """Every breach of the rules for containers in a workload, as readable lines."""
    problems = []
    long_running = obj["kind"] not in ("Job", "CronJob")
    for pod in pod_specs(obj):
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
            problems.append(f"{where}: pod must set runAsNonRoot and a non-zero runAsUser")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
        for c in pod.get("initContainers", []) + pod["containers"]:
            here = f"{where} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("runAsNonRoot") is not True:
                problems.append(f"{here}: runAsNonRoot must be true")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{here}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{here}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{here}: capabilities must drop ALL and add none")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in res.get(part, {}):
                        problems.append(f"{here}: resources.{part}.{resource} missing")
        # Kubernetes forbids probes on init containers, and a run-to-completion Job has its
        # activeDeadlineSeconds instead (checked by the chart tests); every long-running
        # container has both probes.
        if long_running:
            for c in pod["containers"]:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        problems.append(f"{where} container {c['name']}: {probe} missing")
    return problems


def _data_value(name: str, text: str) -> Any:
    if name.endswith(".json"):
        return json.loads(text)
    if name.endswith((".yaml", ".yml")):
        return yaml.safe_load(text)
    return text


def normalize(obj: Obj) -> Obj:
    """What must agree between the chart and k8s/: no Helm bookkeeping, no namespace, parsed data."""
    out = render_base.strip_helm(copy.deepcopy(obj))
    out["metadata"].pop("namespace", None)
    for labels in _label_maps(out):
        labels.pop("app.kubernetes.io/managed-by", None)
    if out["kind"] == "ConfigMap":
        out["data"] = {k: _data_value(k, v) for k, v in out.get("data", {}).items()}
    if out["kind"] == "Secret":
        # Values differ by design (generated, or demo literals); the keys must agree.
        out["data"] = sorted(out.get("data", {}))
    for subject in out.get("subjects", []):
        subject.pop("namespace", None)
    return out


def _label_maps(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "labels" and isinstance(v, dict):
                yield v
            else:
                yield from _label_maps(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _label_maps(v)


def by_key(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {key(o): o for o in objs}


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    matches = [o for o in objs if key(o) == (kind, name)]
    assert matches, f"no {kind}/{name} among {sorted(key(o) for o in objs)}"
    return matches[0]


def validation_error_types() -> tuple[type[BaseException], ...]:
    return (kubernetes_validate.ValidationError, jsonschema.ValidationError, AssertionError)
