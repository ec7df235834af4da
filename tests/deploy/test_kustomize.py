"""k8s/: the kustomize base and overlays build with kubectl, validate, and agree with the chart."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys

import pytest
import yaml

from k8s import render_base
from tests.deploy.manifests import (
    CHART,
    K8S,
    REPO,
    by_key,
    key,
    kustomize,
    normalize,
    option_values,
    pod_specs,
    render,
    security_violations,
    validate,
)

OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
BUILDS = ["base", *(f"overlays/{o}" for o in OVERLAYS)]


@pytest.fixture(scope="module", params=BUILDS)
def built(request) -> list[dict]:
    return kustomize(K8S / request.param)


def test_there_are_two_overlays():
    assert OVERLAYS == ["demo", "production"]


def test_every_built_object_matches_its_kubernetes_or_crd_schema(built):
    for obj in built:
        validate(obj)


def test_every_container_follows_the_security_and_resource_rules(built):
    problems = [p for o in built if any(pod_specs(o)) for p in security_violations(o)]
    assert not problems, "\n".join(problems)


def test_every_yaml_file_in_k8s_parses_and_validates():
    """Files kustomize does not build (the plain rule file, promtool tests) parse; objects validate.

    k8s/progressive-delivery/ (Argo Rollouts / Flagger resources) has its own owner and tests.
    """
    ours = [K8S / d for d in ("base", "overlays", "rules", "dashboards")]
    for path in sorted(p for d in ours for p in d.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "apiVersion" in doc and doc.get("kind") != "Kustomization":
                validate(doc)


def test_base_and_rules_are_the_charts_current_rendering():
    done = subprocess.run([sys.executable, str(K8S / "render_base.py"), "--check"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr


def _diff(expected: dict, actual: dict) -> str:
    a = json.dumps(expected, indent=1, sort_keys=True).splitlines()
    b = json.dumps(actual, indent=1, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(a, b, "chart", "kustomize", lineterm="", n=2))


@pytest.mark.parametrize("build, values", [
    ("base", None),
    ("overlays/demo", "demo"),
    ("overlays/production", "production"),
], ids=["base=defaults", "demo", "production"])
def test_kustomize_build_equals_the_chart_rendering(build, values):
    """Same kinds, names, images, ports, probes, args, volumes... every field but Helm's bookkeeping."""
    chart = render(option_values(CHART / "ci" / f"{values}-values.yaml") if values else None)
    # Helm hooks (the `helm test` pod) are not installed objects: kustomize has none.
    chart = [o for o in chart if not render_base.is_hook(o)]
    built = [o for o in kustomize(K8S / build) if o["kind"] != "Namespace"]
    if build == "base":
        # The base carries no Secret (no committed key); overlays create or expect it.
        chart = [o for o in chart if o["kind"] != "Secret"]
    if build == "overlays/production":
        # Production's Secrets come from a secret manager in both forms (existingSecret).
        assert not [o for o in chart if o["kind"] == "Secret"]
    expected, actual = by_key([normalize(o) for o in chart]), by_key([normalize(o) for o in built])
    assert sorted(expected) == sorted(actual)
    for k in expected:
        assert expected[k] == actual[k], f"{k} differs:\n{_diff(expected[k], actual[k])}"


def test_overlays_set_their_namespace_everywhere():
    for overlay, namespace in (("demo", "modelramp-demo"), ("production", "modelramp")):
        for obj in kustomize(K8S / "overlays" / overlay):
            if obj["kind"] == "Namespace":
                assert obj["metadata"]["name"] == namespace
                assert obj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
            else:
                assert obj["metadata"]["namespace"] == namespace, key(obj)
            for subject in obj.get("subjects", []):
                assert subject["namespace"] == namespace
