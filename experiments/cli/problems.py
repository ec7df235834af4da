"""`modelramp problems` and `modelramp evaluate`: the problem patterns database ("Machine Learning in Real Life, part 2")."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_PLOTS = "reports/problems"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", help="problems database = the audit database: SQLite path or "
                                                    "SQLAlchemy URL (default: modelramp.db)")
    common.add_argument("--model-name", default="churn", metavar="NAME", help="the model the problems belong to (default: churn)")

    p = sub.add_parser("problems", help="the database of known problems and their patterns (add, list, show, import)",
                       description="Known problems of the model, each with 10 to 15 patterns (inputs with the answer "
                                   "the model should give), re-run for every version by `modelramp evaluate`.")
    ps = p.add_subparsers(dest="problems_command", metavar="ACTION", required=True)

    add = ps.add_parser("add", parents=[common], help="create a problem, or add one hand-written pattern to it",
                        description="Create a problem. With --pattern, add one pattern to it (creating the problem "
                                    "if needed). --regression makes it a canary test of `modelramp gate`.")
    add.add_argument("name", help="the problem's name, e.g. 'intl-plan churners missed'")
    add.add_argument("--description", help="what users see when the model gets it wrong")
    add.add_argument("--regression", action=argparse.BooleanOptionalAction, default=None,
                     help="a regression (canary) test: a candidate worse on it than the version it replaces fails the gate")
    add.add_argument("--min-accuracy", type=float, metavar="X", help="share of patterns a candidate must get right (0-1)")
    add.add_argument("--pattern", metavar="JSON", help="one input as a JSON object of every feature")
    add.add_argument("--expected", metavar="0|1", help="the answer the model should give for --pattern (1 = churn)")
    add.add_argument("--source", default="handmade", choices=("handmade", "production"), help="where --pattern comes from")
    add.add_argument("--note", default="", help="why this pattern belongs to the problem")
    add.set_defaults(handler=_run_add)

    lst = ps.add_parser("list", parents=[common], help="every problem, its patterns and its latest results")
    lst.add_argument("--json", action="store_true", help="print one JSON document")
    lst.set_defaults(handler=_run_list)

    show = ps.add_parser("show", parents=[common], help="one problem: its patterns and their answers per version",
                         description="One problem's patterns with each version's answer; --flips A B lists the "
                                     "patterns whose answer changed between two versions.")
    show.add_argument("name")
    show.add_argument("--flips", nargs=2, type=int, metavar=("A", "B"), help="patterns fixed or broken from version A to B")
    show.add_argument("--plot", type=Path, metavar="FILE", help="write the pattern x version grid as a PNG")
    show.add_argument("--json", action="store_true", help="print one JSON document")
    show.set_defaults(handler=_run_show)

    imp = ps.add_parser("import", parents=[common], help="add patterns from a CSV or JSON-lines file",
                        description="Import patterns (and create the problems they name). The file is checked whole "
                                    "first: one bad line refuses the import. Importing the same file twice adds nothing.")
    imp.add_argument("file", type=Path, help=".csv (feature columns, expected, problem, source, note) or .jsonl")
    imp.add_argument("--problem", metavar="NAME", help="the problem for lines that name none")
    imp.set_defaults(handler=_run_import)

    ev = sub.add_parser("evaluate", parents=[common], help="run every problem's patterns on a version and all earlier ones",
                        description="Score every pattern of every problem with version N and every earlier version "
                                    "the model server still has; store per-pattern answers and per-problem metrics; "
                                    "print problem x version and write the plots.")
    ev.add_argument("--version", type=int, required=True, metavar="N", help="the candidate version")
    ev.add_argument("--target", metavar="HOST:PORT", help="model server gRPC address (default 127.0.0.1:8500)")
    ev.add_argument("--start-server", action="store_true", help="serve every version in MODELS for this run instead of --target")
    ev.add_argument("--models", default="models", metavar="DIR", help="model base folder for --start-server (default: models)")
    ev.add_argument("--plots", type=Path, default=Path(DEFAULT_PLOTS), metavar="DIR",
                    help=f"where the plots go (default: {DEFAULT_PLOTS})")
    ev.add_argument("--json", action="store_true", help="print one JSON document")
    ev.set_defaults(handler=_run_evaluate)


def _store(args: argparse.Namespace):
    from experiments.store import DEFAULT_DB, Store, StoreError

    try:
        return Store.open(args.db or DEFAULT_DB)
    except StoreError as err:  # a RuntimeError, which the CLI would otherwise show as a traceback
        raise ValueError(str(err)) from None


def _print_advice(store, problem) -> None:
    """Seed 003's advice on a problem's patterns, if it has any (too few, too many, one kind only)."""
    from experiments.quality import problems as db
    advice = db.pattern_advice(db.problem_patterns(store, problem))
    if advice:
        print(f"note: {problem.name}: {advice}")


def _run_add(args: argparse.Namespace) -> int:
    from experiments.quality import problems as db
    from experiments.quality.problem_import import check_instance, parse_expected

    if (args.pattern is None) != (args.expected is None):
        raise ValueError("--pattern and --expected go together")
    new = None
    if args.pattern is not None:
        try:
            instance = json.loads(args.pattern)
        except json.JSONDecodeError as err:
            raise ValueError(f"--pattern is not JSON: {err.msg}") from None
        new = db.NewPattern(check_instance(instance, "--pattern"), parse_expected(args.expected, "--expected"),
                            args.source, args.note)
    store = _store(args)
    try:
        problem = db.find_problem(store, args.model_name, args.name)
        if problem is None:
            problem = db.add_problem(store, args.model_name, args.name, args.description or "",
                                     regression=bool(args.regression), min_accuracy=args.min_accuracy)
            print(f"created problem {problem.name!r}" + (" (regression test)" if problem.regression else ""))
        elif new is None and args.description is None and args.regression is None and args.min_accuracy is None:
            raise ValueError(f"problem {args.name!r} already exists; give --pattern to add to it, or change it with "
                             "--description / --regression / --min-accuracy")
        else:
            problem = db.update_problem(store, problem, description=args.description, regression=args.regression,
                                        min_accuracy=args.min_accuracy)
        if new is not None:
            added, _ = db.add_patterns(store, problem, [new])
            print(f"added pattern to {problem.name!r}" if added else f"{problem.name!r} already has this pattern")
        _print_advice(store, problem)
    finally:
        store.close()
    return 0


def _run_import(args: argparse.Namespace) -> int:
    from experiments.quality import problems as db
    from experiments.quality.problem_import import read_patterns

    rows = read_patterns(args.file, args.problem)
    by_problem: dict[str, list] = {}
    for name, pattern in rows:
        by_problem.setdefault(name, []).append(pattern)
    store = _store(args)
    try:
        for name, new in by_problem.items():
            problem = db.find_problem(store, args.model_name, name)
            if problem is None:
                problem = db.add_problem(store, args.model_name, name)
                print(f"created problem {name!r}")
            added, present = db.add_patterns(store, problem, new)
            print(f"{name}: {added} pattern(s) added" + (f", {present} already present" if present else ""))
            _print_advice(store, problem)
    finally:
        store.close()
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from experiments.cli.problem_views import list_document, print_list

    store = _store(args)
    try:
        doc = list_document(store, args.model_name)
    finally:
        store.close()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_list(doc)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from experiments.cli.problem_views import print_show, show_document, write_grid

    store = _store(args)
    try:
        doc = show_document(store, args.model_name, args.name, args.flips)
    finally:
        store.close()
    if args.plot:
        doc["plot"] = str(write_grid(doc, args.plot))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_show(doc)
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from experiments.cli.gate import given, started_server
    from experiments.cli.problem_views import (
        evaluation_document,
        print_evaluation,
        write_plots,
    )
    from experiments.quality.problem_eval import evaluate, versions_to_evaluate
    from serving.tfserving.grpc_client import PredictionClient

    if args.start_server and args.target:
        raise ValueError("give --target HOST:PORT or --start-server, not both")
    store = _store(args)
    try:
        server = started_server(Path(args.models), args.model_name, None, all_versions=True) if args.start_server \
            else given(args.target or "127.0.0.1:8500")
        with server as target, PredictionClient(target, timeout=10.0) as client:
            evaluation = evaluate(store, client, args.model_name, args.version,
                                  versions_to_evaluate(client, args.model_name, args.version))
        doc = evaluation_document(store, evaluation)
        doc["plots"] = [str(p) for p in write_plots(store, evaluation, args.plots)]
    finally:
        store.close()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print_evaluation(doc)
    return 0
