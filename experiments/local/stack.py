"""The laptop stack: model server, legacy system, router and Prometheus as child processes on loopback.

Every process is a real one: `modelramp serve-model` serving both candidate versions (so the
experiment can pin either), `modelramp legacy`, `modelramp router` watching the experiment file,
and Debian's `prometheus` (when it is on the PATH) scraping the router every second with its data
in the run folder. Each is waited for until it answers, and all are stopped, router first, on exit.

Prometheus is the one optional process: nothing answers a client through it, so its exit must not
take the router and the backends down (`up` and the demo stop when `Stack.exited()` names a
process). It is supervised apart (`Stack.supervise`): its exit is reported on stderr, it is
restarted after a backoff of 1, 2 and 4 s, and after `PROMETHEUS_RESTARTS` exits without a
healthy minute between them the stack goes on without it (`prometheus_url` is then None: the
analyzer reads the router's `/metrics` instead; a controller already reading Prometheus gets
errors until it is restarted).
`Child` is the one way modelramp starts a process: `up`, `demo`, the gate's `--start-server`, the
tests and the benchmarks all use it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from experiments.config import ExperimentConfig, load_config, parse_config
from router.ledger import LEDGER_ENV
from router.ports import require_free
from serving.model_server.model_config import render_model_config
from serving.tfserving.errors import FailedPrecondition

STOP_TIMEOUT_S = 15.0
OPTIONAL = frozenset({"prometheus"})  # roles whose exit the stack survives (supervised, not fatal)
PROMETHEUS_RESTARTS = 3  # exits in a row (no healthy minute between) before the stack goes on without it
HEALTHY_S = 60.0  # running this long after a restart resets the count
MODEL_SERVER_TIMEOUT_S = 180.0  # TensorFlow loads in a few seconds, far slower on a busy machine

PROMETHEUS_CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: modelramp-router
    static_configs:
      - targets: ["{target}"]
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Child:
    """One `modelramp` subcommand running as a child process."""

    def __init__(self, role: str, args: Sequence[str], env: Mapping[str, str] | None = None, *,
                 log_path: Path | None = None, executable: str | None = None, cwd: Path | None = None):
        """`modelramp <args>` (or `executable <args>`); output to `log_path` if given, else inherited."""
        self.role = role
        self.args = list(args)
        self.log_path = log_path
        self._how = (dict(env or {}), executable, cwd)
        self.proc = self._start("wb")

    def _start(self, mode: str) -> subprocess.Popen[bytes]:
        env, executable, cwd = self._how
        command = [executable, *self.args] if executable else [sys.executable, "-m", "experiments.cli", *self.args]
        self._log = open(self.log_path, mode) if self.log_path else None  # closed by stop() or restart()
        return subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, cwd=cwd,
                                stdout=self._log, stderr=subprocess.STDOUT if self._log else None)

    def restart(self) -> None:
        """Start the same command again (after it exited), its output appended to the same log."""
        if self.proc.poll() is None:
            raise RuntimeError(f"{self.role} is still running")
        if self._log:
            self._log.close()
        self.proc = self._start("ab")

    def wait_ready(self, ready: Callable[[], bool], timeout: float, stopping: threading.Event | None = None) -> None:
        """Poll `ready` until true; FailedPrecondition if the process exits first or `timeout` passes."""
        stopping = stopping or threading.Event()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stopping.is_set():
            if self.proc.poll() is not None:
                raise FailedPrecondition(f"{self.role} exited with code {self.proc.returncode} before it was ready (see its log above)")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not listening or not loaded yet: keep polling
                pass
            stopping.wait(0.1)  # polling interval; readiness itself is the condition
        if not stopping.is_set():
            raise FailedPrecondition(f"{self.role} was not ready within {timeout:.0f}s")

    def log(self) -> str:
        """What the process wrote so far (empty when its output is inherited)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """Kill the process outright (fault injection), as a crash would."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        return self.proc.returncode


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
    _supervising: threading.Lock = field(default_factory=threading.Lock)  # a restart and stop() never overlap

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

    @property
    def outcome_ledger(self) -> str:
        """The router's outcome ledger: $MODELRAMP_OUTCOME_LEDGER, else a SQLite file in the run folder."""
        return outcome_ledger_url(self.run_dir)

    def kill(self, role: str) -> None:
        """Kill one process outright (fault injection), as a crash would."""
        self.children[role].kill()

    def exited(self) -> str | None:
        """The role of a process that died on its own, if any; never an optional one (`supervise` restarts it)."""
        return next((role for role, c in list(self.children.items()) if role not in OPTIONAL and c.proc.poll() is not None), None)

    def supervise(self, role: str, restarts: int = PROMETHEUS_RESTARTS, backoff: float = 1.0, healthy: float = HEALTHY_S,
                  poll: float = 0.5) -> threading.Thread:
        """Watch an optional process in a daemon thread: report its exit, restart it (bounded), or go on without it."""
        def warn(message: str) -> None:
            print(f"modelramp: {message}", file=sys.stderr, flush=True)  # loud: stderr, whatever the stack's log is

        def watch() -> None:
            failures, since = 0, time.monotonic()
            while not self.stopping.wait(poll):
                child = self.children.get(role)
                if child is None:
                    return
                if child.proc.poll() is None:
                    if failures and time.monotonic() - since >= healthy:
                        failures = 0
                    continue
                failures += 1
                where = f" (log: {child.log_path})" if child.log_path else ""
                if failures > restarts:
                    warn(f"{role} exited with code {child.proc.returncode}{where} {failures} times in a row; going on without it: "
                         "the router and its backends keep serving, the analyzer reads the router's /metrics")
                    with self._supervising:
                        child.stop()
                        self.children.pop(role, None)
                    return
                delay = backoff * 2 ** (failures - 1)
                warn(f"{role} exited with code {child.proc.returncode}{where}; the router and its backends keep serving; "
                     f"restarting it in {delay:g}s ({failures} of {restarts})")
                if self.stopping.wait(delay):
                    return
                with self._supervising:
                    if self.stopping.is_set():
                        return
                    child.restart()
                    since = time.monotonic()

        thread = threading.Thread(target=watch, name=f"supervise-{role}", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self.stopping.set()
        with self._supervising:
            for role in ("router", "prometheus", "legacy system", "model server"):
                if role in self.children:
                    self.children[role].stop()


def outcome_ledger_url(run_dir: Path) -> str:
    """$MODELRAMP_OUTCOME_LEDGER when set, else `run_dir/outcomes.db` (one router: SQLite is right)."""
    return os.environ.get(LEDGER_ENV) or f"sqlite:///{(run_dir / 'outcomes.db').resolve()}"


def _get(url: str) -> tuple[int, bytes]:
    response = httpx.get(url, timeout=1.0, trust_env=False)  # loopback: never through a proxy from the environment
    return response.status_code, response.content


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
        model_config.write_text(render_model_config(model_name, (models_dir / model_name).resolve(), "all"))
        model = child("model server", ["serve-model", "--port", str(ports.model_grpc), "--rest_api_port", str(ports.model_rest),
                                       "--model_config_file", str(model_config), "--host", host])
        legacy = child("legacy system", ["legacy", "--port", str(ports.legacy), "--host", host])
        log("starting the model server (TensorFlow loads in a few seconds) and the legacy system ...")
        # Waiting on the model server first: it is the slow one, the others start meanwhile.
        model.wait_ready(_serving(host, ports.model_rest, model_name, None), timeout, stack.stopping)
        legacy.wait_ready(lambda: _get(f"{stack.legacy_url}/healthz")[0] == 200, timeout, stack.stopping)
        env = {"MODELRAMP_SIGNING_KEY": os.environ.get("MODELRAMP_SIGNING_KEY") or secrets.token_urlsafe(32),
               "MODELRAMP_WEIGHTS_TOKEN": stack.weights_token}
        router_args = ["router", "--config", str(config_path), "--host", host, "--http-port", str(ports.router_http),
                       "--grpc-port", str(ports.router_grpc), "--watch-interval", "0.25",
                       "--outcome-ledger", stack.outcome_ledger]
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
            stack.supervise("prometheus")
        log(f"stack up: router {stack.router_url}, model server {stack.model_target}, legacy {stack.legacy_url}"
            + (f", Prometheus {stack.prometheus_url}" if prometheus else " (no Prometheus: the analyzer reads the router's /metrics)"))
        return stack
    except BaseException:
        stack.stop()
        raise


def baseline_path(models_dir: Path, model_name: str, config_path: Path) -> Path | None:
    """The feature baseline of the version the experiment pins (else the newest), if it was exported."""
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


def with_local_backends(config: ExperimentConfig, host: str, ports: Ports) -> ExperimentConfig:
    """The config with its backends pointed at the local processes (keeping versions and timeouts)."""
    doc = config.model_dump(mode="json")
    if doc["router"]["feature_sample_share"] == 0:
        doc["router"]["feature_sample_share"] = 1.0  # `up` passes the model's baseline: sketch every request
    doc["arms"]["legacy"]["backend"]["url"] = f"http://{host}:{ports.legacy}"
    model = doc["arms"]["model"]["backend"]
    if model["kind"] == "tfserving_grpc":
        model["target"] = f"{host}:{ports.model_grpc}"
        if model.get("rest_port") is not None:  # REST rows to the same server's REST API
            model["rest_port"] = ports.model_rest
    else:
        model["url"] = f"http://{host}:{ports.model_rest}"
    return parse_config(doc)


def _serving(host: str, rest_port: int, model_name: str, versions: set[int] | None) -> Callable[[], bool]:
    """True once every version the model server reports (or every one of `versions`) is AVAILABLE."""
    def ready() -> bool:
        status, body = _get(f"http://{host}:{rest_port}/v1/models/{model_name}")
        states = json.loads(body).get("model_version_status", []) if status == 200 else []
        available = {int(s["version"]) for s in states if s.get("state") == "AVAILABLE"}
        return bool(states) and len(available) == len(states) and (versions is None or available >= versions)
    return ready


@contextmanager
def model_server(models_dir: Path, model_name: str, run_dir: Path, *, versions: Sequence[int] | str = "all",
                 labels: Mapping[str, int] | None = None, host: str = "127.0.0.1", grpc_port: int | None = None,
                 rest_port: int | None = None, timeout: float = MODEL_SERVER_TIMEOUT_S,
                 extra_args: Sequence[str] = ()) -> Iterator[tuple[Child, str, str]]:
    """`modelramp serve-model` for `model_name` until the block ends; yields (child, gRPC target, REST URL).

    `versions` is "all", "latest" or the version numbers to serve; it waits until every one of them
    is available, so an evaluation never silently skips a version that was still loading.
    """
    base = (Path(models_dir) / model_name).resolve()
    if not base.is_dir():
        raise FailedPrecondition(f"no model folder {base}; train it first: modelramp train --out {models_dir} --all-versions")
    grpc_port, rest_port = grpc_port or free_port(host), rest_port or free_port(host)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / f"models-{grpc_port}.config"
    config.write_text(render_model_config(model_name, base, versions, labels))
    child = Child("model server", ["serve-model", "--host", host, "--port", str(grpc_port), "--rest_api_port", str(rest_port),
                                   "--model_config_file", str(config), *extra_args],
                  log_path=run_dir / f"model-server-{grpc_port}.log")
    try:
        wanted = None if isinstance(versions, str) else {int(v) for v in versions}
        if versions == "all":
            wanted = {int(p.name) for p in base.iterdir() if p.name.isdigit()}
        try:
            child.wait_ready(_serving(host, rest_port, model_name, wanted), timeout)
        except FailedPrecondition as err:
            tail = " ".join(child.log().strip().splitlines()[-1:])
            raise FailedPrecondition(f"{err}: {tail}") from None
        yield child, f"{host}:{grpc_port}", f"http://{host}:{rest_port}"
    finally:
        child.stop()
