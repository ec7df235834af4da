"""Who runs the TF Serving pods: Helm's Deployment, Argo Rollouts' Rollout beside it, or Flagger (tfserving.managedBy).

With tfserving.managedBy "argo-rollouts" (and progressiveDelivery.argoRollouts.enabled) the Rollout adopts the
TF Serving pods through workloadRef; the chart's Deployment is only its pod template. The chart then
renders that Deployment without `replicas`, so no `helm upgrade` (nor a GitOps sync of the rendering) scales
it back up beside the Rollout once Argo has scaled it down; the Rollout runs `tfserving.replicas` pods and
its workloadRef.scaleDown is one of Argo's documented modes (never, onsuccess, progressively).

With tfserving.managedBy "flagger" (and progressiveDelivery.flagger.enabled) Flagger scales the chart's
Deployment, its canary, to 0 between rollouts. The Deployment again renders no `replicas`; an HPA at
tfserving.replicas (minimum = maximum) sizes it during a rollout, and Flagger copies that HPA for the
primary. Kubernetes' HPA leaves a target at 0 replicas alone, so the HPA never wakes the idle canary.

Rendered by Helm's engine (helm-python-sdk), validated against Kubernetes' and the Argo Rollouts CRD schemas.
No API server runs here: what an upgrade does to the live `spec.replicas` is Helm 3's three-way merge for
that one field, reproduced by `helm_upgrade_replicas` below (a field the new manifest sets is written; one
the old manifest set and the new one drops is deleted, so the API server defaults it to 1; one neither
sets keeps the live value, which is Argo's or Flagger's), Argo's scale-down by `argo_scales_down`, and
the HPA controller's bounds by `hpa_scales`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import find, render, validate

ARGO: dict[str, Any] = {"tfserving": {"managedBy": "argo-rollouts", "replicas": 3}, "progressiveDelivery": {"argoRollouts": {"enabled": True}}}
API_DEFAULT_REPLICAS = 1  # apps/v1 Deployment: spec.replicas defaults to 1


def _tfserving(values: dict) -> dict:
    return find(render(values, namespace="modelramp"), "Deployment", "modelramp-tfserving")


def helm_upgrade_replicas(live: int | None, old: dict | None, new: dict) -> int:
    """Stand-in for Helm 3's three-way merge (old manifest, new manifest, live object), for spec.replicas only."""
    if "replicas" in new["spec"]:
        return int(new["spec"]["replicas"])
    if old is not None and "replicas" in old["spec"]:
        return API_DEFAULT_REPLICAS  # deleted by the patch, defaulted by the API server
    return API_DEFAULT_REPLICAS if live is None else live


def argo_scales_down(rollout: dict, live: int) -> int:
    """Stand-in for Argo Rollouts' workloadRef.scaleDown once the Rollout's pods are up: the Deployment at 0."""
    return 0 if rollout["spec"]["workloadRef"]["scaleDown"] in ("onsuccess", "progressively") else live


def hpa_scales(hpa: dict, live: int) -> int:
    """Stand-in for the HPA controller's bounds (before any metric): a target at 0 is left alone, else clamped."""
    if live == 0:
        return 0
    return max(hpa["spec"]["minReplicas"], min(hpa["spec"]["maxReplicas"], live))


def test_by_default_helm_runs_the_pods_at_tfserving_replicas():
    assert _tfserving({"tfserving": {"replicas": 3}})["spec"]["replicas"] == 3
    assert not [o for o in render({}, namespace="modelramp") if o["kind"] == "Rollout"]


@pytest.mark.parametrize("scale_down", ["never", "onsuccess", "progressively"])
def test_under_argo_the_deployment_has_no_replicas_and_the_rollout_has_them(scale_down):
    values = {**ARGO, "progressiveDelivery": {"argoRollouts": {"enabled": True, "scaleDown": scale_down}}}
    objs = render(values, namespace="modelramp")
    deployment = find(objs, "Deployment", "modelramp-tfserving")
    rollout = find(objs, "Rollout", "modelramp-tfserving-rollout")
    for obj in (deployment, rollout):
        validate(obj)  # Kubernetes' schema, the Argo Rollouts CRD schema
    assert "replicas" not in deployment["spec"]
    assert rollout["spec"]["replicas"] == 3
    assert rollout["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelramp-tfserving",
                                              "scaleDown": scale_down}
    # The pod template is the Rollout's: it has none of its own.
    assert "template" not in rollout["spec"]


def test_helm_upgrades_leave_the_deployment_at_the_zero_argo_set():
    # Installed with Helm running the pods.
    installed = _tfserving({"tfserving": {"replicas": 3}})
    live = helm_upgrade_replicas(None, None, installed)
    assert live == 3
    # The upgrade that hands the pods to Argo: the Rollout starts 3 pods, the Deployment goes to 0.
    handed = render(ARGO, namespace="modelramp")
    switched = find(handed, "Deployment", "modelramp-tfserving")
    live = helm_upgrade_replicas(live, installed, switched)
    live = argo_scales_down(find(handed, "Rollout", "modelramp-tfserving-rollout"), live)
    assert live == 0
    # Every later upgrade (a new model version, a new experiment, the same values): still 0, and Argo's
    # Rollout alone runs the pods.
    previous = switched
    for change in ({"tfserving": {"model": {"image": {"tag": "3"}}}}, {"experiment": {"name": "churn-v3-vs-legacy"}}, {}):
        objs = render({**ARGO, **change, "tfserving": {**ARGO["tfserving"], **change.get("tfserving", {})}}, namespace="modelramp")
        upgraded = find(objs, "Deployment", "modelramp-tfserving")
        live = helm_upgrade_replicas(live, previous, upgraded)
        assert live == 0, change
        assert find(objs, "Rollout", "modelramp-tfserving-rollout")["spec"]["replicas"] == 3
        previous = upgraded


def test_a_chart_that_rendered_replicas_would_scale_the_deployment_back_up():
    """Why the field is left out: rendered (as with managedBy helm), every upgrade writes it over Argo's 0."""
    rendered = _tfserving({"tfserving": {"replicas": 3}})
    assert helm_upgrade_replicas(0, rendered, rendered) == 3


FLAGGER: dict[str, Any] = {"tfserving": {"managedBy": "flagger", "replicas": 3}, "progressiveDelivery": {"flagger": {"enabled": True}}}


def test_under_flagger_the_deployment_has_no_replicas_and_an_hpa_pins_them():
    objs = render(FLAGGER, namespace="modelramp")
    deployment = find(objs, "Deployment", "modelramp-tfserving")
    hpa = find(objs, "HorizontalPodAutoscaler", "modelramp-tfserving")
    canary = find(objs, "Canary", "modelramp-tfserving")
    for obj in (deployment, hpa, canary):
        validate(obj)  # Kubernetes' schema, the Flagger CRD schema
    assert "replicas" not in deployment["spec"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 3)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelramp-tfserving"}
    assert canary["spec"]["autoscalerRef"] == {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                                               "name": "modelramp-tfserving"}
    # Helm alone and Argo render no TF Serving HPA: the Deployment (or the Rollout) has the replicas.
    for values in ({}, ARGO):
        assert not [o for o in render(values, namespace="modelramp")
                    if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "modelramp-tfserving"]


def test_helm_upgrades_leave_flaggers_idle_canary_at_zero():
    installed = _tfserving({"tfserving": {"replicas": 3}})
    live = helm_upgrade_replicas(None, None, installed)
    # The upgrade that hands the pods to Flagger: the field is dropped (the API server's default 1 for a
    # moment), the HPA lifts it to 3, Flagger copies the Deployment into its primary and scales it to 0.
    handed = render(FLAGGER, namespace="modelramp")
    switched = find(handed, "Deployment", "modelramp-tfserving")
    hpa = find(handed, "HorizontalPodAutoscaler", "modelramp-tfserving")
    live = hpa_scales(hpa, helm_upgrade_replicas(live, installed, switched))
    assert live == 3
    live = 0  # Flagger's initialisation: primary up at the HPA's size, the canary Deployment at 0
    previous = switched
    for change in ({"experiment": {"name": "churn-v3-vs-legacy"}}, {"router": {"replicas": 4}}, {}):
        objs = render({**FLAGGER, **change}, namespace="modelramp")
        upgraded = find(objs, "Deployment", "modelramp-tfserving")
        live = hpa_scales(find(objs, "HorizontalPodAutoscaler", "modelramp-tfserving"), helm_upgrade_replicas(live, previous, upgraded))
        assert live == 0, change
        previous = upgraded
    # A new model version is Flagger's to roll out: it scales the canary from 0 and the HPA sizes it.
    assert hpa_scales(hpa, 1) == 3


def test_a_chart_that_rendered_replicas_under_flagger_would_wake_the_idle_canary():
    """Why the field is left out under Flagger too: rendered, every upgrade writes it over Flagger's 0."""
    rendered = _tfserving({"tfserving": {"replicas": 3}})
    assert helm_upgrade_replicas(0, rendered, rendered) == 3
