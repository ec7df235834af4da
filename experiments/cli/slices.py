"""`modelramp slices`'s front: rows of a split scored by every version on the model server, the tables and the plot.

The analysis itself is pure (experiments/quality/slices.py); this module reads the split, asks the
model server which versions it serves, scores the rows once per version, and presents the result.
It never reads the pristine test split: that one belongs to the launch gate and is used once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

DEFAULT_TARGET = "127.0.0.1:8500"
PREDICT_TIMEOUT_S = 10.0
SPLITS = ("validation", "live", "train")


def check_split(split: str) -> str:
    """The split to analyse; the pristine test split is refused with the reason."""
    if split == "test":
        raise ValueError("--split test is refused: the pristine test split belongs to the launch gate, which uses it "
                         "once (the 'Deep Learning Walkthrough' talk, step 9); slicing it and looking at the errors would tune the model "
                         "to it and make the gate's estimate optimistic. Use --split validation (default) or --split live")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; error analysis runs on {', '.join(SPLITS)}")
    return split


def parse_versions(text: str | None) -> list[int] | None:
    """`1,2` -> [1, 2]; None when not given (every version the server has)."""
    if text is None:
        return None
    try:
        versions = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--versions takes version numbers separated by commas (e.g. 1,2), got {text!r}") from None
    if not versions or min(versions) < 0:
        raise ValueError(f"--versions takes version numbers separated by commas (e.g. 1,2), got {text!r}")
    return versions


def _model_arm(config) -> tuple[str | None, str | None]:
    backend = config.arms["model"].backend
    return backend.model_name, backend.target if backend.kind == "tfserving_grpc" else None


def run(args: argparse.Namespace) -> int:
    from experiments.cli.gate import given, started_server
    from experiments.config import EXAMPLE_CONFIG, load_config
    from experiments.quality.gate import (
        json_ready,
        legacy_scores,
        score,
        served_versions,
    )
    from experiments.quality.slices import analyse
    from experiments.quality.slicing import check_slices
    from serving.tfserving.grpc_client import PredictionClient
    from serving.training import dataset

    split = check_split(args.split)
    requested = parse_versions(args.versions)
    if args.start_server and args.target:
        raise ValueError("give --target HOST:PORT or --start-server, not both")
    config_path = args.config or EXAMPLE_CONFIG
    config = load_config(config_path)
    slices = config.gate.slices
    if not slices:
        raise ValueError(f"{config_path} defines no slices (gate.slices); see experiments/example_experiment.yaml")
    check_slices(slices)  # a typo fails here, before a model server is started or asked
    arm_name, arm_target = _model_arm(config)
    name = args.model_name or arm_name or dataset.MODEL_NAME
    models = Path(args.models)
    data_dir = Path(args.data) if args.data else models / "data"
    if not dataset.split_path(data_dir, split).exists():
        raise ValueError(f"no {split} split at {dataset.split_path(data_dir, split)}; `modelramp train --out DIR` writes DIR/data")
    frame = dataset.read_split(data_dir, split)

    server = started_server(models, name, None, all_versions=True) if args.start_server else \
        given(args.target or arm_target or DEFAULT_TARGET)
    with server as target, PredictionClient(target, timeout=PREDICT_TIMEOUT_S) as client:
        available = served_versions(client, name)
        versions = requested or available
        missing = sorted(set(versions) - set(available))
        if missing or not versions:
            raise ValueError(f"the model server at {target} serves {name} versions {available or 'none'}; "
                             f"not {missing or 'any'}")
        scores = {v: score(client, name, frame, version=v)[0] for v in versions}
    analysis = analyse(frame, legacy_scores(frame), scores, slices)
    doc: dict[str, Any] = {
        "model_name": name, "server": "started for this run" if args.start_server else target, "versions": versions,
        "split": split, "rows": len(frame), "data_fingerprint": dataset.fingerprint(frame),
        "config": str(config_path), **analysis.to_dict()}
    doc = json_ready(doc)
    if args.plot:
        plot(doc, Path(args.plot))
    if args.json:
        print(json.dumps(doc, indent=2, allow_nan=False))
    else:
        print_tables(doc)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}"


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[list[str], bool]], caption: str | None = None):
    """A compact rich table where only the first column (a slice name) may wrap: numbers are never cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for i, header in enumerate(headers):
        width = max([len(header), *(Text.from_markup(cells[i]).cell_len for cells, _ in rows)])
        table.add_column(header, overflow="fold", min_width=min(width, 12) if i == 0 else width, no_wrap=i > 0)
    for cells, end in rows:
        table.add_row(*cells, end_section=end)
    return table


def print_tables(doc: dict) -> None:
    """Per-slice metrics of every version beside the legacy rule, then the prioritising table."""
    from rich.console import Console

    console = Console(soft_wrap=False)
    rows = []
    for s in [doc["overall"], *doc["slices"]]:
        systems = [("legacy", s["baseline"]), *((f"v{v}", r) for v, r in s["versions"].items())]
        for i, (label, r) in enumerate(systems):
            first = i == 0
            rows.append(([s["name"] if first else "", f"{s['n']} ({100 * s['share']:.0f}%)" if first else "", label,
                          *(_num(r[k]) for k in ("accuracy", "precision", "recall", "f1")),
                          "{tp}/{fp}/{tn}/{fn}".format(**r["confusion"])], i == len(systems) - 1))
    console.print(_table(f"{doc['model_name']} versions {', '.join(map(str, doc['versions']))} beside the "
                         f"{doc['baseline_name']}, {doc['split']} split ({doc['rows']} rows)",
                         ("slice", "rows", "", "acc.", "prec.", "recall", "F1", "tp/fp/tn/fn"), rows))
    # Rules apart from the table: a long rule would squeeze the numbers on a narrow terminal.
    for s in doc["slices"]:
        console.print(f"  [bold]{s['name']}[/]: {s['rule']}", highlight=False, soft_wrap=True)
    rows = []
    prio = doc["priorities"]
    for i, p in enumerate(prio):
        colour = "red" if p["potential_gain"] > 0 else "green" if p["gap"] is not None and p["gap"] < 0 else ""
        gain = _pp(p["potential_gain"])
        rows.append(([p["slice"], f"v{p['version']}", str(p["rank"]), f"{100 * p['share']:.1f}%",
                      _num(p["model_accuracy"]), _num(p["baseline_accuracy"]), _pp(p["gap"]),
                      f"[{colour}]{gain}[/]" if colour else gain,
                      "n/a" if p["error_share"] is None else f"{100 * p['error_share']:.0f}%"],
                     i == len(prio) - 1 or prio[i + 1]["version"] != p["version"]))
    console.print(_table("prioritising what to work on ('ML in Production, part 2')",
                         ("slice", "version", "rank", "share", "acc.", "legacy", "gap pp", "gain pp", "of errors"), rows,
                         caption="gain = gap x share: accuracy on all rows won by matching the legacy rule on the slice"))
    for v in doc["versions"]:
        if not any(p["potential_gain"] > 0 for p in prio if p["version"] == v):
            console.print(f"version {v}: no slice where the legacy rule does better; work on the slices holding "
                          "most of its errors", highlight=False, soft_wrap=True)


def plot(doc: dict, path: Path) -> None:
    """Accuracy per slice for the legacy rule and each version, and each version's potential gain per slice."""
    from matplotlib.figure import Figure

    results = [doc["overall"], *doc["slices"]]
    names = [s["name"] for s in results]
    versions = [str(v) for v in doc["versions"]]
    systems = [("legacy rule", "tab:grey", [s["baseline"]["accuracy"] for s in results])]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
    systems += [(f"version {v}", colours[i % len(colours)], [s["versions"][v]["accuracy"] for s in results])
                for i, v in enumerate(versions)]
    fig = Figure(figsize=(max(8, 1.2 * len(names)), 8), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    width = 0.8 / len(systems)
    for i, (label, colour, acc) in enumerate(systems):
        xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(names))]
        top.bar(xs, [a if a is not None else 0.0 for a in acc], width, color=colour, label=label)
    top.set_xticks(range(len(names)), [f"{n}\n({100 * s['share']:.0f}%)" for n, s in zip(names, results, strict=True)], fontsize=8,
                   rotation=20, ha="right")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1.05)
    top.set_title(f"{doc['model_name']}: accuracy per slice ({doc['split']} split, share of rows in brackets)")
    top.legend(fontsize=8)
    slice_names = [s["name"] for s in doc["slices"]]
    width = 0.8 / len(versions)
    for i, v in enumerate(versions):
        gains = {p["slice"]: p["potential_gain"] for p in doc["priorities"] if str(p["version"]) == v}
        xs = [x + (i - (len(versions) - 1) / 2) * width for x in range(len(slice_names))]
        bottom.bar(xs, [100 * gains[n] for n in slice_names], width, color=colours[i % len(colours)], label=f"version {v}")
    bottom.axhline(0, color="black", linewidth=0.5)
    bottom.set_xticks(range(len(slice_names)), slice_names, fontsize=8, rotation=20, ha="right")
    bottom.set_ylabel("potential gain (accuracy pp)")
    bottom.set_title("Where to work first: (legacy accuracy - version accuracy) x share of rows; above 0 = legacy does better")
    bottom.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
