"""`modelramp up`: the local stack as child processes in the foreground, and `Child`, one such process.

The stack (model server, legacy system, router, and Prometheus when its binary is on the PATH) is
started by `experiments.local_stack`, each process waited for until it answers. `up` prints the
URLs, optionally runs the ramp controller, and on Ctrl-C, SIGTERM or any child exiting stops all
of them: router first, so no request is routed to a backend that is already gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

from experiments.config import EXAMPLE_CONFIG, ExperimentConfig, dump_config, load_config, parse_config
from router.ports import require_free
from serving.errors import FailedPrecondition

STOP_TIMEOUT_S = 15.0


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
    """`modelramp up`: the local stack in the foreground until Ctrl-C, SIGTERM or a child exits."""
    from experiments.local_stack import Ports, start_stack  # noqa: PLC0415 - the stack module imports this one

    config_path = args.config or EXAMPLE_CONFIG
    config = load_config(config_path)  # a bad config is one clear error before anything starts
    model_name = config.arms["model"].backend.model_name
    model_dir = args.models / model_name
    if not model_dir.is_dir():
        raise FailedPrecondition(f"no exported model at {model_dir}; train it first: modelramp train --out {args.models} --all-versions")
    ports = Ports(args.model_port, args.model_rest_port, args.legacy_port, args.router_port, args.router_grpc_port, args.prometheus_port)
    wanted = {"model server gRPC (--model-port)": ports.model_grpc, "model server REST (--model-rest-port)": ports.model_rest,
              "legacy system (--legacy-port)": ports.legacy, "router HTTP (--router-port)": ports.router_http,
              "router gRPC (--router-grpc-port)": ports.router_grpc}
    if shutil.which("prometheus") and not args.no_prometheus:
        wanted["Prometheus (--prometheus-port)"] = ports.prometheus
    require_free(wanted, args.host)

    # The router watches a copy in the run folder: the ramp controller rewrites weights there,
    # never in the packaged example.
    run_dir = Path(tempfile.mkdtemp(prefix="modelramp-up-"))
    local_config = run_dir / "experiment.yaml"
    local_config.write_text(dump_config(_with_local_backends(config, args.host, ports)))
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = None
    try:
        stack = start_stack(args.models, model_name, local_config, run_dir, host=args.host, ports=ports,
                            with_prometheus=not args.no_prometheus, timeout=args.timeout, log_to_files=False,
                            stopping=stopping)
        controller = _start_controller(stack, local_config, run_dir, args.ramp_interval, stopping) if args.ramp_interval else None
        host = args.host
        print(f"""
modelramp is up (experiment {config.name!r}, weights {config.weights}); Ctrl-C stops everything.
  router HTTP    {stack.router_url}/v1/models/{config.model_name}:predict   (docs: {stack.router_url}/docs)
  router gRPC    {host}:{ports.router_grpc}
  metrics        {stack.router_url}/metrics
  model server   gRPC {stack.model_target}, REST http://{host}:{ports.model_rest}
  legacy system  {stack.legacy_url}
  Prometheus     {stack.prometheus_url or "not running (no prometheus binary on the PATH, or --no-prometheus)"}
  ramp           {"controller every %gs, audit log %s" % (args.ramp_interval, run_dir / "audit.db") if controller else "off (--ramp-interval S turns it on)"}
  experiment     {local_config} (watched; weights API: PUT {stack.router_url}/v1/experiments/{config.name}/weights
                 with  Authorization: Bearer {stack.weights_token})
""", flush=True)
        while not stopping.is_set():
            exited = stack.exited()
            if exited is not None:
                print(f"modelramp up: {exited} exited; stopping the others", file=sys.stderr)
                return 1
            stopping.wait(0.5)
        return 0
    finally:
        stopping.set()
        if stack is not None:
            stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _with_local_backends(config: ExperimentConfig, host: str, ports) -> ExperimentConfig:
    """The config with its backends pointed at the local processes (keeping versions and timeouts)."""
    doc = config.model_dump(mode="json")
    if doc["router"]["feature_sample_share"] == 0:
        doc["router"]["feature_sample_share"] = 1.0  # `up` passes the model's baseline: sketch every request
    doc["arms"]["legacy"]["backend"]["url"] = f"http://{host}:{ports.legacy}"
    model = doc["arms"]["model"]["backend"]
    if model["kind"] == "tfserving_grpc":
        model["target"] = f"{host}:{ports.model_grpc}"
    else:
        model["url"] = f"http://{host}:{ports.model_rest}"
    return parse_config(doc)


def _start_controller(stack, config_path: Path, run_dir: Path, interval: float, stopping: threading.Event):
    """The ramp controller in a background thread, reading Prometheus (or the router) and writing `config_path`."""
    from experiments.controller import Controller  # noqa: PLC0415
    from experiments.sources import make_source  # noqa: PLC0415
    from experiments.store import Store  # noqa: PLC0415
    from experiments.weights import FileWeightStore  # noqa: PLC0415

    source = make_source(prometheus=stack.prometheus_url, metrics_urls=[] if stack.prometheus_url else [stack.router_url])
    controller = Controller(source, FileWeightStore(config_path), Store.open(str(run_dir / "audit.db")))

    def report(record) -> None:
        if record.applied:
            print(f"modelramp up: ramp controller applied {record.decision}: {record.reason}", flush=True)

    threading.Thread(target=controller.run, args=(interval, stopping), kwargs={"on_step": report},
                     name="ramp-controller", daemon=True).start()
    return controller
