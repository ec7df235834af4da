"""`modelramp scorecard`: the ML Test Score rubric (Breck et al., "The ML Test Score", 2017) scored against this checkout's
evidence, as a table or JSON."""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.cli.rubric import Claim, RubricTest, Section

# The checkout this package runs from: the rubric's evidence is its tests, rules and docs.
DEFAULT_ROOT = Path(__file__).resolve().parents[2]
STATE_LABEL = "deployment state (informational: read from --models/--db, does not change points)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `scorecard` to the `modelramp` parser."""
    p = sub.add_parser(
        "scorecard", help="ML Test Score (Breck et al.): the 28 tests, how modelramp covers each here, the score",
        description="Score the ML Test Score rubric for this deployment: per test automated (1 point), manual "
                    "(0.5) or not covered (0), with where it runs. Every claim's evidence (files, test functions, "
                    "alert rules, subcommands) is checked in the checkout; a claim whose evidence is missing counts "
                    "as not covered. The final score is the lowest section sum.")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of the tables")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                   help="source checkout whose evidence is checked (default: the one modelramp runs from)")
    p.add_argument("--models", type=Path, metavar="DIR",
                   help="also report this deployment's model versions (training records, baselines, age)")
    p.add_argument("--db", metavar="URL", help="also report canary problems, gate runs and rollbacks recorded in this audit database")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from experiments.cli.rubric import RUBRIC

    state = (*(models_state(args.models) if args.models else ()), *(db_state(args.db) if args.db else ()))
    card = score(RUBRIC, args.root, tuple(state))
    if not (card.root / "tests").is_dir():
        # An installed package (the container image) carries no tests, rules or docs: everything scores 0.
        print(f"modelramp scorecard: no tests/ under {card.root}: the evidence lives in a source checkout "
              "(pass --root DIR)", file=sys.stderr)
    if args.json:
        print(json.dumps(card.to_dict(), indent=2))
    else:
        print_tables(card)
    return 0


# --- evidence and scoring ---------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    """A rubric test as scored against one checkout: the claim that held, or why none did."""

    test: RubricTest
    status: str
    how: str = ""
    where: str = ""
    why: str = ""
    evidence: tuple[str, ...] = ()
    passed_over: tuple[str, ...] = ()

    @property
    def points(self) -> float:
        from experiments.cli.rubric import POINTS

        return POINTS[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.test.key, "name": self.test.name, "description": self.test.description,
                "status": self.status, "points": self.points, "how": self.how, "where": self.where,
                "why": self.why, "evidence": list(self.evidence), "passed_over": list(self.passed_over)}


@dataclass(frozen=True)
class Scorecard:
    """Every section's assessments and sum; the final score is the lowest sum."""

    sections: tuple[tuple[Section, tuple[Assessment, ...]], ...]
    root: Path
    state: tuple[dict[str, Any], ...] = ()

    def total(self, section: Section) -> float:
        return sum(a.points for s, assessed in self.sections if s is section for a in assessed)

    @property
    def final_score(self) -> float:
        return min(self.total(s) for s, _ in self.sections)

    @property
    def weakest(self) -> tuple[Section, ...]:
        """The sections whose sum is the final score (several on a tie), in rubric order."""
        return tuple(s for s, _ in self.sections if self.total(s) == self.final_score)

    def to_dict(self) -> dict[str, Any]:
        from experiments.cli.rubric import POINTS, interpret

        return {
            "rubric": "The ML Test Score (Breck, Cai, Nielsen, Salib, Sculley; IEEE Big Data 2017)",
            "root": str(self.root), "points_per_status": POINTS,
            "sections": [{"key": s.key, "title": s.title, "points": self.total(s), "max_points": len(s.tests),
                          "tests": [a.to_dict() for a in assessed]} for s, assessed in self.sections],
            "final_score": self.final_score,
            "weakest_section": self.weakest[0].key,
            "weakest_sections": [s.key for s in self.weakest],
            "interpretation": interpret(self.final_score),
            "deployment_state": list(self.state),
        }


def check_reference(ref: str, root: Path) -> str | None:
    """None when `ref` holds in the checkout at `root`; otherwise why not ("evidence missing: ...")."""
    if ref.startswith("modelramp "):
        return None if ref.split()[1] in _subcommands(DEFAULT_ROOT) else f"evidence missing: {ref}"
    path, _, anchor = ref.partition("::")
    target = Path(root) / path
    if Path(path).is_absolute() or ".." in Path(path).parts or not target.exists():
        return f"evidence missing: {ref}"
    if not anchor:
        return None
    try:
        text = target.read_text()
    except (OSError, UnicodeDecodeError):
        return f"evidence missing: {ref}"
    if target.suffix == ".py":
        return _check_python(text, anchor.split("::"), ref)
    name = re.escape(anchor)
    if target.suffix in (".yaml", ".yml"):
        pattern = rf"^\s*-?\s*(alert|record):\s*{name}\s*$"
    elif target.name == "Makefile":
        pattern = rf"^{name}\s*:"
    elif target.suffix == ".md":
        pattern = rf"^#+ .*{name}"
    else:
        return f"evidence missing: {ref} (anchors are checked only in Python, rule YAML, Makefile and Markdown)"
    return None if re.search(pattern, text, re.MULTILINE | re.IGNORECASE) else f"evidence missing: {ref}"


def _check_python(text: str, names: list[str], ref: str) -> str | None:
    try:
        scope: list[ast.stmt] = ast.parse(text).body
    except SyntaxError:
        return f"evidence missing: {ref} (the file does not parse)"
    node: ast.stmt | None = None
    for name in names:
        name = name.split("[", 1)[0]  # a parametrised node id names the same function
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == name), None)
        if node is None:
            # A module-level constant (RECIPES) is evidence too; only top-level names count.
            if len(names) == 1 and any(isinstance(n, (ast.Assign, ast.AnnAssign)) and name in _targets(n) for n in scope):
                return None
            return f"evidence missing: {ref}"
        scope = node.body if isinstance(node, ast.ClassDef) else []
    # A skipped test runs nowhere, so it proves nothing; skipif is a condition and may well run.
    for deco in getattr(node, "decorator_list", []):
        func = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(func, ast.Attribute) and func.attr in ("skip", "xfail"):
            return f"evidence missing: {ref} (marked {func.attr})"
    return None


def _targets(node: ast.stmt) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]
    return {t.id for t in targets if isinstance(t, ast.Name)}


@lru_cache(maxsize=1)
def _subcommands(root: Path) -> frozenset[str]:
    """The `modelramp` subcommands defined under `root` (read from its CLI modules: importing the parser here would be a circle)."""
    sources = [root / "serving" / "cli.py", root / "router" / "cli.py", *sorted((root / "experiments" / "cli").glob("*.py"))]
    return frozenset(name for path in sources if path.exists()
                     for name in re.findall(r"""add_parser\(\s*["']([\w-]+)["']""", path.read_text()))


def claim_problems(claim: Claim, root: Path) -> list[str]:
    """Why `claim` does not hold in the checkout at `root` (empty: it holds)."""
    from experiments.cli.rubric import AUTOMATED, CI_EVIDENCE

    refs = claim.evidence + (CI_EVIDENCE if claim.status == AUTOMATED else ())
    return [reason for reason in (check_reference(r, root) for r in refs) if reason]


def assess(test: RubricTest, root: Path) -> Assessment:
    """The first claim whose evidence holds; else not covered, with the first missing evidence or the gap."""
    from experiments.cli.rubric import NOT_COVERED

    passed_over: list[str] = []
    rot: str | None = None
    for claim in test.claims:
        problems = claim_problems(claim, root)
        if not problems:
            return Assessment(test, claim.status, claim.how, claim.where, claim.note, claim.evidence, tuple(passed_over))
        passed_over.append(f"{claim.status}{' (pending)' if claim.pending else ''}: {'; '.join(problems)}")
        if not claim.pending and rot is None:
            rot = problems[0]
    return Assessment(test, NOT_COVERED, why=rot or test.gap or "no claim in the rubric", passed_over=tuple(passed_over))


def score(sections: tuple[Section, ...], root: Path, state: tuple[dict[str, Any], ...] = ()) -> Scorecard:
    """Assess every test of every section against the checkout at `root`."""
    root = Path(root).resolve()
    return Scorecard(tuple((s, tuple(assess(t, root) for t in s.tests)) for s in sections), root, state)


# --- deployment state (informational) ---------------------------------------------------------


def _fact(test: str, check: str, ok: bool | None, detail: str) -> dict[str, Any]:
    return {"test": test, "check": check, "ok": ok, "detail": detail}


def models_state(models: Path) -> list[dict[str, Any]]:
    """What the exported versions under `models` record: training provenance, baselines, age."""
    from datetime import datetime, timezone

    models = Path(models)
    if not models.is_dir():
        return [_fact("Model 1", "model versions", False, f"no model folder at {models}")]
    try:
        manifest = json.loads((models / "data" / "manifest.json").read_text())["fingerprints"]
    except (OSError, ValueError, KeyError, TypeError):
        manifest = None
    facts: list[dict[str, Any]] = []
    for base in sorted(d for d in models.iterdir() if d.is_dir() and d.name != "data"):
        trained: list[tuple[datetime, int]] = []
        for vdir in sorted((v for v in base.iterdir() if v.name.isdigit() and (v / "saved_model.pb").exists()),
                           key=lambda v: int(v.name)):
            training = _version_facts(facts, f"{base.name} v{vdir.name}", vdir, manifest)
            try:
                when = datetime.strptime(training["trained_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            except (KeyError, TypeError, ValueError):
                continue
            trained.append((when, int(vdir.name)))
        if trained:
            when, number = max(trained)
            days = (datetime.now(timezone.utc) - when).total_seconds() / 86400
            facts.append(_fact("Monitor 4", "age of the newest version", None,
                               f"{base.name} v{number} trained {days:.1f} days ago; no staleness limit is set"))
    return facts or [_fact("Model 1", "model versions", False, f"no exported versions under {models}")]


def _version_facts(facts: list[dict[str, Any]], label: str, vdir: Path, manifest: dict | None) -> dict[str, Any]:
    """Append one version's facts; returns its training record ({} when unreadable)."""
    try:
        training: dict[str, Any] = json.loads((vdir / "modelramp" / "training.json").read_text())
    except (OSError, ValueError):
        facts.append(_fact("Model 1", "training record", False, f"{label}: no readable modelramp/training.json"))
        return {}
    commit = training.get("code_version")
    facts.append(_fact("Model 1", "code version recorded", bool(commit),
                       f"{label}: commit {str(commit)[:12]}" if commit else f"{label}: no git commit recorded"))
    prints = (training.get("data") or {}).get("fingerprints")
    same = None if manifest is None else prints == manifest
    splits = {None: "no data/manifest.json to compare", True: "fingerprints match",
              False: "fingerprints differ from data/manifest.json"}[same]
    facts.append(_fact("Infra 1", "trained on the manifest's splits", same, f"{label}: seed {training.get('seed')}, {splits}"))
    has_baseline = (vdir / "modelramp" / "baseline.json").exists()
    facts.append(_fact("Data 1", "feature baseline exported", has_baseline,
                       f"{label}: {'baseline.json present' if has_baseline else 'no modelramp/baseline.json'}"))
    return training


def db_state(db: str) -> list[dict[str, Any]]:
    """What the audit database records: canary problems (Model 6), gate runs (Infra 4), rollbacks (Infra 7)."""
    import sqlalchemy as sa

    from experiments import store as audit
    from experiments.store import Store, StoreError

    if "://" not in db and not Path(db).exists():
        return [_fact("Infra 4", "audit database", False, f"no database at {db}")]
    try:
        store = Store.open(db)
        try:
            runs, decisions = store.gate_runs(), store.decisions()
            with store.engine.connect() as conn:
                canaries = conn.execute(sa.select(sa.func.count()).select_from(audit.problems)
                                        .where(audit.problems.c.regression)).scalar_one()
        finally:
            store.close()
    except StoreError as err:
        return [_fact("Infra 4", "audit database", False, str(err))]
    passed = sum(bool(r.result.get("passed")) for r in runs)
    honest = sum(r.honest for r in runs)
    rollbacks = sum(d.decision == "rollback" and d.applied for d in decisions)
    return [_fact("Model 6", "regression problems (canary tests)", bool(canaries),
                  f"{canaries} problems marked --regression" + ("" if canaries else ": the gate's canary check passes vacuously")),
            _fact("Infra 4", "gate runs recorded", bool(runs), f"{len(runs)} gate runs ({passed} passed, {honest} honest)"),
            _fact("Infra 7", "rollbacks applied", None, f"{rollbacks} rollbacks applied in {len(decisions)} ramp decisions")]


# --- rendering --------------------------------------------------------------------------------


def _points(p: float) -> str:
    return f"{p:g}"


def print_tables(card: Scorecard) -> None:
    """One table per section, the section sums, the final score, and the deployment state if asked for."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from experiments.cli.rubric import interpret

    colour = {"automated": "green", "manual": "yellow", "not covered": "red"}
    console = Console()
    if not console.is_terminal:
        console.width = 140  # a file or pipe has no width to respect, and 80 columns fold every cell
    for section, assessed in card.sections:
        table = Table(title=f"{section.title}: {_points(card.total(section))} / {len(section.tests)}",
                      title_justify="left", show_lines=True)
        table.add_column("test", ratio=3, overflow="fold")
        table.add_column("pts", justify="right", no_wrap=True)
        table.add_column("how", ratio=5, overflow="fold")
        table.add_column("where", ratio=3, overflow="fold")
        for a in assessed:
            how = f"[{colour[a.status]}]{a.status}[/]" + (f": {escape(a.how)}" if a.how else "")
            if a.why:
                how += f"\n[dim]{'gap' if a.how else 'why'}: {escape(a.why)}[/]"
            table.add_row(f"[bold]{a.test.key}[/] {escape(a.test.name)}", _points(a.points), how, escape(a.where))
        console.print(table)
    summary = Table(title="ML Test Score", title_justify="left")
    for col in ("section", "points", "of"):
        summary.add_column(col, justify="left" if col == "section" else "right")
    weakest = card.weakest
    for section, _ in card.sections:
        mark = " [bold red]<- lowest[/]" if section in weakest else ""
        summary.add_row(section.title + mark, _points(card.total(section)), str(len(section.tests)))
    console.print(summary)
    names = ", ".join(s.title for s in weakest)
    console.print(f"[bold]final score {_points(card.final_score)}[/] (the lowest section: {names}): "
                  f"{interpret(card.final_score)}", soft_wrap=True)
    console.print(f"[dim]evidence checked in {escape(str(card.root))}; `--json` lists every test's evidence[/]", soft_wrap=True)
    if card.state:
        state = Table(title=STATE_LABEL, title_justify="left")
        for col in ("test", "check", "ok", "detail"):
            state.add_column(col)
        for f in card.state:
            ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[f["ok"]]
            state.add_row(f["test"], f["check"], ok, escape(f["detail"]))
        console.print(state)
