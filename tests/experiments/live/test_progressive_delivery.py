"""Argo Rollouts and Flagger around modelramp (the chart's progressiveDelivery.*, k8s/progressive-delivery/).

modelramp's ramp controller is the one writer of the router's weights; Argo Rollouts and Flagger only
roll out the TF Serving pods, gated by the decision of `modelramp analyze --serve`. The chart renders
their objects (progressiveDelivery.argoRollouts.enabled with tfserving.managedBy argo-rollouts, or
progressiveDelivery.flagger.enabled) for any release and namespace; k8s/progressive-delivery/ holds the
same objects for release and namespace modelramp as kustomize Components. Checked here, for the default
release and for another release in another namespace:

- every object against its schema: the Rollout, AnalysisTemplate and Canary against the Argo Rollouts
  and Flagger CRD schemas shipped in tests/deploy/data (unknown fields fail, as the API server would
  prune them), the analysis service and every changed chart object against Kubernetes' own;
- every selector against the pods of the same rendering: the Rollout and Flagger's target select the
  TF Serving pods only, the routers' model arm reaches one model version at a time, no name Flagger
  creates is one the chart already uses, and every URL names the release's analysis Service in the
  release's namespace;
- the Components: generated from the chart (render.py --check) and, applied to k8s/base, equal to the
  chart's rendering with the same values;
- the TF Serving Deployment under Argo: no replicas in any render, so a `helm upgrade` leaves the 0
  Argo set (Helm's three-way merge reproduced by a stand-in);
- the AnalysisTemplate's jsonPath and conditions, and each Flagger webhook, on real answers of
  `modelramp analyze --serve` (the CLI, as processes) for recorded ramp, ship, hold, rollback and
  blocked histories.

No Kubernetes API server, Argo Rollouts or Flagger runs here: how they act on these objects is
reproduced by small stand-ins below (each says what it stands in for), from their documented rules.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

from experiments.cli import build_parser
from experiments.config import load_config
from experiments.live.history import load_history
from experiments.live.service import Feed, create_app
from k8s import render_base
from tests.deploy import manifests
from tests.support.asgi_server import serve_app
from tests.support.binaries import require_binary
from tests.support.processes import Process, free_port, wait_until

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / "k8s" / "progressive-delivery"
FLAGGER = FOLDER / "flagger"
ARGO = FOLDER / "argo-rollouts"
HISTORIES = REPO / "tests" / "data" / "histories"
CRD_DATA = REPO / "tests" / "deploy" / "data"
CASES = ("ramp", "ship", "hold", "rollback", "blocked_srm")
ARGO_VALUES = {"tfserving": {"managedBy": "argo-rollouts"}, "progressiveDelivery": {"argoRollouts": {"enabled": True}}}
FLAGGER_VALUES = {"tfserving": {"managedBy": "flagger"}, "progressiveDelivery": {"flagger": {"enabled": True}}}
TOOLS: dict[str, dict] = {"helm": {}, "argo": ARGO_VALUES, "flagger": FLAGGER_VALUES}
# The default release and namespace, and another of each (names must follow them everywhere).
RELEASES = [pytest.param("modelramp", "modelramp", id="modelramp"), pytest.param("churn-prod", "ml-serving", id="churn-prod")]
FLAGGER_PAYLOAD = {"name": "modelramp-tfserving", "namespace": "modelramp", "phase": "Progressing", "metadata": {}}

Obj = dict


def _docs(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(objs, kind: str, name: str | None = None) -> Obj:
    found = [d for d in objs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@functools.cache
def _render(tool: str = "helm", release: str = "modelramp", namespace: str = "modelramp") -> tuple[Obj, ...]:
    """The chart rendered by Helm's engine with `tool`'s values, every object in a flat tuple."""
    rendered = render_base.render_chart(copy.deepcopy(TOOLS[tool]), name=release, namespace=namespace)
    return tuple(d for docs in rendered.values() for d in docs)


def _chart() -> tuple[Obj, ...]:
    """The chart's default rendering (release "modelramp"): no progressive delivery."""
    return _render()


def _fullname(release: str) -> str:
    return release if "modelramp" in release else f"{release}-modelramp"


def _pods(objs: tuple[Obj, ...] | list[Obj]) -> dict[str, dict[str, str]]:
    """Pod labels of every workload: {"Deployment/name": labels}."""
    out = {}
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out[f"{o['kind']}/{o['metadata']['name']}"] = o["spec"]["template"]["metadata"]["labels"]
        elif o["kind"] == "CronJob":
            out[f"CronJob/{o['metadata']['name']}"] = o["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    return out


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _selected(selector: dict[str, str], pods: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, labels in pods.items() if _selects(selector, labels)}


def _experiment_configmap(objs) -> Obj:
    return next(o for o in objs if o["kind"] == "ConfigMap" and "experiment.yaml" in o.get("data", {}))


def _model_arm_service(objs: tuple[Obj, ...]) -> str:
    """The Service the routers' model arm dials, read from the experiment file the chart renders."""
    configmap = _experiment_configmap(objs)
    experiment = yaml.safe_load(configmap["data"]["experiment.yaml"])
    backend = experiment["arms"]["model"]["backend"]
    assert backend["kind"] == "tfserving_grpc"
    match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", backend["target"])
    assert match, backend["target"]
    return match.group(1)


def _experiment_name(objs: tuple[Obj, ...]) -> str:
    configmap = _experiment_configmap(objs)
    return yaml.safe_load(configmap["data"]["experiment.yaml"])["name"]


# CRD schemas ------------------------------------------------------------------------------------------


@functools.cache
def _crd_schemas() -> dict[str, dict]:
    out = {}
    for name in ("argo_rollouts_crds.json", "flagger_crds.json"):
        data = json.loads((CRD_DATA / name).read_text())
        assert re.search(r"@[0-9a-f]{40} ", data["source"]), "the source commit is noted"
        out.update(data["schemas"])
    return out


def _validate_custom(obj: Obj) -> None:
    """Raise if `obj` does not match its CRD's openAPIV3Schema, or has fields the API server would prune."""
    crd = _crd_schemas()[obj["kind"]]
    assert obj["apiVersion"] == f"{crd['group']}/{crd['version']}"
    schema = crd["openAPIV3Schema"]
    jsonschema.Draft7Validator(schema).validate(obj)
    unknown = list(manifests._unknown_fields(obj.get("spec", {}), schema["properties"]["spec"], "spec"))
    assert not unknown, f"{obj['kind']}/{obj['metadata']['name']}: fields unknown to the CRD: {unknown}"


def _custom_objects(release: str = "modelramp", namespace: str = "modelramp") -> Iterator[Obj]:
    for tool in ("argo", "flagger"):
        yield from (o for o in _render(tool, release, namespace) if o["apiVersion"].startswith(("argoproj.io/", "flagger.app/")))


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_argo_and_flagger_objects_validate_against_their_crd_schemas(release, namespace):
    kinds = []
    for obj in _custom_objects(release, namespace):
        _validate_custom(obj)
        manifests.validate(obj)  # the same check as the chart tests' (tests/deploy/manifests.py)
        kinds.append(obj["kind"])
    assert sorted(kinds) == ["AnalysisTemplate", "Canary", "Rollout"]
    # The Components hold the same objects (release and namespace modelramp).
    for path in (ARGO / "rollout.yaml", FLAGGER / "canary.yaml"):
        for obj in _docs(path):
            _validate_custom(obj)


def test_the_components_are_the_charts_current_rendering():
    done = subprocess.run([sys.executable, str(FOLDER / "render.py"), "--check"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("values, message", [
    ({"progressiveDelivery": {"argoRollouts": {"enabled": True}}}, 'needs tfserving.managedBy "argo-rollouts"'),
    ({"tfserving": {"managedBy": "argo-rollouts"}}, "needs progressiveDelivery.argoRollouts.enabled"),
    ({**ARGO_VALUES, "progressiveDelivery": {"argoRollouts": {"enabled": True}, "flagger": {"enabled": True}}}, "not both"),
    ({"progressiveDelivery": {"flagger": {"enabled": True}}}, 'needs tfserving.managedBy "flagger"'),
    ({"tfserving": {"managedBy": "flagger"}}, "needs progressiveDelivery.flagger.enabled"),
    ({**FLAGGER_VALUES, "experiment": {"modelBackend": {"protocol": "rest"}}}, 'needs experiment.modelBackend.protocol "grpc"'),
    ({**FLAGGER_VALUES, "progressiveDelivery": {"flagger": {"enabled": True, "modelVersion": "sha256:abc"}}}, "is not a label value"),
    ({**FLAGGER_VALUES, "tfserving": {"managedBy": "flagger", "podLabels": {"app": "mine"}}},
     'sets the TF Serving pods\' label "app" itself'),
    ({**FLAGGER_VALUES, "podLabels": {"modelramp.io/model-version": "1"}}, 'label "modelramp.io/model-version" itself'),
])
def test_values_that_cannot_work_fail_the_render_naming_them(values, message):
    with pytest.raises(Exception, match=re.escape(message)):
        render_base.render_chart(values)


@pytest.mark.parametrize("values, where", [
    ({"tfserving": {"managedBy": "argo"}}, "managedBy"),
    ({"progressiveDelivery": {"argoRollouts": {"scaleDown": "Progressively"}}}, "scaleDown"),
    ({"progressiveDelivery": {"flagger": {"enable": True}}}, "enable"),
])
def test_the_schema_rejects_bad_progressive_delivery_values(values, where):
    with pytest.raises(Exception, match=where):
        render_base.render_chart(values)


@pytest.mark.parametrize("kind, path, value", [
    ("AnalysisTemplate", ["spec", "metrics", 0, "provider", "web", "jsonpath"], "{$.decision}"),  # misspelt
    ("AnalysisTemplate", ["spec", "metrics", 0, "successLimit"], 1),
    ("Rollout", ["spec", "strategy", "canary", "canaryServices"], "x"),
    ("Rollout", ["spec", "workloadRef", "scaleDown"], 3),
    ("Canary", ["spec", "analysis", "webhooks", 0, "type"], "confirm-start"),
    ("Canary", ["spec", "service", "headles"], True),
])
def test_the_crd_schemas_reject_what_the_api_server_would(kind, path, value):
    obj = copy.deepcopy(next(o for o in _custom_objects() if o["kind"] == kind))
    here = obj
    for key in path[:-1]:
        here = here[key]
    here[path[-1]] = value
    with pytest.raises((jsonschema.ValidationError, AssertionError)):
        _validate_custom(obj)


# The analysis service -------------------------------------------------------------------------------

def _analysis_service(objs) -> tuple[Obj, Obj]:
    deployment = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-analysis"))
    return deployment, _one(objs, "Service", deployment["metadata"]["name"])


def _analysis_host(objs, namespace: str = "modelramp") -> tuple[str, int]:
    """(host, port) the tools must call: the release's analysis Service in the release's namespace."""
    _, service = _analysis_service(objs)
    assert service["metadata"].get("namespace", namespace) == namespace
    return f"{service['metadata']['name']}.{namespace}.svc", service["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("tool", ["argo", "flagger"])
@pytest.mark.parametrize("release, namespace", RELEASES)
def test_analysis_service_objects_validate_and_fit_together(tool, release, namespace):
    objs = _render(tool, release, namespace)
    deployment, service = _analysis_service(objs)
    assert deployment["metadata"]["name"] == f"{_fullname(release)}-analysis"
    for obj in (deployment, service):
        for version in manifests.KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert not manifests.security_violations(deployment)
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    # Its selectors find its own pods and none of the release's others.
    others = {k: v for k, v in _pods(objs).items() if k != f"Deployment/{deployment['metadata']['name']}"}
    assert not _selected(service["spec"]["selector"], others)
    assert not _selected(deployment["spec"]["selector"]["matchLabels"], others)
    container = pod["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    # The container's arguments are a valid `modelramp analyze --serve` command line.
    args = build_parser().parse_args([re.sub(r"\$\(\w+\)", "sqlite:///x.db", a) for a in container["args"]])
    assert args.command == "analyze" and args.serve and args.prometheus
    assert args.port == container["ports"][0]["containerPort"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert str(args.config).startswith(mount["mountPath"])
    # The release's experiment ConfigMap and weights ConfigMap, and an audit database of its own (not
    # the ramp controller's: its recorder would hold the controller's lease).
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == _experiment_configmap(objs)["metadata"]["name"]
    weights = _experiment_configmap(objs)["metadata"]["annotations"]["modelramp.io/weights-configmap"]
    assert volumes["weights"]["configMap"] == {"name": weights, "optional": True}
    db = next(e["value"] for e in container["env"] if e["name"] == "MODELRAMP_AUDIT_DB")
    assert db.startswith("sqlite:////var/lib/modelramp/analysis")


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_every_url_names_the_releases_analysis_service_in_its_namespace(release, namespace):
    argo, flagger = _render("argo", release, namespace), _render("flagger", release, namespace)
    template = _one(argo, "AnalysisTemplate")
    default = next(a["value"] for a in template["spec"]["args"] if a["name"] == "analysis-url")
    host, port = _analysis_host(argo, namespace)
    assert host == f"{_fullname(release)}-analysis.{namespace}.svc"
    assert urlparse(default)[:2] == ("http", f"{host}:{port}")
    hooks = _one(flagger, "Canary")["spec"]["analysis"]["webhooks"]
    host, port = _analysis_host(flagger, namespace)
    experiment = _experiment_name(flagger)
    assert {urlparse(h["url"]).netloc for h in hooks} == {f"{host}:{port}"}
    assert all(urlparse(h["url"]).path.startswith(f"/v1/gates/{experiment}/") for h in hooks)
    step = next(st for st in _one(argo, "Rollout")["spec"]["strategy"]["canary"]["steps"] if "analysis" in st)
    assert {a["name"]: a["value"] for a in step["analysis"]["args"]}["experiment"] == _experiment_name(argo)


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/healthz").status_code == 200


# A new version's first two looks: its pods not ready yet, every model-arm request fell back to legacy.
WARMUP_HISTORY = {"experiment": load_config(HISTORIES / "experiment.yaml").name, "looks": [
    {"time": f"2026-11-23T11:{5 * i:02d}:00Z", "weights": {"legacy": 0.99, "model": 0.01},
     "arms": {"legacy": {"exposures": 99_000 * i, "successes": 87_120 * i},
              "model": {"exposures": 1_000 * i, "successes": 880 * i, "fallbacks": 1_000 * i}}} for i in (1, 2)]}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, str]]:
    """`modelramp analyze --serve --history <case>.json`: one real process per recorded case."""
    folder = tmp_path_factory.mktemp("serve")
    procs, urls = [], {}
    (folder / "warmup.json").write_text(json.dumps(WARMUP_HISTORY))
    try:
        for case in (*CASES, "warmup"):
            port = free_port()
            history = folder / "warmup.json" if case == "warmup" else HISTORIES / f"{case}.json"
            procs.append(Process(["analyze", "--serve", "--history", str(history), "--config",
                                  str(HISTORIES / "experiment.yaml"), "--port", str(port)], folder / f"{case}.log"))
            urls[case] = f"http://127.0.0.1:{port}"
        for proc, url in zip(procs, urls.values(), strict=True):
            wait_until(functools.partial(_healthy, url), timeout=90, what="analysis service", proc=proc.proc)
        yield urls
    finally:
        for proc in procs:
            proc.stop()


SERVED_EXPERIMENT = load_config(HISTORIES / "experiment.yaml").name


def _local(url: str, experiment: str, base: str, objs=None) -> str:
    """A manifest's URL aimed at a served case: same path, the served experiment's name."""
    parsed = urlparse(url)
    assert (parsed.hostname, parsed.port) == _analysis_host(objs or _render("flagger")), url
    assert parsed.path.count(f"/{experiment}") == 1, url
    return base + parsed.path.replace(f"/{experiment}", f"/{SERVED_EXPERIMENT}")


# Argo Rollouts --------------------------------------------------------------------------------------

ROLLOUT = _one(_render("argo"), "Rollout")
TEMPLATE = _one(_render("argo"), "AnalysisTemplate")


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_argo_rollout_selects_the_tfserving_pods_and_splits_no_traffic(release, namespace):
    chart = _render("argo", release, namespace)
    rollout, template = _one(chart, "Rollout"), _one(chart, "AnalysisTemplate")
    pods = _pods(chart)
    spec = rollout["spec"]
    # workloadRef: the chart's TF Serving Deployment, whose selector is the Rollout's.
    ref = spec["workloadRef"]
    deployment = _one(list(chart), ref["kind"], ref["name"])
    assert ref["apiVersion"] == deployment["apiVersion"] and ref["scaleDown"] in ("never", "onsuccess", "progressively")
    assert spec["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert _selected(spec["selector"]["matchLabels"], pods) == {f"Deployment/{ref['name']}"}
    assert rollout["metadata"]["name"] not in {o["metadata"]["name"] for o in chart if o["kind"] == "Deployment"}
    assert ref["name"] == f"{_fullname(release)}-tfserving" and "template" not in spec
    canary = spec["strategy"]["canary"]
    # No traffic split between TF Serving versions: no trafficRouting, and the one weight is 100.
    assert "trafficRouting" not in canary
    assert [s["setWeight"] for s in canary["steps"] if "setWeight" in s] == [100]
    assert set().union(*canary["steps"]) == {"setWeight", "analysis"} and "setWeight" in canary["steps"][0]
    # canaryService is the Service the routers' model arm dials, and it selects the TF Serving pods only.
    service = _one(list(chart), "Service", canary["canaryService"])
    assert canary["canaryService"] == _model_arm_service(chart)
    assert _selected(service["spec"]["selector"], pods) == {f"Deployment/{ref['name']}"}
    assert "stableService" not in canary  # the ClusterIP Service (metrics) keeps every TF Serving pod
    # Every analysis step names the template and the chart's experiment.
    for step in canary["steps"]:
        if "analysis" in step:
            assert [t["templateName"] for t in step["analysis"]["templates"]] == [template["metadata"]["name"]]
            required = {a["name"] for a in template["spec"]["args"] if "value" not in a}
            given = {a["name"]: a["value"] for a in step["analysis"]["args"]}
            assert required <= set(given) and given["experiment"] == _experiment_name(chart)


def _rollout_pod_labels(deployment: Obj, hash_value: str) -> dict[str, str]:
    """Stand-in for Argo: a Rollout's pods are the template's labels plus rollouts-pod-template-hash."""
    return {**deployment["spec"]["template"]["metadata"]["labels"], "rollouts-pod-template-hash": hash_value}


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_argo_canary_service_leaves_out_every_pod_but_the_new_replicaset(release, namespace):
    chart = _render("argo", release, namespace)
    rollout = _one(chart, "Rollout")
    canary = rollout["spec"]["strategy"]["canary"]
    deployment = _one(list(chart), "Deployment", rollout["spec"]["workloadRef"]["name"])
    service = _one(list(chart), "Service", canary["canaryService"])
    # Stand-in for Argo's service switch: it adds the new ReplicaSet's hash to the selector.
    switched = {**service["spec"]["selector"], "rollouts-pod-template-hash": "new"}
    pods = {"new": _rollout_pod_labels(deployment, "new"), "stable": _rollout_pod_labels(deployment, "old"),
            "deployment": {**deployment["spec"]["template"]["metadata"]["labels"], "pod-template-hash": "x"}}
    assert _selected(switched, pods) == {"new"}
    clusterip = _one(list(chart), "Service", f"{_fullname(release)}-tfserving")
    assert _selected(clusterip["spec"]["selector"], pods) == set(pods)  # metrics: every TF Serving pod


def test_argo_canary_service_with_the_rest_protocol_is_the_one_the_model_arm_dials():
    chart = tuple(d for docs in render_base.render_chart({**ARGO_VALUES, "experiment": {"modelBackend": {"protocol": "rest"}}}).values()
                  for d in docs)
    canary = _one(chart, "Rollout")["spec"]["strategy"]["canary"]
    configmap = _experiment_configmap(chart)
    url = yaml.safe_load(configmap["data"]["experiment.yaml"])["arms"]["model"]["backend"]["url"]
    assert urlparse(url).hostname == canary["canaryService"] == "modelramp-tfserving"


def _jsonpath(expression: str, document: dict):
    """Stand-in for Kubernetes' JSONPath as Argo's web provider uses it, for `{$.field}` only."""
    match = re.fullmatch(r"\{\$\.(\w+)\}", expression)
    assert match, f"only {{$.field}} is reproduced here: {expression}"
    return document[match.group(1)]


def _argo_condition(expression: str, result) -> bool:
    """Stand-in for Argo's expr engine, for `result == "<word>"` only."""
    match = re.fullmatch(r'result == "(\w+)"', expression)
    assert match, f"only result == \"word\" is reproduced here: {expression}"
    return result == match.group(1)


def _argo_measurement(metric: dict, document: dict) -> str:
    """One measurement's phase, as Argo's EvaluateResult decides it with both conditions set."""
    result = _jsonpath(metric["provider"]["web"]["jsonPath"], document)
    failed = _argo_condition(metric["failureCondition"], result)
    succeeded = _argo_condition(metric["successCondition"], result)
    return "Failed" if failed else "Successful" if succeeded else "Inconclusive"


def _argo_run(metric: dict, phases: list[str]) -> tuple[str, int]:
    """The metric's phase after these measurements, and how many were taken: a stand-in for Argo's
    assessMetricStatus (failureLimit, inconclusiveLimit, consecutiveSuccessLimit, count)."""
    failed = inconclusive = streak = 0
    for taken, phase in enumerate(phases, start=1):
        failed += phase == "Failed"
        inconclusive += phase == "Inconclusive"
        streak = streak + 1 if phase == "Successful" else 0
        if failed > metric["failureLimit"]:
            return "Failed", taken
        if inconclusive > metric["inconclusiveLimit"]:
            return "Inconclusive", taken
        if streak >= metric["consecutiveSuccessLimit"]:
            return "Successful", taken
        if taken >= metric["count"]:
            return "Inconclusive", taken  # count reached, no ship and no failure
    return "Running", len(phases)


@pytest.mark.parametrize("case, measurement", [
    ("ship", "Successful"), ("rollback", "Failed"), ("hold", "Inconclusive"), ("ramp", "Inconclusive"),
    ("blocked_srm", "Inconclusive"),
])
def test_argo_analysis_reads_the_decision_of_a_real_answer(served, case, measurement):
    (metric,) = TEMPLATE["spec"]["metrics"]
    web = metric["provider"]["web"]
    assert web.get("method", "GET") == "GET" and web["jsonPath"] == "{$.decision}"
    defaults = {a["name"]: a.get("value") for a in TEMPLATE["spec"]["args"]}
    experiment = _experiment_name(_chart())
    url = web["url"].replace("{{args.analysis-url}}", defaults["analysis-url"]).replace("{{args.experiment}}", experiment)
    response = httpx.get(_local(url, experiment, served[case]), timeout=web["timeoutSeconds"])
    assert response.status_code == 200  # the web provider counts anything else as an Error
    assert _argo_measurement(metric, response.json()) == measurement


def test_argo_analysis_waits_through_the_ramp_and_ends_on_ship_or_rollback(served):
    (metric,) = TEMPLATE["spec"]["metrics"]
    answer = {case: _argo_measurement(metric, httpx.get(f"{url}/v1/analysis/{SERVED_EXPERIMENT}").json())
              for case, url in served.items()}
    assert answer["warmup"] == "Inconclusive"  # the canary's pods starting: measuring goes on
    # Stage by stage: held, ramped, held again, then shipped: the run ends Successful at once.
    looks = [answer["hold"], answer["ramp"], answer["blocked_srm"], answer["ramp"], answer["ship"], answer["hold"]]
    assert _argo_run(metric, looks) == ("Successful", 5)
    assert _argo_run(metric, [answer["ramp"], answer["hold"], answer["rollback"]]) == ("Failed", 3)
    # Never a ship: Inconclusive only when `count` is reached (the Rollout pauses for a person).
    assert _argo_run(metric, [answer["hold"]] * (metric["count"] - 1)) == ("Running", metric["count"] - 1)
    assert _argo_run(metric, [answer["hold"]] * metric["count"]) == ("Inconclusive", metric["count"])
    assert metric["consecutiveErrorLimit"] * _seconds(metric["interval"]) >= 3600  # an hour of outage aborts


def test_argo_would_accept_the_metric():
    """Stand-in for Argo's ValidateMetric (utils/analysis/factory.go): the limits fit `count` and `interval`."""
    (metric,) = TEMPLATE["spec"]["metrics"]
    count, failure, success, inconclusive = (metric["count"], metric["failureLimit"], metric["consecutiveSuccessLimit"],
                                              metric["inconclusiveLimit"])
    assert success >= 1 and failure >= 0 and inconclusive >= 0 and metric["consecutiveErrorLimit"] >= 0
    assert count >= failure + success and count >= inconclusive
    assert _seconds(metric["interval"]) > 0


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def test_argo_analysis_outlasts_the_ramp():
    """`count` x `interval` covers every stage's minimum duration of the chart's experiment."""
    (metric,) = TEMPLATE["spec"]["metrics"]
    configmap = _one(list(_chart()), "ConfigMap", "modelramp-experiment")
    stages = yaml.safe_load(configmap["data"]["experiment.yaml"])["ramp"]["stages"]
    assert metric["count"] * _seconds(metric["interval"]) >= 2 * sum(s["min_duration_seconds"] for s in stages)


# Flagger --------------------------------------------------------------------------------------------

CANARY = _one(_render("flagger"), "Canary")
FLAGGER_SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # Flagger's -selector-labels default


def _flagger_label(deployment: Obj) -> tuple[str, str]:
    """Stand-in for Flagger's getSelectorLabel: the first of its labels in the target's matchLabels."""
    match_labels = deployment["spec"]["selector"]["matchLabels"]
    label = next(label for label in FLAGGER_SELECTOR_LABELS if label in match_labels)
    return label, match_labels[label]


def _flagger_primary_labels(labels: dict[str, str], label: str, value: str) -> dict[str, str]:
    """Stand-in for Flagger: the primary's pods keep every label but the selector label, set to <value>-primary."""
    return {**labels, label: f"{value}-primary"}


NEW_OBJECTS = {"argo": {"Rollout": "tfserving-rollout", "AnalysisTemplate": "decision"},
               "flagger": {"Canary": "tfserving", "HorizontalPodAutoscaler": "tfserving"}}


@pytest.mark.parametrize("tool", ["argo", "flagger"])
@pytest.mark.parametrize("release, namespace", RELEASES)
def test_each_tool_adds_its_objects_and_changes_only_the_tfserving_ones(tool, release, namespace):
    built, before = _render(tool, release, namespace), _render("helm", release, namespace)
    full = _fullname(release)
    for obj in built:
        manifests.validate(obj)
    added = {manifests.key(o) for o in built} - {manifests.key(o) for o in before}
    expected = {(kind, f"{full}-{suffix}") for kind, suffix in NEW_OBJECTS[tool].items()}
    assert added == expected | {("Deployment", f"{full}-analysis"), ("Service", f"{full}-analysis")}
    assert not {manifests.key(o) for o in before} - {manifests.key(o) for o in built}
    old = manifests.by_key(list(before))
    # (normalize: the router Secret's generated values differ between any two renders)
    differ = {manifests.key(o) for o in built
              if manifests.key(o) in old and manifests.normalize(o) != manifests.normalize(old[manifests.key(o)])}
    assert differ == ({("Deployment", f"{full}-tfserving")} if tool == "argo" else
                      {("Deployment", f"{full}-tfserving"), ("Service", f"{full}-tfserving-headless")})


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_flagger_target_has_a_selector_label_of_its_own_and_creates_no_existing_name(release, namespace):
    built = _render("flagger", release, namespace)
    pods = _pods(built)
    spec = _one(built, "Canary")["spec"]
    assert spec["provider"] == "kubernetes" and spec["skipAnalysis"] is False
    # An hour of failed checks (the analysis service down) before Flagger rolls back on its own.
    assert spec["analysis"]["threshold"] * _seconds(spec["analysis"]["interval"]) >= 3600
    assert "stepWeights" not in spec["analysis"] and "stepWeight" not in spec["analysis"] and spec["analysis"]["iterations"] >= 1
    target = _one(list(built), spec["targetRef"]["kind"], spec["targetRef"]["name"])
    assert spec["targetRef"]["apiVersion"] == target["apiVersion"]
    label, value = _flagger_label(target)
    assert (label, value) == ("app", f"{_fullname(release)}-tfserving")
    # Flagger's canary Service selects {label: value}, its primary ones {label: value-primary}:
    # the TF Serving pods only (the chart's own app.kubernetes.io/name is on every pod of the release).
    assert _selected({label: value}, pods) == {f"Deployment/{target['metadata']['name']}"}
    name_label = target["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
    assert len(_selected({"app.kubernetes.io/name": name_label}, pods)) > 1
    primary = _flagger_primary_labels(target["spec"]["template"]["metadata"]["labels"], label, value)
    assert _selected({label: f"{value}-primary"}, {**pods, "primary": primary}) == {"primary"}
    # The names Flagger creates are none of the chart's, kind by kind.
    service_name = spec["service"]["name"]
    created = {("Service", service_name), ("Service", f"{service_name}-primary"), ("Service", f"{service_name}-canary"),
               ("Deployment", f"{target['metadata']['name']}-primary")}
    for volume in target["spec"]["template"]["spec"]["volumes"]:  # tracked ConfigMaps and Secrets get a -primary copy
        for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if field in volume:
                created.add((kind, f"{volume[field].get('name', volume[field].get('secretName'))}-primary"))
    assert not created & {manifests.key(o) for o in built}
    # Its port is TF Serving's gRPC port.
    container = next(c for c in target["spec"]["template"]["spec"]["containers"] if c["name"] == "tfserving")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[spec["service"]["targetPort"]] == spec["service"]["port"] and spec["service"]["portName"] == "grpc"


@pytest.mark.parametrize("release, namespace", RELEASES)
def test_flagger_model_arm_reaches_one_model_version_at_a_time(release, namespace):
    built = _render("flagger", release, namespace)
    target = _one(list(built), "Deployment", _one(built, "Canary")["spec"]["targetRef"]["name"])
    label, value = _flagger_label(target)
    model_service = _one(list(built), "Service", _model_arm_service(built))
    selector = model_service["spec"]["selector"]
    canary_pods = target["spec"]["template"]["metadata"]["labels"]
    version = canary_pods["modelramp.io/model-version"]
    assert selector["modelramp.io/model-version"] == version == target["spec"]["template"]["metadata"]["labels"][
        "modelramp.io/model-version"]
    previous = {**canary_pods, "modelramp.io/model-version": "1"}
    pods = {
        "canary (version under experiment)": canary_pods,
        "primary, before promotion (previous version)": _flagger_primary_labels(previous, label, value),
        "primary, after promotion": _flagger_primary_labels(canary_pods, label, value),
        "routers and the rest": {},
    }
    pods.update(_pods([o for o in built if o is not target]))
    assert _selected(selector, pods) == {"canary (version under experiment)", "primary, after promotion"}
    # The chart's ClusterIP Service (TF Serving's metrics) keeps every TF Serving pod, primary or canary.
    clusterip = _one(list(built), "Service", f"{_fullname(release)}-tfserving")
    assert {"canary (version under experiment)", "primary, before promotion (previous version)",
            "primary, after promotion"} <= _selected(clusterip["spec"]["selector"], pods)


def _with_component(tmp_path: Path, resource: Path, component: Path, namespace: str | None = None) -> list[Obj]:
    """An overlay of k8s/ with the Component (what kustomize users write), built by kubectl kustomize."""
    require_binary("kubectl")
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "resources": [os.path.relpath(resource, tmp_path)], "components": [os.path.relpath(component, tmp_path)]}
    if namespace:
        kustomization["namespace"] = namespace
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return manifests.kustomize(tmp_path)


@pytest.mark.parametrize("tool, component", [("argo", ARGO), ("flagger", FLAGGER)])
def test_each_component_on_the_base_is_the_charts_rendering_with_its_values(tmp_path, tool, component):
    """k8s/base (the chart's default rendering) with the Component equals the chart rendered with the tool's
    values, object by object wherever the tool changes or adds one: the patches are the chart's templates."""
    built = manifests.by_key(_with_component(tmp_path, REPO / "k8s" / "base", component))
    chart, default = _render(tool, "modelramp", "modelramp"), manifests.by_key(list(_chart()))
    changed = [o for o in chart if manifests.key(o) not in default
               or manifests.normalize(o) != manifests.normalize(default[manifests.key(o)])]
    assert len(changed) >= 3
    for obj in changed:
        assert manifests.key(obj) in built, manifests.key(obj)
        assert manifests.normalize(built[manifests.key(obj)]) == manifests.normalize(obj), manifests.key(obj)
    for obj in built.values():
        manifests.validate(obj)


@pytest.mark.parametrize("component", [ARGO, FLAGGER], ids=["argo-rollouts", "flagger"])
def test_each_component_fits_the_production_overlay(tmp_path, component):
    built = _with_component(tmp_path, REPO / "k8s" / "overlays" / "production", component, namespace="modelramp")
    tfserving = _one(built, "Deployment", "modelramp-tfserving")
    if component == ARGO:
        rollout = _one(built, "Rollout")
        assert rollout["metadata"]["namespace"] == "modelramp" and "replicas" not in tfserving["spec"]
        assert rollout["spec"]["workloadRef"]["name"] == "modelramp-tfserving"
    else:
        canary = _one(built, "Canary")
        assert canary["metadata"]["namespace"] == "modelramp" and canary["spec"]["targetRef"]["name"] == "modelramp-tfserving"
        assert tfserving["spec"]["selector"]["matchLabels"]["app"] == "modelramp-tfserving"
        assert "modelramp.io/model-version" in _one(built, "Service", "modelramp-tfserving-headless")["spec"]["selector"]
    # Every URL names the analysis Service in the overlay's namespace (the Components are for modelramp's).
    assert _analysis_host(built)[0] == "modelramp-analysis.modelramp.svc"


# Which gate each Flagger hook type asks, and what opens it (Flagger: 2xx = go, or = roll back for `rollback`).
OPENS = {"continue": {"ramp", "ship", "hold", "blocked_srm"}, "ship": {"ship"}, "rollback": {"rollback"}}
HOOK_GATES = {"confirm-rollout": "continue", "pre-rollout": "continue", "rollout": "continue",
              "confirm-promotion": "ship", "rollback": "rollback"}


@pytest.mark.parametrize("case", CASES)
def test_flagger_webhooks_gate_on_a_real_answer(served, case):
    hooks = CANARY["spec"]["analysis"]["webhooks"]
    assert len({h["name"] for h in hooks}) == len(hooks)
    assert {h["type"]: h["url"].rsplit("/", 1)[1] for h in hooks} == HOOK_GATES
    experiment = _experiment_name(_render("flagger"))
    for hook in hooks:
        assert re.fullmatch(r"\d+s", hook["timeout"])
        gate = hook["url"].rsplit("/", 1)[1]
        response = httpx.post(_local(hook["url"], experiment, served[case]), json=FLAGGER_PAYLOAD)
        assert (200 <= response.status_code < 300) == (case in OPENS[gate]), (hook["name"], response.status_code)
        assert response.status_code in (200, 412) and response.json()["reason"]


def test_gates_answer_get_and_post_and_never_open_without_an_analysis():
    feeds = {case: Feed(lambda: load_config(HISTORIES / "experiment.yaml"),
                        functools.partial(load_history, HISTORIES / f"{case}.json", allow_resets=True), live=False)
             for case in CASES}
    feeds["broken"] = Feed(lambda: load_config(HISTORIES / "missing.yaml"), lambda: load_history(HISTORIES / "hold.json"))
    with serve_app(create_app(feeds)) as url, httpx.Client(base_url=url) as client:
        for gate, opens in OPENS.items():
            for case in CASES:
                expected = 200 if case in opens else 412
                assert client.get(f"/v1/gates/{case}/{gate}").status_code == expected
                assert client.post(f"/v1/gates/{case}/{gate}", json=FLAGGER_PAYLOAD).status_code == expected
            assert client.post(f"/v1/gates/broken/{gate}", json=FLAGGER_PAYLOAD).status_code == 503
            assert client.post(f"/v1/gates/unknown/{gate}", json=FLAGGER_PAYLOAD).status_code == 404
        assert client.get("/v1/gates/ship/ship").json()["decision"] == "ship"
        # What Argo's web provider reads: a document that cannot be made is a non-2xx, so an Error
        # measurement (consecutiveErrorLimit), never a decision.
        assert client.get("/v1/analysis/broken").status_code == 503


def test_flagger_waits_through_the_model_arms_warm_up(served):
    """While no pod of the new version is ready (every model-arm request fell back), each hook lets the
    canary start and keep running, and none ships or rolls back: the fallbacks are the rollout's doing."""
    doc = httpx.get(f"{served['warmup']}/v1/analysis/{SERVED_EXPERIMENT}").json()
    assert doc["decision"] == "wait" and doc["analysis_decision"] == "rollback"
    experiment = _experiment_name(_chart())
    opens = {"confirm-rollout": True, "pre-rollout": True, "rollout": True, "confirm-promotion": False, "rollback": False}
    for hook in CANARY["spec"]["analysis"]["webhooks"]:
        response = httpx.post(_local(hook["url"], experiment, served["warmup"]), json=FLAGGER_PAYLOAD)
        assert (200 <= response.status_code < 300) == opens[hook["type"]], (hook["name"], response.status_code)
