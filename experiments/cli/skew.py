"""`modelramp skew`: the routers' live feature sketches judged against the training baseline, as a table or JSON."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.live.skew import FeatureReport
    from router.skew.drift import Judgement


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `skew` to the `modelramp` parser."""
    p = sub.add_parser("skew", help="drift/skew report of live features against the training baseline",
                       description="Sum the routers' live feature sketches (or ask Prometheus) and judge each feature "
                                   "against the model's training baseline with the config's skew thresholds.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--metrics-url", metavar="URL", action="append", default=[],
                     help="scrape a router's /metrics (repeat for each replica); without either: the router of the "
                          "`modelramp up` running from this folder, with its baseline and config, else http://127.0.0.1:8080")
    src.add_argument("--prometheus", metavar="URL", help="read the sketches from Prometheus's HTTP API at URL")
    p.add_argument("--window", metavar="DURATION", help="with --prometheus: only the last DURATION (PromQL, e.g. 1h)")
    p.add_argument("--baseline", metavar="PATH",
                   help="baseline.json of the model version (default: the running `modelramp up`'s, else the config's skew.baseline)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="experiment YAML with the skew: section (default: the running `modelramp up`'s, else the example config)")
    p.add_argument("--model", metavar="NAME", help="model label of the metrics (default: the baseline's model)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The `modelramp skew` handler: table or `--json`; exit 0 (verdicts are in the output)."""
    import json

    from experiments.config import EXAMPLE_CONFIG, load_config
    from experiments.live.skew import from_prometheus, from_router_metrics, judge_all
    from experiments.live.sources.base import SourceError
    from router.skew.sink import load_baseline

    up_note = None if args.metrics_url or args.prometheus else _from_up(args)
    config = load_config(args.config or EXAMPLE_CONFIG)
    path = args.baseline or config.skew.baseline
    if path is None:
        why = f"; {up_note}" if up_note else ""
        raise ValueError("no baseline: give --baseline PATH (a version's models/<model>/<N>/modelramp/baseline.json) "
                         f"and --metrics-url URL (a router), or set skew.baseline in the experiment config{why}")
    baseline = load_baseline(path)
    model = args.model or baseline.get("model") or config.model_name
    if args.window and not args.prometheus:
        raise ValueError("--window needs --prometheus (a router's /metrics holds counts since it started)")
    try:
        live = (from_prometheus(args.prometheus, model, args.window) if args.prometheus
                else from_router_metrics(args.metrics_url or ["http://127.0.0.1:8080"], model))
    except SourceError as err:
        raise ValueError(str(err)) from None  # one line on stderr, exit 2
    rows = judge_all(baseline, live, config.skew)
    if args.json:
        doc = {"model": model, "baseline": str(path), "source": live.source, "min_sample": config.skew.min_sample,
               "alpha": config.skew.alpha, "drifted": [r.judgement.feature for r in rows if r.judgement.verdict == "drift"],
               "features": [r.to_dict() for r in rows]}
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print_table(rows, f"model {model}: live ({live.source}) against the baseline {path}")
    return 0


def _from_up(args: argparse.Namespace) -> str | None:
    """Take the router, baseline and config `--metrics-url`, `--baseline` and `--config` leave out from the running `up`.

    None when it did; else why not, for the error that names the flags.
    """
    from experiments.local.up_state import announce, read_state

    state, note = read_state()
    if state is None:
        return note
    prometheus = state.live_prometheus() if args.window else None
    if prometheus:  # a window is Prometheus's: a router holds counts since its start
        args.prometheus = prometheus
        took = {"source": f"Prometheus {prometheus}"}
    else:
        args.metrics_url = [state.router_url]
        took = {"source": f"the router's /metrics at {state.router_url}"}
    if not args.baseline and state.baseline:
        args.baseline = took["baseline"] = state.baseline
    if args.config is None:
        args.config = Path(state.config)
        took["config"] = state.config
    announce("skew", state, took)
    return None


def _headline(j: Judgement) -> tuple[str, float | None, float | None]:
    """The judged statistic closest to (or furthest over) its threshold."""
    if not j.statistics:
        return next(iter(j.thresholds), "-"), None, None
    stat = max(j.thresholds, key=lambda s: j.statistics[s] / j.thresholds[s])
    return stat, j.statistics[stat], j.thresholds[stat]


def print_table(rows: Sequence[FeatureReport], title: str) -> None:
    """The per-feature table on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("feature", "kind", "n", "largest shift: baseline -> live", "statistic", "value", "threshold", "chi2 p", "anomalies", "verdict"):
        table.add_column(col, justify="right" if col in ("n", "value", "threshold", "chi2 p") else "left")
    colour = {"ok": "green", "drift": "red", "too_few": "yellow"}
    for r in rows:
        j = r.judgement
        stat, value, limit = _headline(j)
        p = j.statistics.get("chi2_pvalue")
        table.add_row(j.feature, j.kind, str(j.n), f"{r.shift_bin}: {r.baseline_share:.1%} -> {r.live_share:.1%}", stat,
                      "-" if value is None else f"{value:.3f}", "-" if limit is None else f"{limit:g}",
                      "-" if p is None else f"{p:.2g}", ", ".join(f"{k} {v}" for k, v in r.anomalies.items()) or "-",
                      f"[{colour[j.verdict]}]{j.verdict}[/]")
    Console(width=200).print(table)
