"""`modelramp analyze` (a history or live sources, once or `--serve`) and `modelramp ramp` (the controller).

Errors of the store, the weight store and the sources become one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.config import ExperimentConfig
    from experiments.live.decision_metrics import DecisionMetrics
    from experiments.live.history import History
    from experiments.live.report import Event
    from experiments.live.sources import Source
    from experiments.store import DecisionRecord


def _fail(command: str, err: Exception | str) -> int:
    print(f"modelramp {command}: error: {err}", file=sys.stderr)
    return 2


def _source_options(p: argparse.ArgumentParser, default: str) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prometheus", metavar="URL", help="read counters from Prometheus's HTTP API at URL")
    src.add_argument("--metrics-url", metavar="URL", action="append", default=[],
                     help=f"scrape a router's /metrics directly (repeat for each replica); without either: {default}")
    p.add_argument("--outcome-ledger", metavar="URL", default=None,
                   help="read outcomes exactly from the routers' outcome ledger (sqlite:///file.db or postgresql://...), "
                        "exposures from the source above, and say when the two disagree")


def _make_source(args: argparse.Namespace) -> Source:
    """The live source of the options: Prometheus or routers' /metrics, with outcomes from the ledger when given."""
    from experiments.live.sources import make_source

    source = make_source(args.prometheus, args.metrics_url)
    if getattr(args, "outcome_ledger", None):
        from experiments.live.sources.ledger import LedgerSource

        try:
            return LedgerSource(source, args.outcome_ledger)
        except BaseException:
            source.close()
            raise
    return source


#: What the live commands read when no source is given, as their help says it.
UP_SOURCE = "the `modelramp up` running from this folder: its Prometheus, else its router"


def _from_up(command: str, args: argparse.Namespace, **fill: str) -> str | None:
    """Take what the running `up` has for each option in `fill` still unset (option -> its field); else why none runs.

    The user sees on stderr what was taken, so a table read from an unexpected stack is explained;
    the reason comes back for the error that names the flags when the option stays unset.
    """
    from experiments.local.up_state import announce, read_state

    state, note = read_state()
    if state is None:
        return note
    took: dict[str, str] = {}
    for option, attribute in fill.items():
        if option == "source":
            if is_live(args):
                continue
            prometheus = state.live_prometheus()
            if prometheus:
                args.prometheus = prometheus
                took["source"] = f"Prometheus {prometheus}"
            else:
                args.metrics_url = [state.router_url]
                gone = f" (its Prometheus {state.prometheus_url} does not answer)" if state.prometheus_url else ""
                took["source"] = f"the router's /metrics at {state.router_url}{gone}"
            continue
        value = getattr(state, attribute)
        if getattr(args, option, None) or value is None:
            continue
        setattr(args, option, Path(value) if option == "config" else value)
        took[option.replace("_", "-")] = str(value)
    if took:
        announce(command, state, took)
    return None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `analyze` and `ramp` to the `modelramp` parser."""
    add_live_analyze_options(_add_analyze(sub), _run_analyze)
    add_ramp(sub)


# --- analyze ------------------------------------------------------------------------------------


def _add_analyze(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `analyze` parser; returned so live sources and other options can be added to it."""
    p = sub.add_parser(
        "analyze",
        help="statistics and a decision (hold/ramp/ship/rollback/blocked) for one experiment",
        description="Analyse an experiment's per-arm counts and decide hold, ramp, ship, rollback or blocked.",
    )
    p.add_argument("--history", type=Path, metavar="FILE", help="replay a recorded history (JSON, see docs/architecture.md)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML (default: the running `modelramp up`'s, with a live source from it; "
                        "else the example config shipped in the package)")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help=WEIGHTS_HELP)
    p.add_argument("--json", action="store_true", help="print the analysis as one JSON document")
    p.add_argument("--report", type=Path, metavar="DIR", help="also write DIR/report.md with PNG plots")
    p.set_defaults(handler=_run_analyze)
    return p


WEIGHTS_HELP = ("the weights document a router is given as --weights (in Kubernetes the mounted <release>-weights "
                "ConfigMap): it overrides --config's weights while it names that experiment, as the router reads it")


def _config_with_weights(config_path: Path, weights_path: Path | None) -> ExperimentConfig:
    """The experiment in force: `config_path`, with the weights of `weights_path` when it names that experiment."""
    from experiments.live.weights import FileWeightStore, WeightStoreError

    try:
        return FileWeightStore(config_path, weights_path).load()
    except WeightStoreError as err:
        raise ValueError(str(err)) from None


def _analyze_config(args: argparse.Namespace) -> tuple[ExperimentConfig, bool]:
    """The experiment config and whether the user chose it (a chosen one must match the history)."""
    from experiments.config import EXAMPLE_CONFIG, ExperimentConfig, load_config
    from router.config import (
        ArmsSpec,
        LegacyArmSpec,
        LegacyHttpSpec,
        ModelArmSpec,
        TfServingGrpcSpec,
    )

    if args.config is not None:
        return _config_with_weights(args.config, args.weights), True
    if args.weights is not None:
        raise ValueError("--weights FILE goes with --config FILE (the experiment the weights belong to)")
    if EXAMPLE_CONFIG.exists():
        return load_config(EXAMPLE_CONFIG), False
    # The documented defaults (1/5/20/50/100% stages, MDE 3 pp, alpha 0.05, margin 1 pp).
    return ExperimentConfig(
        name="default", salt="default", model_name="model",
        arms=ArmsSpec(legacy=LegacyArmSpec(weight=0.99, backend=LegacyHttpSpec()),
              model=ModelArmSpec(weight=0.01, backend=TfServingGrpcSpec(model_name="model"))),
    ), False


def _analyze_history(args: argparse.Namespace) -> History:
    """The history to analyse; live sources (Prometheus, routers' /metrics) plug in here."""
    from experiments.live.history import load_history

    if is_live(args):
        if args.history is not None:
            raise ValueError("give --history FILE or a live source, not both")
        return live_history(args, _analyze_config(args)[0])
    if args.history is None:
        why = getattr(args, "up_note", None) or "no `modelramp up` runs from this folder"
        raise ValueError("no data source: give --metrics-url URL (a router, e.g. --metrics-url http://127.0.0.1:8080), "
                         f"--prometheus URL or --history FILE; {why}")
    # A reset is analysed (blocked, with the reason), not refused as a bad file.
    return load_history(args.history, allow_resets=True)


def _run_folder_events(history_path: Path | None, experiment: str) -> list[Event]:
    """The fault a demo run injected, when the history is replayed from its run folder (its `summary.json`)."""
    import json

    from experiments.live.report import fault_events

    summary_path = history_path.parent / "summary.json" if history_path is not None else None
    if summary_path is None or not summary_path.is_file():
        return []
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return []  # not a demo's summary: the report is written without events
    ok = isinstance(summary, dict) and summary.get("experiment") == experiment
    return fault_events(summary) if ok else []


def _run_analyze(args: argparse.Namespace) -> int:
    import json

    from experiments.live.analysis import analyze
    from experiments.live.report import print_table, write_report

    config, chosen = _analyze_config(args)
    history = _analyze_history(args)
    if chosen and history.experiment != config.name:
        raise ValueError(f"the history is for experiment {history.experiment!r} but {args.config} configures {config.name!r}")
    result = analyze(history, config)
    if args.report is not None:
        path = write_report(history, config, args.report, _run_folder_events(args.history, history.experiment))
        if not args.json:
            print(f"report written to {path}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        print_table(result)
    return 0


# --- ramp ---------------------------------------------------------------------------------------


def add_ramp(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `ramp` parser: the ramp controller, once or as a loop, and its audit log."""
    p = sub.add_parser("ramp", help="the ramp controller: look, decide, and apply ramp/ship/rollback (once or as a loop)",
                       description="Take a look at the live experiment, analyse it, and write new weights when the "
                                   "decision is ramp, ship or rollback. Every decision is recorded in the audit log.")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML the local router watches (weights are written here; default: the running "
                        "`modelramp up`'s, with its source and audit database)")
    p.add_argument("--configmap", metavar="NAMESPACE/NAME",
                   help="write weights to this ConfigMap (key experiment.yaml) instead of a file")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="with --config: write the weights to this weights document (the router's --weights) "
                        "instead of the experiment file")
    _source_options(p, "with --config FILE, the router at http://127.0.0.1:8080; else " + UP_SOURCE)
    p.add_argument("--db", default=None, metavar="URL",
                   help="audit database: a SQLite path or a SQLAlchemy URL (default: the running `modelramp up`'s "
                        "when --config is not given, else modelramp.db)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one look and decision, then exit (the default)")
    when.add_argument("--interval", type=float, metavar="S", help="loop: one look every S seconds until Ctrl-C")
    p.add_argument("--dry-run", action="store_true", help="decide and record, but write no weights")
    p.add_argument("--log", action="store_true", help="print the experiment's audit log and exit")
    p.add_argument("--json", action="store_true", help="with --log: one JSON document per decision")
    p.add_argument("--who", metavar="NAME", help="who applies (lease holder and audit log; default user@host:pid)")
    export = p.add_mutually_exclusive_group()
    export.add_argument("--pushgateway", metavar="URL",
                        help="after every step, push the modelramp_decision_* gauges to this Prometheus Pushgateway "
                             "(a CronJob's process is gone before the next scrape)")
    export.add_argument("--metrics-textfile", type=Path, metavar="FILE",
                        help="after every step, write the modelramp_decision_* gauges to FILE (*.prom) for "
                             "node_exporter's textfile collector")
    p.set_defaults(handler=run_ramp)
    return p


def _weight_store(args: argparse.Namespace):
    from experiments.live.weights import make_weight_store

    if args.config and args.configmap:
        raise ValueError("give --config FILE or --configmap NAMESPACE/NAME, not both")
    if not args.config and not args.configmap:
        why = getattr(args, "up_note", None) or "no `modelramp up` runs from this folder"
        raise ValueError("the controller needs --config FILE, the experiment file the router watches "
                         f"(`modelramp up` prints it), or --configmap NAMESPACE/NAME; {why}")
    if args.weights is not None and not args.config:
        raise ValueError("--weights FILE goes with --config FILE (a ConfigMap names its weights object itself)")
    return make_weight_store(args.config, args.configmap, dry_run=args.dry_run, weights_path=args.weights)


def run_ramp(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from experiments.live.controller import Controller
    from experiments.live.sources import SourceError
    from experiments.live.weights import WeightStoreError
    from experiments.store import DEFAULT_DB, Store, StoreError

    if args.interval is not None and args.interval <= 0:
        raise ValueError(f"--interval must be positive, got {args.interval:g}")
    if not args.config and not args.configmap:
        args.up_note = _from_up("ramp", args, config="config", source="source", db="db")
    try:
        weights = _weight_store(args)
        store = Store.open(args.db or DEFAULT_DB)
        if args.log:
            return _print_log(store, weights.load().name, args.json)
        with _make_source(args) as source:
            ttl = max(60.0, 3 * (args.interval or 0))
            ctl = Controller(source, weights, store, holder=args.who, lease_ttl_seconds=ttl, publish=_publisher(args))
            if args.interval is None:
                try:
                    _print_decision(ctl.step())
                finally:
                    ctl.release()
            else:
                print(f"ramp controller for {ctl.experiment!r}: a look every {args.interval:g} s via "
                      f"{source.description}, weights in {weights.description}; Ctrl-C stops", flush=True)
                ctl.run(args.interval, on_step=_print_decision)
    except (StoreError, WeightStoreError, SourceError) as err:
        return _fail("ramp", err)
    except SQLAlchemyError as err:  # the database went away mid-run
        return _fail("ramp", f"audit database: {getattr(err, 'orig', None) or err}")
    return 0


def _publisher(args: argparse.Namespace) -> Callable[[DecisionMetrics], None] | None:
    """Where the decision gauges go after each step: a Pushgateway, a textfile, or nowhere (`analyze --serve` serves them)."""
    if args.pushgateway:
        gateway = args.pushgateway
        return lambda metrics: metrics.push(gateway)
    if args.metrics_textfile:
        path = args.metrics_textfile
        if not path.parent.is_dir():
            raise ValueError(f"--metrics-textfile: folder {str(path.parent)!r} does not exist")

        def write(metrics: DecisionMetrics) -> None:
            metrics.write_textfile(path)
        return write
    return None


def _print_decision(record: DecisionRecord) -> None:
    from experiments.live.report import bare_reason

    applied = "applied" if record.applied else "not applied"
    stage = f"{record.stage_percent:g}%" if record.stage_percent is not None else "?"
    print(f"{record.time:%Y-%m-%d %H:%M:%S}Z  stage {stage:>5}  {record.decision:<8} {applied:<11}  "
          f"{bare_reason(record.decision, record.reason)}",
          flush=True)


def _print_log(store, experiment: str, as_json: bool) -> int:
    from experiments.live.report import bare_reason

    records = store.decisions(experiment)
    if as_json:
        for r in records:
            print(json.dumps(r.to_dict(), allow_nan=False))
        return 0
    if not records:
        print(f"no decisions recorded for {experiment!r} yet")
        return 0
    print(f"audit log of {experiment!r}: {len(records)} decision(s)")
    for r in records:
        who = f"by {r.applied_by}"
        weights = f" -> {r.weights_after}" if r.weights_after else ""
        print(f"{r.time:%Y-%m-%d %H:%M:%S}Z  stage {r.stage_percent or 0:>5g}%  {r.decision:<8} "
              f"{'applied' if r.applied else 'not applied'}{weights} {who}\n    {bare_reason(r.decision, r.reason)}")
    return 0


# --- analyze: live sources and --serve ----------------------------------------------------------


def add_live_analyze_options(p: argparse.ArgumentParser, run_analyze: Callable[[argparse.Namespace], int]) -> None:
    """Give `analyze` live sources, `--save-history` and `--serve`; `run_analyze` handles the rest."""
    _source_options(p, UP_SOURCE)
    p.add_argument("--save-history", type=Path, metavar="FILE",
                   help="with a live source: add this look to the history in FILE (created if missing) and "
                        "analyse that history, so repeated runs build a replayable record")
    p.add_argument("--serve", action="store_true",
                   help="serve the analysis over HTTP for Argo Rollouts / Flagger gates (see k8s/progressive-delivery/)")
    p.add_argument("--host", default="127.0.0.1", help="with --serve: listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8088, help="with --serve: port (default 8088)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="with --serve and a live source: keep the history in this audit database (default: the running "
                        "`modelramp up`'s when the source is, else modelramp.db)")
    p.add_argument("--interval", type=float, default=60.0, metavar="S",
                   help="with --serve and a live source: take a look every S seconds (default 60)")

    def handler(args: argparse.Namespace) -> int:
        if args.history is None and not is_live(args):
            # The audit database only serves `--serve`'s recorder; a single look records nothing.
            db = {"db": "db"} if args.serve else {}
            args.up_note = _from_up("analyze", args, source="source", config="config", **db)
        if args.serve:
            return serve(args)
        if args.save_history and not is_live(args):
            raise ValueError("--save-history needs a live source (--prometheus URL or --metrics-url URL)")
        return run_analyze(args)

    p.set_defaults(handler=handler)


def is_live(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "prometheus", None) or getattr(args, "metrics_url", None))


def live_history(args: argparse.Namespace, config: ExperimentConfig) -> History:
    """One look from the live source, added to `--save-history FILE` when given (and saved there)."""
    from experiments.live.history import History, HistoryError, load_history
    from experiments.live.sources import Recorder, SourceError
    from experiments.live.sources.ledger import LedgerSource

    path = args.save_history
    history = load_history(path, allow_resets=True) if path and path.exists() else History(config.name, ())
    if history.experiment != config.name:
        raise ValueError(f"{path} holds experiment {history.experiment!r}, not {config.name!r}")
    recorder = Recorder(config.name, history)
    with _make_source(args) as source:
        try:
            reading = source.read(config.name)
        except SourceError as err:
            raise ValueError(str(err)) from None
        try:
            recorder.add(reading, config.weights, config.router.analysis_buckets)
        except HistoryError as err:
            if not isinstance(source, LedgerSource) or source.source_reading is None:
                raise
            # More outcomes in the ledger than exposures the routers still count: a router restarted
            # and this look cannot fold its exposures back. Analyse what the routers counted.
            print(f"modelramp analyze: the outcome ledger's counts do not fit the routers' exposures ({err}): a router restarted "
                  "since the predictions were made; looks recorded by a running recorder (modelramp ramp, or analyze --serve) fold "
                  "exposures across restarts and use the ledger's counts. This look uses the routers' own outcome counts", file=sys.stderr)
            recorder.add(source.source_reading, config.weights, config.router.analysis_buckets)
        if isinstance(source, LedgerSource) and source.difference is not None:
            # stderr: the table or the JSON document on stdout stays what it was
            print(f"modelramp analyze: {source.difference.message()}", file=sys.stderr)
    if path:
        recorder.save(path)
    return recorder.history


def serve(args: argparse.Namespace) -> int:
    """Serve the analysis: a replayed `--history FILE`, or a live source recorded into the audit DB."""
    import threading

    import uvicorn

    from experiments.live.history import load_history, parse_history
    from experiments.live.service import Feed, create_app
    from experiments.live.weights import FileWeightStore, NopWeightStore
    from experiments.store import DEFAULT_DB, Store, StoreError

    if args.config is None:
        raise ValueError("--serve needs --config FILE (the experiment's criteria and weights)")
    config_path: Path = args.config
    weights_path: Path | None = args.weights

    def current() -> ExperimentConfig:  # read at every answer: the controller moves the weights
        return _config_with_weights(config_path, weights_path)

    config = current()
    stop = threading.Event()
    recording: tuple[threading.Thread, Source] | None = None  # the recorder's thread and the source it reads
    if args.history is not None:
        history_path: Path = args.history
        load_history(history_path, allow_resets=True)  # a bad file fails now, not on the first request
        feed = Feed(current, lambda: load_history(history_path, allow_resets=True), live=False)
    elif is_live(args):
        from experiments.live.controller import Controller

        if args.interval <= 0:
            raise ValueError(f"--interval must be positive, got {args.interval:g}")
        try:
            store = Store.open(args.db or DEFAULT_DB)
        except StoreError as err:
            return _fail("analyze", err)
        source = _make_source(args)
        # The recorder is a dry-run controller: it takes the looks (under the lease) and records
        # what it would decide; whatever applies weights (Argo, Flagger) acts on the answers.
        recorder = Controller(source, NopWeightStore(FileWeightStore(config_path, weights_path)), store,
                              lease_ttl_seconds=max(60.0, 3 * args.interval))
        recorder_thread = threading.Thread(target=recorder.run, args=(args.interval, stop), daemon=True)
        recorder_thread.start()
        recording = (recorder_thread, source)
        feed = Feed(current,
                    lambda: parse_history(store.history_document(config.name), allow_resets=True),
                    live=True, max_age_seconds=3 * args.interval)
    else:
        raise ValueError("--serve needs --history FILE or a live source (--prometheus URL / --metrics-url URL)")
    print(f"serving the analysis of {config.name!r} on http://{args.host}:{args.port}/v1/analysis/{config.name}", flush=True)
    try:
        uvicorn.run(create_app({config.name: feed}), host=args.host, port=args.port, log_level="warning")
    finally:
        stop.set()
        if recording is not None:
            recorder_thread, source = recording
            recorder_thread.join(timeout=10)
            source.close()
    return 0
