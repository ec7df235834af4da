"""Subcommands owned by the experiments package: gate, analyze, ramp, skew, demo."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from experiments import live_commands

if TYPE_CHECKING:
    from experiments.config import ExperimentConfig
    from experiments.history import History


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `modelramp` parser."""
    live_commands.add_live_analyze_options(_add_analyze(sub), _run_analyze)
    live_commands.add_ramp(sub)


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
