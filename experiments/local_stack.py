"""The local stack of `modelramp up` and `modelramp demo`: model server, legacy system, router, Prometheus.

Every process is a real one on loopback: `modelramp serve-model` serving both candidate versions
(so the experiment can pin either), `modelramp legacy`, `modelramp router` watching the demo's
experiment file, and Debian's `prometheus` (when it is on the PATH) scraping the router every
second with its data in the run folder. Each is waited for until it answers, and all are stopped, router first, on exit.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from router.ports import require_free
from router.up import Child

MODEL_CONFIG = """model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
  }}
}}
"""

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: modelramp-router
    static_configs:
      - targets: ["{target}"]
"""


@dataclass
class Ports:
    model_grpc: int = 8500
    model_rest: int = 8501
    legacy: int = 8081
    router_http: int = 8080
    router_grpc: int = 8090
    prometheus: int = 9090


@dataclass
class Stack:
    """Handles on the running processes and their addresses."""

    host: str
    ports: Ports
    run_dir: Path
    weights_token: str = ""
    children: dict[str, Child] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def router_url(self) -> str:
        return f"http://{self.host}:{self.ports.router_http}"

    @property
    def model_target(self) -> str:
        return f"{self.host}:{self.ports.model_grpc}"

    @property
    def legacy_url(self) -> str:
        return f"http://{self.host}:{self.ports.legacy}"

    @property
    def prometheus_url(self) -> str | None:
        return f"http://{self.host}:{self.ports.prometheus}" if "prometheus" in self.children else None

    def kill(self, role: str) -> None:
        """Kill one process outright (fault injection), as a crash would."""
        child = self.children[role]
        child.proc.kill()
        child.proc.wait()

    def exited(self) -> str | None:
        """The role of a process that died on its own, if any."""
        return next((role for role, c in self.children.items() if c.proc.poll() is not None), None)

    def stop(self) -> None:
        self.stopping.set()
        for role in ("router", "prometheus", "legacy system", "model server"):
            if role in self.children:
                self.children[role].stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _models_available(url: str) -> bool:
    status, body = _get(url)
    return status == 200 and all(v.get("state") == "AVAILABLE" for v in json.loads(body).get("model_version_status", [])) \
        and bool(json.loads(body).get("model_version_status"))


def start_stack(models_dir: Path, model_name: str, config_path: Path, run_dir: Path, *, host: str = "127.0.0.1",
                ports: Ports | None = None, with_prometheus: bool = True, timeout: float = 180.0, log=print,
                log_to_files: bool = True, stopping: threading.Event | None = None) -> Stack:
    """Start every process and wait until each answers; stops what started if any step fails.

    With `log_to_files` each process writes to `run_dir/logs/<role>.log`; otherwise to this terminal.
    """
    ports = ports or Ports()
    prometheus = shutil.which("prometheus") if with_prometheus else None
    wanted = {"model server gRPC": ports.model_grpc, "model server REST": ports.model_rest,
              "legacy system": ports.legacy, "router HTTP": ports.router_http, "router gRPC": ports.router_grpc}
    if prometheus:
        wanted["Prometheus"] = ports.prometheus
    require_free(wanted, host)
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(host, ports, run_dir, weights_token=os.environ.get("MODELRAMP_WEIGHTS_TOKEN") or secrets.token_urlsafe(24),
                  stopping=stopping or threading.Event())
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)

    def child(role: str, args: list[str], env: dict[str, str] | None = None, executable: str | None = None) -> Child:
        log_path = logs / f"{role.replace(' ', '-')}.log" if log_to_files else None
        c = Child(role, args, env, log_path=log_path, executable=executable)
        stack.children[role] = c
        return c

    try:
        model_config = run_dir / "models.config"
        model_config.write_text(MODEL_CONFIG.format(name=model_name, base=(models_dir / model_name).resolve()))
        model = child("model server", ["serve-model", "--port", str(ports.model_grpc), "--rest_api_port", str(ports.model_rest),
                                       "--model_config_file", str(model_config), "--host", host])
        legacy = child("legacy system", ["legacy", "--port", str(ports.legacy), "--host", host])
        log("starting the model server (TensorFlow loads in a few seconds) and the legacy system ...")
        # Waiting on the model server first: it is the slow one, the others start meanwhile.
        model.wait_ready(lambda: _models_available(f"http://{host}:{ports.model_rest}/v1/models/{model_name}"), timeout, stack.stopping)
        legacy.wait_ready(lambda: _get(f"{stack.legacy_url}/healthz")[0] == 200, timeout, stack.stopping)
        env = {"MODELRAMP_SIGNING_KEY": os.environ.get("MODELRAMP_SIGNING_KEY") or secrets.token_urlsafe(32),
               "MODELRAMP_WEIGHTS_TOKEN": stack.weights_token}
        router_args = ["router", "--config", str(config_path), "--host", host, "--http-port", str(ports.router_http),
                       "--grpc-port", str(ports.router_grpc), "--watch-interval", "0.25"]
        baseline = baseline_path(models_dir, model_name, config_path)
        if baseline is not None:  # the skew monitors compare live features with this version's training data
            router_args += ["--baseline", str(baseline)]
        router = child("router", router_args, env)
        router.wait_ready(lambda: _get(f"{stack.router_url}/readyz")[0] == 200, timeout, stack.stopping)
        if prometheus:
            prom_dir = run_dir / "prometheus"
            prom_dir.mkdir(exist_ok=True)
            (prom_dir / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(target=f"{host}:{ports.router_http}"))
            prom = child("prometheus", [f"--config.file={prom_dir / 'prometheus.yml'}", f"--storage.tsdb.path={prom_dir / 'data'}",
                                        f"--web.listen-address={host}:{ports.prometheus}"], executable=prometheus)
            prom.wait_ready(lambda: _router_scraped(f"http://{host}:{ports.prometheus}"), timeout, stack.stopping)
        log(f"stack up: router {stack.router_url}, model server {stack.model_target}, legacy {stack.legacy_url}"
            + (f", Prometheus {stack.prometheus_url}" if prometheus else " (no Prometheus: the analyzer reads the router's /metrics)"))
        return stack
    except BaseException:
        stack.stop()
        raise


def baseline_path(models_dir: Path, model_name: str, config_path: Path) -> Path | None:
    """The feature baseline of the version the experiment pins (else the newest), if it was exported."""
    from experiments.config import load_config  # noqa: PLC0415

    pinned = load_config(config_path).arms["model"].backend.version
    versions = sorted(int(p.name) for p in (models_dir / model_name).iterdir() if p.name.isdigit())
    version = pinned if pinned is not None else (versions[-1] if versions else None)
    path = models_dir / model_name / str(version) / "modelramp" / "baseline.json"
    return path.resolve() if version is not None and path.exists() else None


def _router_scraped(prometheus_url: str) -> bool:
    status, body = _get(f"{prometheus_url}/api/v1/targets")
    if status != 200:
        return False
    targets = json.loads(body)["data"]["activeTargets"]
    return bool(targets) and all(t["health"] == "up" for t in targets)
