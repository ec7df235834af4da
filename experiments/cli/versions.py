"""`modelramp versions`: what produced each model version and how it did, as a table, one version in full, or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MISSING = "[dim]missing[/]"
NONE = "[dim]-[/]"  # missing, where a column has no room for the word


def run(args: argparse.Namespace) -> int:
    """`modelramp versions`: collect, then print the table (or one version in full, or JSON)."""
    from experiments.quality.tracking import collect, finite
    from experiments.store import DEFAULT_DB, Store, StoreError

    given = args.db is not None
    up_note = None if given else _from_up(args)
    db = args.db or DEFAULT_DB
    models = args.models or "models"
    # A read-only command must not create an empty database as a side effect of a typo.
    exists = "://" in db or Path(db).exists()
    try:
        store = Store.open(db) if exists else None
    except StoreError as err:
        raise ValueError(str(err)) from None
    try:
        doc = collect(Path(models), store, args.model_name, args.version)
    finally:
        if store is not None:
            store.close()
    doc["database"] = db if exists else None
    if not exists:
        doc["database_note"] = _no_database(db, given, up_note)
    if args.json:
        print(json.dumps(finite(doc), indent=2, allow_nan=False))
    elif args.version is not None:
        print_one(doc)
    else:
        print_table(doc)
    return 0


def _from_up(args: argparse.Namespace) -> str | None:
    """Take the audit database (and the models, unless `--models`) of the running `up`; else why none runs."""
    from experiments.local.up_state import announce, read_state

    state, note = read_state()
    if state is None:
        return note
    args.db = state.db
    took = {"db": state.db}
    if args.models is None:
        args.models = took["models"] = state.models
    announce("versions", state, took)
    return None


def _no_database(db: str, given: bool, up_note: str | None) -> str:
    """Why gate and live results are unknown, and which `--db` would show them."""
    if given:
        return f"no audit database at {db}: gate and live results unknown"
    if up_note is None:  # the running up's database: its ramp controller has not decided yet
        return (f"no audit database at {db} yet: `modelramp up`'s ramp controller (--ramp-interval S) or "
                "`modelramp ramp` creates it with its first decision; gate and live results unknown")
    # The demo keeps each run's database in its run folder, where a bare `versions` does not look.
    demos = sorted(str(p) for p in Path("reports").glob("demo-*/audit.db"))
    hint = f"; the demo's runs: {', '.join(f'--db {d}' for d in demos)}" if demos else ""
    return f"no audit database at {db}: gate and live results unknown; give --db URL{hint}; {up_note}"


def _num(x: Any, digits: int = 4) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{x:.{digits}f}"


def _short(fingerprint: str | None, digits: int = 12) -> str:
    return MISSING if not fingerprint else fingerprint.split(":", 1)[-1][:digits]


def recipe_text(recipe: dict[str, Any] | None) -> str:
    """The hyperparameters on one line (description left out: it repeats them in words)."""
    if not recipe:
        return MISSING
    return ", ".join(f"{k}={v}" for k, v in recipe.items() if k != "description")


def gate_text(runs: list[dict] | None) -> str:
    if runs is None:
        return "[dim]no database[/]"
    if not runs:
        return "[dim]none[/]"
    last = runs[-1]
    colour = "green" if last["verdict"] == "PASS" else "red"
    honest = "" if last["honest"] else " NOT honest"
    more = f" (+{len(runs) - 1} earlier)" if len(runs) > 1 else ""
    return f"[{colour}]{last['verdict']}[/] {_num(last['accuracy'])}{honest} {last['time'][:10]}{more}"


def live_text(live: list[dict] | None) -> str:
    if live is None:
        return "[dim]no database[/]"
    if not live:
        return "[dim]none[/]"
    parts = []
    for e in live:
        weight = "" if e["max_model_weight"] is None else f", max {100 * e['max_model_weight']:g}%"
        parts.append(f"{e['experiment']}: {e['outcome']} ({e['last_decision']}{weight})")
    return "; ".join(parts)


def _metric(metrics: dict | None, split: str, key: str, digits: int = 4, missing: str = MISSING) -> str:
    report = (metrics or {}).get(split)
    return missing if not report else _num(report.get(key), digits)


def print_table(doc: dict[str, Any]) -> None:
    """One row per version: provenance, offline metrics, gate, live."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if not doc["versions"]:
        console.print(f"no model versions under {doc['models']}")
        return
    from rich import box

    table = Table(title=f"model versions under {doc['models']}", box=box.SIMPLE_HEAD, collapse_padding=True,
                  pad_edge=False, caption="- not recorded; --version N shows everything about one version")
    # Short columns never wrap, so the long ones (gate, live) take what is left of the terminal.
    for col, width in (("version", 0), ("code", 0), ("train data", 0), ("seed", 0), ("recipe", 0),
                       ("val. acc/F1", 0), ("gate (latest)", 12), ("live", 12)):
        table.add_column(col, overflow="fold", no_wrap=not width, min_width=width or None)
    for r in doc["versions"]:
        t = r["training"] or {}
        recipe = t.get("recipe") or {}
        fingerprint = ((t.get("data") or {}).get("fingerprints") or {}).get("train")
        table.add_row(f"{r['model']}/{r['version']}", (t.get("code_version") or "")[:8] or NONE,
                      NONE if not fingerprint else _short(fingerprint, 8),
                      NONE if t.get("seed") is None else str(t["seed"]), str(recipe.get("architecture") or NONE),
                      f"{_metric(r['metrics'], 'validation', 'accuracy', 3, NONE)}/"
                      f"{_metric(r['metrics'], 'validation', 'f1', 3, NONE)}",
                      gate_text(r["gate_runs"]), live_text(r["live"]))
    console.print(table)
    _notes(console, doc)


def print_one(doc: dict[str, Any]) -> None:
    """Everything recorded about one version, as label / value rows."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    for r in doc["versions"]:
        t = r["training"] or {}
        table = Table(title=f"{r['model']} version {r['version']} ({r['path']})", show_header=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row("code version", t.get("code_version") or MISSING)
        table.add_row("trained at", t.get("trained_at") or MISSING)
        table.add_row("seed", MISSING if t.get("seed") is None else str(t["seed"]))
        table.add_row("hyperparameters", recipe_text(t.get("recipe")))
        data = t.get("data") or {}
        table.add_row("data", f"{data.get('source') or MISSING}, split seed {data.get('split_seed', 'n/a')}"
                      if data else MISSING)
        for split, fp in (data.get("fingerprints") or {}).items():
            table.add_row(f"  {split} split", fp)
        for split in ("train", "validation"):
            report = (r["metrics"] or {}).get(split)
            table.add_row(f"{split} metrics", MISSING if not report else
                          ", ".join(f"{k} {_num(report.get(k))}" for k in ("accuracy", "precision", "recall", "f1", "roc_auc")))
        if r["gate_runs"] is None:
            table.add_row("gate runs", "[dim]no database[/]")
        else:
            table.add_row("gate runs", "[dim]none[/]" if not r["gate_runs"] else "")
            for g in r["gate_runs"]:
                table.add_row(f"  #{g['id']}", f"{g['verdict']} accuracy {_num(g['accuracy'])} on {g['n']} rows, "
                              f"{'honest' if g['honest'] else 'NOT honest (test set reused)'}, {g['time']}, "
                              f"test set {_short(g['test_set_fingerprint'])}")
        table.add_row("live experiments", "[dim]no database[/]" if r["live"] is None else "" if r["live"] else "[dim]none[/]")
        for e in r["live"] or []:
            rates = ", ".join(f"{arm} {_num(rate)}" for arm, rate in e["success_rate"].items() if rate is not None)
            table.add_row(f"  {e['experiment']}", f"{e['outcome']}: {e['decisions']} decisions {e['first']} to {e['last']}; "
                          f"last {e['last_decision']}; success rate {rates or 'n/a'}")
        table.add_row("missing", ", ".join(r["missing"]) or "nothing")
        console.print(table)
    _notes(console, doc)


def _notes(console, doc: dict[str, Any]) -> None:
    if doc.get("database_note"):
        console.print(f"[yellow]{doc['database_note']}[/]", soft_wrap=True)
    for u in doc.get("unattributed_live", []):
        console.print(f"[yellow]experiment {u['experiment']}: {u['decisions']} decision(s) not attributed to a version: "
                      f"{u['why']}[/]", soft_wrap=True)
