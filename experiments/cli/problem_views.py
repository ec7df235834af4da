"""What `modelramp problems` and `evaluate` show: JSON-ready documents, rich tables and plot files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.quality import problems as db
from experiments.quality.plots import file_name, plot_pattern_grid, plot_problems
from experiments.quality.problem_eval import Evaluation
from experiments.store import Store


def _cell(m: dict[str, Any] | None) -> str:
    return "-" if not m else f"{m['correct']}/{m['patterns']} ({100 * m['accuracy']:.0f}%)"


def _problem_doc(p: db.Problem, pats: list[db.Pattern]) -> dict[str, Any]:
    return {"name": p.name, "description": p.description, "regression": p.regression, "min_accuracy": p.min_accuracy,
            "patterns": len(pats), "positives": sum(q.expected for q in pats),
            "negatives": sum(1 - q.expected for q in pats), "advice": db.pattern_advice(pats)}


def list_document(store: Store, model_name: str) -> dict[str, Any]:
    latest = db.latest_problem_metrics(store, model_name)
    versions = sorted({v for _, v in latest})
    rows = []
    for p in db.list_problems(store, model_name):
        rows.append({**_problem_doc(p, db.problem_patterns(store, p)),
                     "results": {str(v): latest.get((p.id, v)) for v in versions}})
    return {"model_name": model_name, "versions": versions, "problems": rows}


def print_list(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    if not doc["problems"]:
        console.print(f"no problems recorded for {doc['model_name']}; `modelramp problems add NAME` creates one")
        return
    table = Table(title=f"known problems of {doc['model_name']} (latest evaluation per version)")
    notes = any(r["advice"] for r in doc["problems"])
    table.add_column("problem", overflow="fold", min_width=16)
    for col in ("regression test", "patterns (+/-)", *(f"v{v}" for v in doc["versions"]), *(["note"] if notes else [])):
        table.add_column(col, overflow="fold")
    for r in doc["problems"]:
        canary = ("yes" + (f", min {r['min_accuracy']:.2f}" if r["min_accuracy"] is not None else "")) if r["regression"] else ""
        table.add_row(r["name"], canary, f"{r['patterns']} ({r['positives']}/{r['negatives']})",
                      *(_cell(r["results"][str(v)]) for v in doc["versions"]), *([r["advice"] or ""] if notes else []))
    console.print(table)


def show_document(store: Store, model_name: str, name: str, flips: list[int] | None = None) -> dict[str, Any]:
    problem = db.get_problem(store, model_name, name)
    pats = db.problem_patterns(store, problem)
    results = db.latest_pattern_results(store, problem)
    versions = sorted({v for _, v in results})
    doc: dict[str, Any] = {
        "model_name": model_name, **_problem_doc(problem, pats), "versions": versions,
        "pattern_rows": [{"id": q.id, "expected": q.expected, "source": q.source, "note": q.note, "instance": q.instance,
                          "results": {str(v): results.get((q.id, v)) for v in versions}} for q in pats],
    }
    if flips:
        before, after = flips
        for v in (before, after):
            if v not in versions:
                raise db.ProblemError(f"{name!r} has no results for version {v} (evaluated: "
                                      f"{', '.join(map(str, versions)) or 'none'}); run `modelramp evaluate --version {max(flips)}`")
        doc["flips"] = {"from": before, "to": after, "patterns": db.flips(store, problem, before, after)}
    return doc


def print_show(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    regression = " [bold](regression test)[/]" if doc["regression"] else ""
    console.print(f"[bold]{doc['name']}[/]{regression}: {doc['description'] or '(no description)'}", soft_wrap=True)
    if doc["advice"]:
        console.print(f"note: {doc['advice']}")
    table = Table(title="patterns: churn score per version (x = wrong)")
    for col in ("#", "expected", "source", *(f"v{v}" for v in doc["versions"]), "note"):
        table.add_column(col, overflow="fold")
    for row in doc["pattern_rows"]:
        cells = []
        for v in doc["versions"]:
            r = row["results"][str(v)]
            cells.append("-" if r is None else f"{r['score']:.2f}" + ("" if r["correct"] else " x"))
        table.add_row(str(row["id"]), "churn" if row["expected"] else "stay", row["source"], *cells, row["note"])
    console.print(table)
    if "flips" in doc:
        f = doc["flips"]
        fixed = [p for p in f["patterns"] if p["change"] == "fixed"]
        broken = [p for p in f["patterns"] if p["change"] == "broken"]
        console.print(f"from v{f['from']} to v{f['to']}: {len(fixed)} fixed, {len(broken)} broken")
        for p in f["patterns"]:
            console.print(f"  {p['change']:6} #{p['pattern_id']} expected {'churn' if p['expected'] else 'stay'}: "
                          f"score {p['score_before']:.2f} -> {p['score_after']:.2f} {p['note']}", highlight=False)


def write_grid(doc: dict[str, Any], path: Path) -> Path:
    rows = [{"id": r["id"], "expected": r["expected"], "note": r["note"],
             "results": {v: r["results"][str(v)] for v in doc["versions"]}} for r in doc["pattern_rows"]]
    return plot_pattern_grid(doc["name"], rows, doc["versions"], Path(path))


def evaluation_document(store: Store, evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation's problem x version table, with the flips from the previous version to the candidate."""
    table = evaluation.table()
    doc = {"evaluation_id": evaluation.id, "model_name": evaluation.model_name, "candidate": evaluation.candidate,
           "versions": evaluation.versions, "problems": table, "skipped": evaluation.skipped}
    earlier = [v for v in evaluation.versions if v < evaluation.candidate]
    if earlier:
        for row, problem in zip(table, evaluation.problems, strict=True):
            changed = db.flips(store, problem, earlier[-1], evaluation.candidate)
            row["flips"] = {"from": earlier[-1], "fixed": sum(c["change"] == "fixed" for c in changed),
                            "broken": sum(c["change"] == "broken" for c in changed)}
    return doc


def print_evaluation(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(title=f"{doc['model_name']}: problems x versions (patterns answered right), evaluation #{doc['evaluation_id']}")
    table.add_column("problem", overflow="fold")
    for v in doc["versions"]:
        table.add_column(f"v{v}" + (" (candidate)" if v == doc["candidate"] else ""))
    table.add_column("flipped")
    for row in doc["problems"]:
        flips = row.get("flips")
        flipped = "" if not flips else f"{flips['fixed']} fixed, {flips['broken']} broken since v{flips['from']}"
        name = row["problem"] + (" [regression test]" if row["regression"] else "")
        table.add_row(name, *(_cell(row["versions"][str(v)]) for v in doc["versions"]), flipped)
    console.print(table)
    for note in doc["skipped"]:
        console.print(f"skipped {note}")
    for plot in doc.get("plots", []):
        console.print(f"wrote {plot}", highlight=False)


def write_plots(store: Store, evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """The across-versions graph and one pattern grid per problem."""
    out_dir = Path(out_dir)
    paths = [plot_problems(evaluation.table(), evaluation.versions, out_dir / f"{evaluation.model_name}-problems.png",
                           evaluation.model_name)]
    for problem in evaluation.problems:
        doc = show_document(store, evaluation.model_name, problem.name)
        paths.append(write_grid(doc, out_dir / f"{evaluation.model_name}-{file_name(problem.name)}.png"))
    return paths
