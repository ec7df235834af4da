"""Subcommands owned by the experiments package: gate, analyze, ramp, skew, demo, and the model-quality ones."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from experiments import live_commands, problem_commands, quality_commands, scorecard

if TYPE_CHECKING:
    from experiments.config import ExperimentConfig
    from experiments.history import History


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
    live_commands.add_live_analyze_options(_add_analyze(sub), _run_analyze)
    live_commands.add_ramp(sub)
    _add_skew(sub)
    _add_gate(sub)
    _add_demo(sub)
    problem_commands.register(sub)
    quality_commands.register(sub)
    scorecard.register(sub)


# --- analyze ------------------------------------------------------------------------------------


def _add_analyze(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `analyze` parser; returned so live sources and other options can be added to it."""
    p = sub.add_parser(
        "analyze",
        help="statistics and a decision (hold/ramp/ship/rollback/blocked) for one experiment",
        description="Analyse an experiment's per-arm counts and decide hold, ramp, ship, rollback or blocked.",
    )
    p.add_argument("--history", type=Path, metavar="FILE", help="replay a recorded history (JSON, see ARCHITECTURE.md)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML (default: the example config shipped in the package)")
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON document")
    p.add_argument("--report", type=Path, metavar="DIR", help="also write DIR/report.md with PNG plots")
    p.set_defaults(handler=_run_analyze)
    return p


def _analyze_config(args: argparse.Namespace) -> tuple["ExperimentConfig", bool]:
    """The experiment config and whether the user chose it (a chosen one must match the history)."""
    from experiments.config import EXAMPLE_CONFIG, Arm, ExperimentConfig, LegacyHttpBackend, TfServingGrpcBackend, load_config

    if args.config is not None:
        return load_config(args.config), True
    if EXAMPLE_CONFIG.exists():
        return load_config(EXAMPLE_CONFIG), False
    # The documented defaults (1/5/20/50/100% stages, MDE 3 pp, alpha 0.05, margin 1 pp).
    return ExperimentConfig(
        name="default", salt="default", model_name="model",
        arms={"legacy": Arm(weight=0.99, backend=LegacyHttpBackend()),
              "model": Arm(weight=0.01, backend=TfServingGrpcBackend(model_name="model"))},
    ), False


def _analyze_history(args: argparse.Namespace) -> "History":
    """The history to analyse; live sources (Prometheus, routers' /metrics) plug in here."""
    from experiments.history import load_history

    if live_commands.is_live(args):
        if args.history is not None:
            raise ValueError("give --history FILE or a live source, not both")
        return live_commands.live_history(args, _analyze_config(args)[0])
    if args.history is None:
        raise ValueError("no data source: give --history FILE, --prometheus URL or --metrics-url URL")
    # A reset is analysed (blocked, with the reason), not refused as a bad file.
    return load_history(args.history, allow_resets=True)


def _run_analyze(args: argparse.Namespace) -> int:
    import json

    from experiments.analysis import analyze
    from experiments.report import print_table, write_report

    config, chosen = _analyze_config(args)
    history = _analyze_history(args)
    if chosen and history.experiment != config.name:
        raise ValueError(f"the history is for experiment {history.experiment!r} but {args.config} configures {config.name!r}")
    result = analyze(history, config)
    if args.report is not None:
        path = write_report(history, config, args.report)
        if not args.json:
            print(f"report written to {path}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print_table(result)
    return 0


# --- gate ---------------------------------------------------------------------------------------


def _add_gate(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `gate` parser: the offline launch gate on the pristine test split (experiments/gate.py)."""
    p = sub.add_parser(
        "gate", help="offline launch gate: one model version, once, on the pristine test split",
        description="Score the pristine test split through the model server (gRPC), test accuracy against the "
                    "config's target (one-sided z-test), show precision/recall/F1/confusion overall and per slice "
                    "beside the legacy rule, and record the run. A test set is used once; a second run on it is "
                    "refused. Regression problems (`modelramp problems`) are canary tests run first: a candidate "
                    "worse on one than the version it replaces fails without using the test set. "
                    "Exit 0 PASS, 1 FAIL, 2 not run.")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML: gate target, alpha, slices, and the model arm as default candidate "
                        "(default: the example config shipped in the package)")
    p.add_argument("--models", default="models", metavar="DIR", help="model base folder (default: models)")
    p.add_argument("--data", metavar="DIR", help="data folder with manifest.json and pristine/test.csv (default: MODELS/data)")
    p.add_argument("--target", metavar="HOST:PORT",
                   help="model server gRPC address (default: the config's model arm, else 127.0.0.1:8500)")
    p.add_argument("--model-name", metavar="NAME", help="model name on the server (default: the config's model arm, else churn)")
    p.add_argument("--version", type=int, metavar="N", help="model version (default: the config's model arm, else latest)")
    p.add_argument("--version-label", metavar="LABEL", help="model version label instead of a number")
    p.add_argument("--db", metavar="URL", help="audit database: SQLite path or SQLAlchemy URL (default: modelramp.db)")
    p.add_argument("--allow-reuse", action="store_true",
                   help="evaluate a test set that was used before; the run is recorded as NOT honest")
    p.add_argument("--start-server", action="store_true",
                   help="start `modelramp serve-model` on MODELS for this run (on a free port) instead of --target")
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(handler=_run_gate)
    return p


def _run_gate(args: argparse.Namespace) -> int:
    from experiments.gate_cli import run

    return run(args)


# --- skew ---------------------------------------------------------------------------------------


def _add_skew(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The `skew` parser: live feature sketches judged against the training baseline (experiments.skew)."""
    p = sub.add_parser("skew", help="drift/skew report of live features against the training baseline",
                       description="Sum the routers' live feature sketches (or ask Prometheus) and judge each feature "
                                   "against the model's training baseline with the config's skew thresholds.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--metrics-url", metavar="URL", action="append", default=[],
                     help="scrape a router's /metrics (repeat for each replica; default http://127.0.0.1:8080)")
    src.add_argument("--prometheus", metavar="URL", help="read the sketches from Prometheus's HTTP API at URL")
    p.add_argument("--window", metavar="DURATION", help="with --prometheus: only the last DURATION (PromQL, e.g. 1h)")
    p.add_argument("--baseline", metavar="PATH", help="baseline.json of the model version (default: the config's skew.baseline)")
    p.add_argument("--config", type=Path, metavar="FILE", help="experiment YAML with the skew: section (default: the example config)")
    p.add_argument("--model", metavar="NAME", help="model label of the metrics (default: the baseline's model)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.set_defaults(handler=_run_skew)
    return p


def _run_skew(args: argparse.Namespace) -> int:
    from experiments.skew import run

    return run(args)


# --- demo ---------------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole job locally: gate, 1%% experiment, ramp-up or rollback, report",
                       description="Start every process locally, drive simulated users, ramp or roll back, write a report.")
    p.add_argument("--models", type=Path, default=Path("models"), help="exported models (trained here if missing; default models/)")
    p.add_argument("--candidate", type=int, default=2, choices=[1, 2],
                   help="model version under test: 2 is better than the legacy rule, 1 is worse (default 2)")
    p.add_argument("--inject-fault", action="store_true", help="kill the model server once the model gets 5%% of traffic")
    p.add_argument("--rate", type=float, default=300.0, help="client requests per second (default 300)")
    p.add_argument("--duration", type=float, default=600.0, help="time limit in seconds for the live part (default 600)")
    p.add_argument("--stage-seconds", type=float, default=10.0, help="minimum seconds per ramp stage (default 10)")
    p.add_argument("--stage-samples", type=int, default=100, help="minimum model-arm exposures per early stage (default 100)")
    p.add_argument("--out", type=Path, default=None, help="run folder for report, history and audit log (default reports/demo-<candidate>)")
    p.add_argument("--no-prometheus", action="store_true", help="read the router's /metrics even if prometheus is installed")
    p.add_argument("--port-offset", type=int, default=0, help="add this to every ARCHITECTURE.md port (to run beside `modelramp up`)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated users and the assignment salt")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from experiments.demo import DemoSettings, run_demo  # noqa: PLC0415
    from experiments.local_stack import Ports  # noqa: PLC0415

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
