"""`modelramp slices` and `modelramp versions`: sliced error analysis and experiment tracking.

Only the parsers live here; the handlers import their modules (pandas, gRPC, matplotlib) when run,
so `modelramp --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `slices` and `versions` to the `modelramp` parser."""
    _add_slices(sub)
    _add_versions(sub)


def _add_slices(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "slices", help="sliced error analysis: every model version beside the legacy rule, per slice, ranked",
        description="Score a data split through the model server with every version it serves (or --versions), "
                    "compute accuracy, precision, recall, F1, support and the confusion matrix per slice of the "
                    "config (gate.slices) beside the legacy rule, and rank the slices by potential gain: the gap "
                    "to the legacy rule times the slice's share of rows (the talk 'ML in Production, part 2'). Never on the pristine test "
                    "split, which the launch gate uses once.")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML with gate.slices (default: the example config shipped in the package)")
    p.add_argument("--models", default="models", metavar="DIR", help="model base folder (default: models)")
    p.add_argument("--data", metavar="DIR", help="data folder with the splits (default: MODELS/data)")
    p.add_argument("--split", default="validation", metavar="NAME",
                   help="validation (default), live or train; test is refused (it belongs to the gate)")
    p.add_argument("--target", metavar="HOST:PORT",
                   help="model server gRPC address (default: the config's model arm, else 127.0.0.1:8500)")
    p.add_argument("--start-server", action="store_true",
                   help="start `modelramp serve-model` with every version under MODELS for this run instead of --target")
    p.add_argument("--model-name", metavar="NAME", help="model name on the server (default: the config's model arm, else churn)")
    p.add_argument("--versions", metavar="N,M", help="versions to analyse (default: every version the server has available)")
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON document")
    p.add_argument("--plot", metavar="FILE", help="also write a PNG: accuracy per slice and potential gain per slice")
    p.set_defaults(handler=_run_slices)
    return p


def _run_slices(args: argparse.Namespace) -> int:
    from experiments.cli.slices import run

    return run(args)


def _add_versions(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "versions", help="experiment tracking: what produced each model version and how it did (gate, live)",
        description="One record per model version under --models: code version (git commit), data fingerprints, "
                    "hyperparameters, seed, training and validation metrics from the version's modelramp/ folder, "
                    "and from the audit database its gate runs and the live experiments that had it as candidate.")
    p.add_argument("--models", metavar="DIR",
                   help="model base folder (default: the running `modelramp up`'s when --db is not given, else models)")
    p.add_argument("--model-name", metavar="NAME", help="only this model (default: every model folder under MODELS)")
    p.add_argument("--version", type=int, metavar="N", help="only version N, shown in full")
    p.add_argument("--db", metavar="URL", help="audit database: SQLite path or SQLAlchemy URL (default: the running "
                                               "`modelramp up`'s, else modelramp.db)")
    p.add_argument("--json", action="store_true", help="print the records as one JSON document")
    p.set_defaults(handler=_run_versions)
    return p


def _run_versions(args: argparse.Namespace) -> int:
    from experiments.cli.versions import run

    return run(args)
