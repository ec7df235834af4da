"""`modelramp up`: the local stack (model server, legacy system, router) as child processes in the foreground.

Each child is a `modelramp` subcommand. We wait until each one is ready (not merely started),
print the URLs, and on Ctrl-C, SIGTERM or any child exiting, stop all of them: router first,
so no request is routed to a backend that is already gone.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

from experiments.config import EXAMPLE_CONFIG, load_config
from router.ports import require_free
from serving.errors import FailedPrecondition

STOP_TIMEOUT_S = 15.0


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


class Child:
    """One `modelramp` subcommand running as a child process."""

    def __init__(self, role: str, args: list[str], env: dict[str, str] | None = None, *,
                 log_path: Path | None = None, executable: str | None = None):
        """`modelramp <args>` (or `executable <args>`); output to `log_path` if given, else inherited."""
        self.role = role
        command = [executable, *args] if executable else [sys.executable, "-m", "experiments.cli", *args]
        self._log = open(log_path, "wb") if log_path else None
        self.proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT if self._log else None)

    def wait_ready(self, ready: Callable[[], bool], timeout: float, stopping: threading.Event) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping.is_set():
            if self.proc.poll() is not None:
                raise FailedPrecondition(f"{self.role} exited with code {self.proc.returncode} before it was ready (see its log above)")
            try:
                if ready():
                    return
            except OSError:
                pass  # not listening yet
            stopping.wait(0.1)  # polling interval; readiness itself is the condition
        if not stopping.is_set():
            raise FailedPrecondition(f"{self.role} was not ready within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()


def run_stack(args: Namespace) -> int:
    config_path = args.config or EXAMPLE_CONFIG
    config = load_config(config_path)  # a bad config is one clear error before anything starts
    model_backend = config.arms["model"].backend
    model_dir = args.models / model_backend.model_name
    if not model_dir.is_dir():
        raise FailedPrecondition(f"no exported model at {model_dir}; train it first: modelramp train --out {args.models} --all-versions")
    host = args.host
    require_free({"model server gRPC (--model-port)": args.model_port, "model server REST (--model-rest-port)": args.model_rest_port,
                  "legacy system (--legacy-port)": args.legacy_port, "router HTTP (--router-port)": args.router_port,
                  "router gRPC (--router-grpc-port)": args.router_grpc_port}, host)
    model_target = (f"{host}:{args.model_port}" if model_backend.kind == "tfserving_grpc" else f"http://{host}:{args.model_rest_port}")
    token = os.environ.get("MODELRAMP_WEIGHTS_TOKEN") or secrets.token_urlsafe(24)
    router_env = {"MODELRAMP_SIGNING_KEY": os.environ.get("MODELRAMP_SIGNING_KEY") or secrets.token_urlsafe(32),
                  "MODELRAMP_WEIGHTS_TOKEN": token}

    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    try:
        model = Child("model server", ["serve-model", "--port", str(args.model_port), "--rest_api_port", str(args.model_rest_port),
                                       "--model_name", model_backend.model_name, "--model_base_path", str(model_dir.resolve()), "--host", host])
        children.append(model)
        legacy = Child("legacy system", ["legacy", "--port", str(args.legacy_port), "--host", host])
        children.append(legacy)
        model_status = f"http://{host}:{args.model_rest_port}/v1/models/{model_backend.model_name}"
        model.wait_ready(lambda: _model_available(model_status), args.timeout, stopping)
        legacy.wait_ready(lambda: _get(f"http://{host}:{args.legacy_port}/healthz")[0] == 200, args.timeout, stopping)
        router = Child("router", ["router", "--config", str(config_path), "--host", host, "--http-port", str(args.router_port),
                                  "--grpc-port", str(args.router_grpc_port), "--legacy-url", f"http://{host}:{args.legacy_port}",
                                  "--model-target", model_target], router_env)
        children.append(router)
        router.wait_ready(lambda: _get(f"http://{host}:{args.router_port}/readyz")[0] == 200, args.timeout, stopping)
        if not stopping.is_set():
            print(f"""
modelramp is up (experiment {config.name!r}, weights {config.weights}); Ctrl-C stops everything.
  router HTTP    http://{host}:{args.router_port}/v1/models/{config.model_name}:predict   (docs: http://{host}:{args.router_port}/docs)
  router gRPC    {host}:{args.router_grpc_port}
  metrics        http://{host}:{args.router_port}/metrics
  model server   gRPC {host}:{args.model_port}, REST http://{host}:{args.model_rest_port}
  legacy system  http://{host}:{args.legacy_port}
  weights API    PUT http://{host}:{args.router_port}/v1/experiments/{config.name}/weights  with  Authorization: Bearer {token}
""", flush=True)
        while not stopping.is_set():
            exited = next((c for c in children if c.proc.poll() is not None), None)
            if exited is not None:
                print(f"modelramp up: {exited.role} exited with code {exited.proc.returncode}; stopping the others", file=sys.stderr)
                return 1
            stopping.wait(0.5)
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _model_available(url: str) -> bool:
    status, body = _get(url)
    if status != 200:
        return False
    versions = json.loads(body).get("model_version_status", [])
    return any(v.get("state") == "AVAILABLE" for v in versions)
