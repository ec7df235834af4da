"""`modelramp up` and `modelramp demo`: the laptop stack in the foreground, and the whole job on it."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.live.controller import Controller
    from experiments.local.stack import Stack
    from experiments.store import DecisionRecord


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `up` and `demo` to the `modelramp` parser."""
    u = sub.add_parser("up", help="the whole local stack: model server, legacy system and router, in the foreground",
                       description="Start the model server, the legacy system and the router on the ports of docs/architecture.md; Ctrl-C stops all. "
                                   "While it runs, .modelramp/up.json in this folder names the stack, so `modelramp analyze`, `ramp`, "
                                   "`skew` and `versions` run from here need no flags.")
    u.add_argument("--config", type=Path, default=None, help="experiment YAML (default: the example shipped in the package)")
    u.add_argument("--models", type=Path, default=Path("models"), help="directory with the exported models (default models/)")
    u.add_argument("--host", default="127.0.0.1", help="address every process listens on (default 127.0.0.1)")
    u.add_argument("--model-port", type=int, default=8500, help="model server gRPC port (default 8500)")
    u.add_argument("--model-rest-port", type=int, default=8501, help="model server REST port (default 8501)")
    u.add_argument("--legacy-port", type=int, default=8081, help="legacy system port (default 8081)")
    u.add_argument("--router-port", type=int, default=8080, help="router HTTP port (default 8080)")
    u.add_argument("--router-grpc-port", type=int, default=8090, help="router gRPC port (default 8090)")
    u.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each process to be ready (default 180)")
    u.add_argument("--prometheus-port", type=int, default=9090, help="Prometheus port, when its binary is on the PATH (default 9090)")
    u.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus even if it is installed")
    u.add_argument("--ramp-interval", type=float, default=0.0,
                   help="run the ramp controller every S seconds against the local stack (default 0: off)")
    u.set_defaults(handler=run_up)
    _add_demo(sub)


def run_up(args: argparse.Namespace) -> int:
    """`modelramp up`: the local stack in the foreground until Ctrl-C, SIGTERM or a child exits."""
    from experiments.config import EXAMPLE_CONFIG, dump_config, load_config
    from experiments.local.stack import Ports, start_stack, with_local_backends
    from experiments.local.up_state import remove_state
    from router.ports import require_free
    from serving.tfserving.errors import FailedPrecondition

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
    local_config.write_text(dump_config(with_local_backends(config, args.host, ports)))
    stopping = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = None
    try:
        stack = start_stack(args.models, model_name, local_config, run_dir, host=args.host, ports=ports,
                            with_prometheus=not args.no_prometheus, timeout=args.timeout, log_to_files=False,
                            stopping=stopping)
        controller = _start_controller(stack, local_config, run_dir, args.ramp_interval, stopping) if args.ramp_interval else None
        state_note = _record_state(stack, config.name, local_config, args.models, model_name)
        host = args.host
        ramp = f"controller every {args.ramp_interval:g}s, audit log {run_dir / 'audit.db'}" if controller else "off (--ramp-interval S turns it on)"
        print(f"""
modelramp is up (experiment {config.name!r}, weights {config.weights}); Ctrl-C stops everything.
  router HTTP    {stack.router_url}/v1/models/{config.model_name}:predict   (docs: {stack.router_url}/docs)
  router gRPC    {host}:{ports.router_grpc}
  metrics        {stack.router_url}/metrics
  model server   gRPC {stack.model_target}, REST http://{host}:{ports.model_rest}
  legacy system  {stack.legacy_url}
  Prometheus     {stack.prometheus_url or "not running (no prometheus binary on the PATH, or --no-prometheus)"}
  ramp           {ramp}
  experiment     {local_config} (watched; weights API: PUT {stack.router_url}/v1/experiments/{config.name}/weights
                 with  Authorization: Bearer {stack.weights_token})
  this folder    {state_note}
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
        remove_state(os.getpid())
        if stack is not None:
            stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _record_state(stack: Stack, experiment: str, config_path: Path, models: Path, model_name: str) -> str:
    """Write `.modelramp/up.json` for the commands run from this folder; the banner's line about it."""
    from experiments.local.stack import baseline_path
    from experiments.local.up_state import UpState, read_state, write_state

    baseline = baseline_path(models, model_name, config_path)
    state = UpState(pid=os.getpid(), experiment=experiment, router_url=stack.router_url,
                    router_grpc=f"{stack.host}:{stack.ports.router_grpc}", prometheus_url=stack.prometheus_url,
                    config=str(config_path.resolve()), baseline=str(baseline) if baseline else None,
                    db=str((stack.run_dir / "audit.db").resolve()), models=str(models.resolve()),
                    outcome_ledger=stack.outcome_ledger, run_dir=str(stack.run_dir.resolve()))
    previous, _ = read_state()
    try:
        path = write_state(state)
    except OSError as err:  # a read-only folder: the stack still runs, the commands need their flags
        return f"cannot write the state file ({err}): analyze, ramp, skew and versions need their flags"
    if previous is not None and previous.pid != state.pid:
        print(f"modelramp up: {path} named another running `modelramp up` (pid {previous.pid}); commands here now use this one",
              file=sys.stderr)
    return (f"{path} (removed on exit): modelramp analyze, ramp, skew and versions run from this folder use this stack "
            "without flags")


def _start_controller(stack: Stack, config_path: Path, run_dir: Path, interval: float, stopping: threading.Event) -> Controller:
    """The ramp controller in a background thread, reading Prometheus (or the router) and writing `config_path`."""
    from experiments.live.controller import Controller
    from experiments.live.report import headline
    from experiments.live.sources import make_source
    from experiments.live.weights import FileWeightStore
    from experiments.store import Store

    source = make_source(prometheus=stack.prometheus_url, metrics_urls=[] if stack.prometheus_url else [stack.router_url])
    controller = Controller(source, FileWeightStore(config_path), Store.open(str(run_dir / "audit.db")))

    def report(record: DecisionRecord) -> None:
        if record.applied:
            print(f"modelramp up: ramp controller applied {headline(record.decision, record.reason)}", flush=True)

    threading.Thread(target=controller.run, args=(interval, stopping), kwargs={"on_step": report},
                     name="ramp-controller", daemon=True).start()
    return controller


# Written out rather than imported: the demo module loads pandas and the stack, which `modelramp --help`
# should not (tests/experiments/local/test_demo_config.py keeps the two the same).
STAGE_SAMPLES_DEFAULT = "600,1500,2400,200,200"


def _stage_samples(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected five whole numbers separated by commas, got {text!r}") from None
    if len(values) != 5 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected five positive minimums (stages 1,5,20,50,100%), got {text!r}")
    return values


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="the whole job locally: gate, 1%% experiment, ramp-up or rollback, report",
                       description="Start every process locally, drive simulated users, ramp or roll back, write a report.")
    p.add_argument("--models", type=Path, default=Path("models"), help="exported models (trained here if missing; default models/)")
    p.add_argument("--candidate", type=int, default=2, choices=[1, 2],
                   help="model version under test: 2 is better than the legacy rule, 1 is worse (default 2)")
    p.add_argument("--inject-fault", action="store_true", help="kill the model server once the model gets 5%% of traffic")
    p.add_argument("--rate", type=float, default=300.0, help="client requests per second (default 300)")
    p.add_argument("--duration", type=float, default=600.0, help="time limit in seconds for the live part (default 600)")
    p.add_argument("--stage-seconds", type=float, default=10.0, help="minimum seconds per ramp stage (default 10)")
    p.add_argument("--stage-samples", type=_stage_samples, default=STAGE_SAMPLES_DEFAULT, metavar="N,N,N,N,N",
                   help=f"minimum model-arm exposures of the stages 1,5,20,50,100%% (default {STAGE_SAMPLES_DEFAULT})")
    p.add_argument("--out", type=Path, default=None, help="run folder for report, history and audit log (default reports/demo-<candidate>)")
    p.add_argument("--no-prometheus", action="store_true", help="read the router's /metrics even if prometheus is installed")
    p.add_argument("--port-offset", type=int, default=0, help="add this to every port of docs/architecture.md (to run beside `modelramp up`)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated users and the assignment salt")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from experiments.local.demo import DemoSettings, run_demo
    from experiments.local.stack import Ports

    base = Ports()
    ports = Ports(**{k: v + args.port_offset for k, v in vars(base).items()})
    suffix = f"{args.candidate}{'-fault' if args.inject_fault else ''}"
    settings = DemoSettings(models=args.models, out=args.out or Path("reports") / f"demo-{suffix}", candidate=args.candidate,
                            inject_fault=args.inject_fault, rate=args.rate, max_seconds=args.duration,
                            stage_seconds=args.stage_seconds, stage_samples=args.stage_samples, seed=args.seed,
                            ports=ports, with_prometheus=not args.no_prometheus)
    summary = run_demo(settings)
    decision = summary.get("final_decision")
    clients = summary.get("clients", {})
    print(f"\nDemo finished: {decision} (candidate version {args.candidate}{', fault injected' if args.inject_fault else ''}); "
          f"client requests {clients.get('requests', 0)}, client errors {clients.get('errors', 0)}.")
    for name, path in (("report", summary.get("report")), ("history", settings.out / "history.json"),
                       ("audit log", settings.out / "audit_log.json"), ("summary", settings.out / "summary.json"),
                       ("process logs", settings.out / "logs")):
        if path:
            print(f"  {name:<13} {path}")
    return 0 if decision in ("ship", "rollback") else 1
