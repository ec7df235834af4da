"""`modelramp gate`'s front: options resolved against the config, the rich table or JSON, --start-server.

Exit codes: 0 PASS, 1 FAIL, 2 the gate did not run (refused reuse, modified test set, no model
server, bad config or database), with one line on stderr saying why.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "127.0.0.1:8500"
PREDICT_TIMEOUT_S = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `gate`, the offline launch gate on the pristine test split (experiments/quality/gate.py)."""
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
    p.set_defaults(handler=run)


def _candidate(args: argparse.Namespace, config) -> tuple[str, str, int | None, str | None]:
    """Model name, target, version and label: flags first, then the config's model arm (the candidate)."""
    backend = config.arms["model"].backend if config is not None else None
    grpc = backend if backend is not None and backend.kind == "tfserving_grpc" else None
    name = args.model_name or (grpc.model_name if grpc else None) or "churn"
    target = args.target or (grpc.target if grpc else None) or DEFAULT_TARGET
    if args.version is not None or args.version_label is not None:
        return name, target, args.version, args.version_label
    return name, target, grpc.version if grpc else None, grpc.version_label if grpc else None


@contextmanager
def started_server(models_dir: Path, model_name: str, version: int | None, *, all_versions: bool = False) -> Iterator[str]:
    """`modelramp serve-model` on a free loopback port for one run; yields its gRPC target.

    It serves `version` (default the latest), or with `all_versions` every version in the folder.
    """
    from experiments.local.stack import model_server
    from experiments.quality.gate import GateError
    from serving.tfserving.errors import FailedPrecondition

    versions: list[int] | str = "all" if all_versions else [version] if version is not None else "latest"
    with tempfile.TemporaryDirectory(prefix="modelramp-gate-") as tmp, ExitStack() as running:
        try:
            _, target, _ = running.enter_context(model_server(Path(models_dir), model_name, Path(tmp), versions=versions))
        except FailedPrecondition as err:
            raise GateError(f"--start-server: {err}") from None
        yield target


def run(args: argparse.Namespace) -> int:
    from experiments.config import EXAMPLE_CONFIG, GateSpec, load_config
    from experiments.quality.gate import GateError, check_unused, load_test_set, run_gate
    from experiments.quality.problem_eval import canary_check, has_regression_problems
    from experiments.quality.slicing import check_slices
    from experiments.store import DEFAULT_DB, Store, StoreError
    from serving.tfserving.grpc_client import PredictionClient

    if args.version is not None and args.version_label is not None:
        raise ValueError("give --version N or --version-label L, not both")
    config_path = args.config or (EXAMPLE_CONFIG if EXAMPLE_CONFIG.exists() else None)
    config = load_config(config_path) if config_path is not None else None
    gate = config.gate if config is not None else GateSpec()
    name, target, version, label = _candidate(args, config)
    check_slices(gate.slices)  # a misspelt slice must fail before the test set is spent, not after
    models = Path(args.models)
    test_set = load_test_set(Path(args.data) if args.data else models / "data")
    if args.start_server and label is not None:
        raise ValueError("--start-server serves version numbers only; give --version N instead of a label")
    if args.start_server and args.target:
        raise ValueError("give --target HOST:PORT or --start-server, not both")
    try:
        store = Store.open(args.db or DEFAULT_DB)
        try:
            # Refuse a used test set before spending half a minute starting a server; run_gate checks again.
            check_unused(store, test_set, args.allow_reuse)
            # Regression problems are compared with the version the candidate replaces: serve them all.
            canaries = has_regression_problems(store, name)
            server = started_server(models, name, version, all_versions=canaries) if args.start_server else given(target)
            with server as target, PredictionClient(target, timeout=PREDICT_TIMEOUT_S) as client:
                # Canary tests first: a candidate that fails one does not spend the pristine test set.
                canary = canary_check(store, client, name, version=version, version_label=label) if canaries else None
                if canary is not None and not canary["passed"]:
                    result, run_ = _canary_failure(name, target, canary), None
                else:
                    result, run_ = run_gate(store, client, test_set, gate, name, version=version, version_label=label,
                                            allow_reuse=args.allow_reuse, models_dir=models)
                    result["canary"] = canary
        finally:
            store.close()
    except StoreError as err:  # a RuntimeError, which the CLI would otherwise show as a traceback
        raise GateError(str(err)) from None
    if run_ is None:
        if args.json:
            print(json.dumps(result, indent=2, allow_nan=False))
        else:
            print_canary_failure(result)
        return 1
    if not result["honest"]:
        print(f"WARNING: --allow-reuse: this test set was already used by {'; '.join(result['earlier_uses'])}. "
              f"Gate run #{run_.id} is recorded as NOT honest: its accuracy estimate is optimistic.", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print_table(result, args.db or DEFAULT_DB)
    return 0 if result["passed"] else 1


def _canary_failure(name: str, target: str, canary: dict[str, Any]) -> dict[str, Any]:
    return {"verdict": "FAIL", "passed": False, "model_name": name, "model_version": canary["candidate_version"],
            "server": target, "reason": f"canary tests failed: {canary['reason']}; the pristine test set was not used",
            "canary": canary, "test_set_used": False}


def print_canary_failure(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    canary = result["canary"]
    ref = canary["reference_version"]
    table = Table(title=f"gate canary tests: {result['model_name']} version {result['model_version']} on regression problems")
    for col in ("problem", f"v{result['model_version']} (candidate)", f"v{ref}" if ref is not None else "reference", "", "why"):
        table.add_column(col, overflow="fold")
    for row in canary["problems"]:
        def cell(m):
            return "-" if m is None else f"{m['correct']}/{m['patterns']}"
        table.add_row(row["problem"], cell(row["candidate"]), cell(row["reference"]),
                      "[green]ok[/]" if row["passed"] else "[red]worse[/]", row["why"])
    console.print(table)
    console.print(f"[bold red]FAIL[/]: {result['reason']}", soft_wrap=True)


@contextmanager
def given(target: str) -> Iterator[str]:
    yield target


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _metric_rows(model: dict, base: dict) -> list[tuple[str, str, str]]:
    def ci(r: dict) -> str:
        return "n/a" if "accuracy_ci95" not in r else f"{r['accuracy_ci95'][0]:.4f} to {r['accuracy_ci95'][1]:.4f}"

    def confusion(r: dict) -> str:
        return "{tp}/{fp}/{tn}/{fn}".format(**r["confusion"])

    rows = [("accuracy", f"{_num(model['accuracy'])} ({model['correct']}/{model['n']})",
             f"{_num(base['accuracy'])} ({base['correct']}/{base['n']})"),
            ("95% CI (Wilson)", ci(model), ci(base))]
    rows += [(m, _num(model[m]), _num(base[m])) for m in ("precision", "recall", "f1", "roc_auc")]
    rows.append(("confusion tp/fp/tn/fn", confusion(model), confusion(base)))
    return rows


def print_table(result: dict, db: str) -> None:
    """The verdict, overall metrics beside the legacy rule's, and one row per slice."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    t = result["test"]
    table = Table(title=f"gate: {result['model_name']} version {result['model_version']} on {result['test_set']['rows']} "
                        f"pristine test rows", show_lines=False)
    table.add_column("metric", style="bold")
    table.add_column(f"model v{result['model_version']}", overflow="fold")
    table.add_column("legacy rule (baseline)", overflow="fold")
    for row in _metric_rows(result["model"], result["baseline"]):
        table.add_row(*row)
    table.add_row("target accuracy", f"{t['target_accuracy']:g} (alpha {t['alpha']:g})", "")
    table.add_row("z-test", f"z = {t['z']:.3f}, one-sided p = {t['p_value']:.3g}", "")
    console.print(table)
    if result["slices"]:
        slices = Table(title="per slice")
        for col in ("slice", "rows", "", "accuracy", "precision", "recall", "F1"):
            slices.add_column(col, overflow="fold")
        for s in result["slices"]:
            for label, r in (("model", s["model"]), ("legacy", s["baseline"])):
                first = label == "model"
                # The rule goes on the legacy row, so each slice takes two lines, not four.
                slices.add_row(s["name"] if first else f"[dim]{s['rule']}[/]", str(s["n"]) if first else "", label,
                               *(_num(r[k], 3) for k in ("accuracy", "precision", "recall", "f1")),
                               end_section=not first)
        console.print(slices)
    colour = "green" if result["passed"] else "red"
    console.print(f"[bold {colour}]{result['verdict']}[/]: {result['reason']}", soft_wrap=True)
    honesty = "" if result["honest"] else " [bold red](NOT honest: test set reused)[/]"
    console.print(f"recorded as gate run #{result['gate_run_id']} in {db} (test set {result['test_set']['fingerprint']})"
                  f"{honesty}", soft_wrap=True, highlight=False)
