"""The Argo Rollouts and Flagger example manifests: structure, and their gates on real analysis answers."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlparse

import httpx
import kubernetes_validate
import pytest
import yaml

from experiments.cli import build_parser
from experiments.config import load_config, parse_config
from experiments.live.history import load_history
from experiments.live.service import Feed, create_app
from tests.support.asgi_server import serve_app

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "k8s" / "progressive-delivery"
HISTORIES = REPO / "tests" / "data" / "histories"
FLAGGER_HOOKS = {"confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase", "confirm-promotion",
                 "post-rollout", "rollback", "event"}


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d]


def _one(name: str, kind: str, object_name: str | None = None) -> dict:
    found = [d for d in _docs(name) if d["kind"] == kind and (object_name is None or d["metadata"]["name"] == object_name)]
    assert len(found) == 1, f"{name}: expected one {kind} {object_name or ''}"
    return found[0]


def _experiment_config():
    configmap = yaml.safe_load((REPO / "k8s" / "base" / "experiment-configmap.yaml").read_text())
    return parse_config(yaml.safe_load(configmap["data"]["experiment.yaml"]))


EXPERIMENT = _experiment_config()
SERVICE = _one("analysis-service.yaml", "Service")
SERVICE_HOST = f"{SERVICE['metadata']['name']}.modelramp.svc"
SERVICE_PORT = SERVICE["spec"]["ports"][0]["port"]


@pytest.fixture(scope="module")
def service():
    """The real analysis app serving recorded histories under the manifests' experiment name."""
    feeds = {}
    for case in ("ramp", "ship", "hold", "rollback", "blocked_srm"):
        path = HISTORIES / f"{case}.json"
        feeds[f"{EXPERIMENT.name}-{case}"] = Feed(lambda: load_config(HISTORIES / "experiment.yaml"),
                                                  functools.partial(load_history, path, allow_resets=True), live=False)
    with serve_app(create_app(feeds)) as url, httpx.Client(base_url=url) as client:
        yield client


def _local_path(url: str, experiment: str, case: str) -> str:
    """A manifest URL aimed at the served recorded case: check host and port, keep the path."""
    parsed = urlparse(url)
    assert (parsed.hostname, parsed.port) == (SERVICE_HOST, SERVICE_PORT), url
    assert f"/{experiment}/" in parsed.path + "/" and parsed.path.count(experiment) == 1
    return parsed.path.replace(experiment, f"{experiment}-{case}")


# The analysis service -------------------------------------------------------------------------------


def test_analysis_service_objects_validate_and_fit_together():
    deployment = _one("analysis-service.yaml", "Deployment")
    for obj in (deployment, SERVICE):
        for version in ("1.25", "1.37"):
            kubernetes_validate.validate(obj, version, strict=True)
    pod = deployment["spec"]["template"]
    assert SERVICE["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    assert SERVICE["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    # The container's arguments are a valid `modelramp analyze --serve` command line.
    args = build_parser().parse_args([re.sub(r"\$\(\w+\)", "sqlite:///x.db", a) for a in container["args"]])
    assert args.command == "analyze" and args.serve and args.prometheus
    assert args.port == container["ports"][0]["containerPort"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert str(args.config).startswith(mount["mountPath"])
    assert {v["name"]: v for v in pod["spec"]["volumes"]}["config"]["configMap"]["name"] == "modelramp-experiment"


# Argo Rollouts ---------------------------------------------------------------------------------------


def _argo_condition(expression: str, result: dict) -> bool:
    """Evaluate the small subset of Argo's expr language the templates use, on a real answer."""
    assert re.fullmatch(r'result\.\w+ (==|in) (\[("\w+"(, )?)+\]|"\w+"|true|false)', expression), expression
    python = re.sub(r"result\.(\w+)", r"result['\1']", expression).replace("true", "True").replace("false", "False")
    return bool(eval(python, {"__builtins__": {}}, {"result": result}))


def _argo_outcome(metric: dict, result: dict) -> str:
    if _argo_condition(metric["failureCondition"], result):
        return "Failed"
    return "Successful" if _argo_condition(metric["successCondition"], result) else "Inconclusive"


@pytest.mark.parametrize("case, gate, guard", [
    ("ramp", "Successful", "Successful"), ("ship", "Successful", "Successful"), ("hold", "Inconclusive", "Successful"),
    ("blocked_srm", "Inconclusive", "Successful"), ("rollback", "Failed", "Failed"),
])
def test_argo_templates_gate_on_the_decision(service, case, gate, guard):
    outcomes = {}
    for template in _docs("argo-analysistemplate.yaml"):
        assert (template["apiVersion"], template["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
        defaults = {a["name"]: a.get("value") for a in template["spec"]["args"]}
        (metric,) = template["spec"]["metrics"]
        web = metric["provider"]["web"]
        assert "jsonPath" not in web  # the whole document is `result`
        assert metric["failureLimit"] == 0
        url = web["url"].replace("{{args.analysis-url}}", defaults["analysis-url"])
        url = url.replace("{{args.experiment}}", EXPERIMENT.name)
        response = service.get(_local_path(url, EXPERIMENT.name, case))
        assert response.status_code == 200
        outcomes[template["metadata"]["name"]] = _argo_outcome(metric, response.json())
    assert outcomes == {"modelramp-gate": gate, "modelramp-guard": guard}


def test_argo_rollout_steps_are_the_stages_and_use_the_templates():
    rollout = _one("argo-rollout.yaml", "Rollout")
    templates = {t["metadata"]["name"]: {a["name"] for a in t["spec"]["args"] if "value" not in a}
                 for t in _docs("argo-analysistemplate.yaml")}
    canary = rollout["spec"]["strategy"]["canary"]
    weights = [s["setWeight"] for s in canary["steps"] if "setWeight" in s]
    # Argo promotes to 100% after the last step: the steps are every stage but the last.
    assert weights + [100] == [s.percent for s in EXPERIMENT.ramp.stages]
    analyses = [s["analysis"] for s in canary["steps"] if "analysis" in s] + [canary["analysis"]]
    assert len(analyses) == len(weights) + 1
    for analysis in analyses:
        for ref in analysis["templates"]:
            required = templates[ref["templateName"]]
            assert required <= {a["name"] for a in analysis["args"]}
            assert {a["value"] for a in analysis["args"] if a["name"] == "experiment"} == {EXPERIMENT.name}
    assert rollout["spec"]["workloadRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelramp-tfserving"}


# Flagger -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, advance, roll_back", [
    ("ramp", True, False), ("ship", True, False), ("hold", False, False), ("blocked_srm", False, False),
    ("rollback", False, True),
])
def test_flagger_webhooks_gate_on_the_decision(service, case, advance, roll_back):
    canary = _one("flagger-canary.yaml", "Canary")
    assert (canary["apiVersion"], canary["kind"]) == ("flagger.app/v1beta1", "Canary")
    hooks = canary["spec"]["analysis"]["webhooks"]
    assert len({h["name"] for h in hooks}) == len(hooks) and {h["type"] for h in hooks} <= FLAGGER_HOOKS
    payload = {"name": canary["metadata"]["name"], "namespace": "modelramp", "phase": "Progressing", "metadata": {}}
    for hook in hooks:
        assert hook["url"] and re.fullmatch(r"\d+s", hook["timeout"])
        status = service.post(_local_path(hook["url"], EXPERIMENT.name, case), json=payload).status_code
        # Flagger: 2xx confirms a traffic increase / promotion, and 2xx from a rollback hook rolls back.
        expected = roll_back if hook["type"] == "rollback" else advance
        assert (200 <= status < 300) == expected, (hook["name"], status)
    assert {h["type"] for h in hooks} == {"confirm-traffic-increase", "confirm-promotion", "rollback"}


def test_flagger_canary_steps_are_the_stages():
    spec = _one("flagger-canary.yaml", "Canary")["spec"]
    assert spec["analysis"]["stepWeights"] + [100] == [s.percent for s in EXPERIMENT.ramp.stages]
    assert spec["analysis"]["interval"] and spec["analysis"]["threshold"] >= 1  # required by Flagger
    assert spec["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "modelramp-tfserving"}
    tfserving = yaml.safe_load((REPO / "k8s" / "base" / "tfserving-service.yaml").read_text())
    assert spec["service"]["port"] in {p["port"] for p in tfserving["spec"]["ports"]}
