"""Smoke runs of the built images (scripts/build_images.sh smoke): they start, serve and decide.

The legacy system runs on the host from this checkout's virtual environment, and so does the model server
unless a model image is given (`--model`: then `modelramp serve-model` runs from it on the trained models,
mounted read-only). The router runs from the router image (`buildah run` shares the host's loopback), its entrypoint and user as the image
declares them. REST and gRPC predicts go through it, each must come back with a prediction from the
arm the router chose; the model arm runs as the chart deploys it (`rest_port`: REST clients' rows go on to
the model server's REST API), so REST predicts go on until each arm has answered one, and the router's
/metrics must show no fallback and no backend error. Then `modelramp ramp --once --dry-run` runs from the
controller image against the router's /metrics. Neither may have written a file outside /tmp (the chart's root filesystem is read-only).
Any failure exits non-zero with the reason (and the router's log).

Cheap checks come first: an image without an entrypoint, or one that would run as root, fails before
anything starts (tests/deploy/test_images_build.py builds such an image from scratch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from experiments.local.stack import Child, free_port, model_server
from scripts.containers import Container, ContainerError, entrypoint_of
from serving.tfserving.grpc_client import PredictionClient, build_predict_request, parse_predict_response
from serving.training.dataset import read_split, to_columns, to_instances

MODEL_NAME = "churn"
READY_TIMEOUT_S = 120.0


class SmokeError(Exception):
    pass


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return 0


def wait_for(what: str, ready, proc: subprocess.Popen, log, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll `ready` until true; SmokeError if `proc` exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise SmokeError(f"{what} exited with {proc.returncode} before it was ready:\n{log()}")
        if time.monotonic() > deadline:
            raise SmokeError(f"{what} not ready after {timeout:.0f} s:\n{log()}")
        time.sleep(0.2)


def experiment(run_dir: Path, legacy_url: str, model_target: str, rest_port: int) -> Path:
    """An experiment with half the units on each arm, backends on loopback; REST rows to the model server's REST API."""
    doc = {"name": "image-smoke", "salt": "image-smoke", "model_name": MODEL_NAME,
           "arms": {"legacy": {"weight": 0.5, "backend": {"kind": "legacy_http", "url": legacy_url}},
                    "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": model_target,
                                                         "rest_port": rest_port, "model_name": MODEL_NAME}}}}
    path = run_dir / "experiment.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def predict_rest(http_port: int, row: dict[str, Any], unit: str) -> tuple[str, dict[str, Any]]:
    """(the arm the router says answered, its TF Serving document)."""
    body = json.dumps({"instances": [row]}).encode()
    response = httpx.post(f"http://127.0.0.1:{http_port}/v1/models/{MODEL_NAME}:predict", content=body, timeout=10,
                          headers={"Content-Type": "application/json", "X-Unit-Id": unit}, trust_env=False)
    if response.status_code != 200:
        raise SmokeError(f"REST predict through the router: HTTP {response.status_code}")
    document: dict[str, Any] = response.json()
    if len(document.get("predictions", [])) != 1:
        raise SmokeError(f"REST predict through the router: no prediction in {document}")
    return response.headers.get("x-modelramp-arm", "?"), document


def predict_rest_on_both_arms(http_port: int, row: dict[str, Any], tries: int = 40) -> dict[str, dict[str, Any]]:
    """REST predicts for new units until each arm has answered one (half the units are on each: 40 tries miss with p = 2^-39)."""
    answered: dict[str, dict[str, Any]] = {}
    for k in range(tries):
        arm, document = predict_rest(http_port, row, f"smoke-unit-{k}")
        answered.setdefault(arm, document)
        if {"legacy", "model"} <= answered.keys():
            return answered
    raise SmokeError(f"REST predict through the router: {tries} units, answered only by {sorted(answered)}")


def no_fallbacks(http_port: int) -> None:
    """The router's /metrics: no request answered by the other arm's backend, no failed backend call."""
    text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10, trust_env=False).text
    failed = [f"{sample.name}{sample.labels} {sample.value:g}" for family in text_string_to_metric_families(text)
              for sample in family.samples
              if sample.name in ("modelramp_fallbacks_total", "modelramp_backend_errors_total") and sample.value > 0]
    if failed:
        raise SmokeError("the router fell back or a backend failed: " + "; ".join(failed))


def predict_grpc(grpc_port: int, columns: dict[str, Any], unit: str) -> dict[str, Any]:
    with PredictionClient(f"127.0.0.1:{grpc_port}", timeout=10) as client:
        response = client.predict_raw(build_predict_request(MODEL_NAME, columns), metadata=(("x-unit-id", unit),))
    outputs = parse_predict_response(response)
    if not outputs or any(len(v) != 1 for v in outputs.values()):
        raise SmokeError(f"gRPC predict through the router: unexpected outputs {outputs}")
    return {name: value.tolist() for name, value in outputs.items()}


def _available(rest_port: int) -> bool:
    try:
        response = httpx.get(f"http://127.0.0.1:{rest_port}/v1/models/{MODEL_NAME}", timeout=2, trust_env=False)
        states = response.json().get("model_version_status", [])
    except (httpx.HTTPError, ValueError):
        return False
    return any(s.get("state") == "AVAILABLE" for s in states)


@contextlib.contextmanager
def model_from_image(model_image: str, models: Path, run_dir: Path) -> Iterator[tuple[str, int]]:
    """`modelramp serve-model` from the model image on the trained models (read-only); yields (its gRPC target, its REST port)."""
    grpc_port, rest_port = free_port(), free_port()
    print(f"model server from {model_image}", flush=True)
    model = Container(model_image, ["serve-model", "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
                                    "--model_name", MODEL_NAME, "--model_base_path", f"/models/{MODEL_NAME}"],
                      run_dir / "model-server.log", {models.resolve(): "/models:ro"})
    try:
        wait_for("model server (from its image)", lambda: _available(rest_port), model.proc, model.log)
        yield f"127.0.0.1:{grpc_port}", rest_port
    finally:
        model.stop()


def run(router_image: str, controller_image: str, models: Path, model_image: str | None = None) -> None:
    # Before anything starts: the images must be runnable as the chart runs them.
    for image in (router_image, controller_image, *([model_image] if model_image else [])):
        entrypoint_of(image)
    frame = read_split(models / "data", "test").head(1)
    row, columns = to_instances(frame)[0], to_columns(frame)
    with tempfile.TemporaryDirectory(prefix="modelramp-image-smoke-") as tmp:
        run_dir = Path(tmp)
        os.chmod(run_dir, 0o755)  # the images' user reads the experiment file
        with contextlib.ExitStack() as backends:
            if model_image:  # TF Serving's stand-in from the model image, else from this checkout
                model_target, rest_port = backends.enter_context(model_from_image(model_image, models, run_dir))
            else:
                _, model_target, rest_url = backends.enter_context(model_server(models, MODEL_NAME, run_dir, versions="latest"))
                rest_port = urlsplit(rest_url).port or 80
            legacy_port = free_port()
            legacy = Child("legacy system", ["legacy", "--host", "127.0.0.1", "--port", str(legacy_port)],
                           log_path=run_dir / "legacy.log")
            router = None
            try:
                wait_for("legacy system", lambda: _status(f"http://127.0.0.1:{legacy_port}/healthz") == 200, legacy.proc, legacy.log)
                experiment(run_dir, f"http://127.0.0.1:{legacy_port}", model_target, rest_port)  # mounted at /smoke
                http_port, grpc_port = free_port(), free_port()
                print(f"router from {router_image}", flush=True)
                router = Container(router_image, ["router", "--config", "/smoke/experiment.yaml", "--host", "127.0.0.1",
                                                  "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                                                  "--outcome-ledger", "sqlite:////tmp/outcomes.db"],
                                   run_dir / "router.log", {run_dir: "/smoke"})
                wait_for("router (from its image)", lambda: _status(f"http://127.0.0.1:{http_port}/readyz") == 200,
                         router.proc, router.log)
                for arm, document in sorted(predict_rest_on_both_arms(http_port, row).items()):
                    print(f"  REST predict ({arm} arm): {document}", flush=True)
                print(f"  gRPC predict: {predict_grpc(grpc_port, columns, 'smoke-unit-grpc')}", flush=True)
                no_fallbacks(http_port)
                if written := router.written_outside_tmp():
                    raise SmokeError(f"the router wrote outside /tmp (read-only in the cluster): {written[:10]}")
                print(f"ramp controller from {controller_image}", flush=True)
                ramp = Container(controller_image, ["ramp", "--once", "--dry-run", "--config", "/smoke/experiment.yaml",
                                                    "--metrics-url", f"http://127.0.0.1:{http_port}", "--db", "/tmp/audit.db"],
                                 run_dir / "ramp.log", {run_dir: "/smoke"})
                try:
                    code = ramp.wait(120)
                    print("\n".join(f"  | {line}" for line in ramp.log().splitlines()), flush=True)
                    if code != 0:
                        raise SmokeError(f"modelramp ramp --once --dry-run from {controller_image} exited with {code}")
                    if written := ramp.written_outside_tmp():
                        raise SmokeError(f"the ramp controller wrote outside /tmp (read-only in the cluster): {written[:10]}")
                finally:
                    ramp.stop()
            except Exception:
                if router is not None:
                    print(f"--- router log\n{router.log()}", file=sys.stderr)
                raise
            finally:
                if router is not None:
                    router.stop()
                legacy.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", required=True, help="router image")
    parser.add_argument("--controller", required=True, help="controller image")
    parser.add_argument("--model", default=None, help="model image: serve the model from it (default: from this checkout)")
    parser.add_argument("--models", type=Path, default=REPO / "models", help="trained models folder (make model)")
    args = parser.parse_args()
    try:
        run(args.router, args.controller, args.models, args.model)
    except (SmokeError, ContainerError) as err:
        print(f"smoke: FAILED: {err}", file=sys.stderr)
        return 1
    print("smoke: the router image served REST and gRPC predicts; the controller image decided", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
