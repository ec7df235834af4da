"""The problem patterns database ("Machine Learning in Real Life, part 2"): known problems, their patterns, and their results per version.

A problem is something users complained about ("churners on the international plan are missed").
Its patterns are 10 to 15 concrete inputs with the answer the model should give, positive and
negative, from production or written by hand. Every evaluation stores each pattern's prediction
per model version, so "did version 3 fix Problem X, and which patterns flipped?" is a query,
not a notebook. Tables live in `experiments.store`; this module is their only writer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from experiments.store import (
    Store,
    evaluations,
    inserted_id,
    pattern_results,
    patterns,
    problem_results,
    problems,
)
from serving.tfserving import errors

RECOMMENDED_PATTERNS = (10, 15)  # "Machine Learning in Real Life, part 2": few enough to examine one by one, enough to cover the problem
SOURCES = ("production", "handmade")


class ProblemError(errors.InvalidArgument):
    """A problem or pattern is unknown or malformed; the message names it."""


@dataclass(frozen=True)
class Problem:
    id: int
    model_name: str
    name: str
    description: str
    regression: bool
    min_accuracy: float | None
    created_at: datetime


@dataclass(frozen=True)
class Pattern:
    id: int
    problem_id: int
    instance: dict[str, Any]
    expected: int
    source: str
    note: str


@dataclass(frozen=True)
class NewPattern:
    """A pattern before it is stored (validated by `experiments.quality.problem_import`)."""

    instance: dict[str, Any]
    expected: int
    source: str = "handmade"
    note: str = ""

    @property
    def key(self) -> str:
        canonical = json.dumps({"instance": self.instance, "expected": self.expected}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:40]


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- problems and patterns ------------------------------------------------------------------------


def add_problem(store: Store, model_name: str, name: str, description: str = "", *, regression: bool = False,
                min_accuracy: float | None = None) -> Problem:
    """Create a problem; an existing one with this name is an error (use `update_problem`)."""
    name = name.strip()
    if not name:
        raise ProblemError("a problem needs a name")
    if min_accuracy is not None and not 0.0 <= min_accuracy <= 1.0:
        raise ProblemError(f"min accuracy must be between 0 and 1, not {min_accuracy}")
    if find_problem(store, model_name, name) is not None:
        raise ProblemError(f"problem {name!r} already exists for model {model_name!r}")
    with store.engine.begin() as conn:
        conn.execute(problems.insert().values(model_name=model_name, name=name, description=description,
                                              regression=regression, min_accuracy=min_accuracy, created_at=_now()))
    return get_problem(store, model_name, name)


def update_problem(store: Store, problem: Problem, *, description: str | None = None, regression: bool | None = None,
                   min_accuracy: float | None = None) -> Problem:
    """Change a problem's description or its canary settings (patterns and results stay)."""
    values: dict[str, Any] = {}
    if description is not None:
        values["description"] = description
    if regression is not None:
        values["regression"] = regression
    if min_accuracy is not None:
        if not 0.0 <= min_accuracy <= 1.0:
            raise ProblemError(f"min accuracy must be between 0 and 1, not {min_accuracy}")
        values["min_accuracy"] = min_accuracy
    if values:
        with store.engine.begin() as conn:
            conn.execute(problems.update().where(problems.c.id == problem.id).values(**values))
    return get_problem(store, problem.model_name, problem.name)


def find_problem(store: Store, model_name: str, name: str) -> Problem | None:
    q = sa.select(problems).where(problems.c.model_name == model_name, problems.c.name == name)
    with store.engine.connect() as conn:
        row = conn.execute(q).mappings().first()
    return None if row is None else Problem(**row)


def get_problem(store: Store, model_name: str, name: str) -> Problem:
    problem = find_problem(store, model_name, name)
    if problem is None:
        known = ", ".join(p.name for p in list_problems(store, model_name)) or "none yet"
        raise ProblemError(f"no problem {name!r} for model {model_name!r} (known: {known}); "
                           "`modelramp problems add` creates one")
    return problem


def list_problems(store: Store, model_name: str) -> list[Problem]:
    q = sa.select(problems).where(problems.c.model_name == model_name).order_by(problems.c.id)
    with store.engine.connect() as conn:
        return [Problem(**row) for row in conn.execute(q).mappings()]


def add_patterns(store: Store, problem: Problem, new: Iterable[NewPattern]) -> tuple[int, int]:
    """Store patterns of a problem in one transaction; returns (added, already present)."""
    added = present = 0
    with store.engine.begin() as conn:
        known = set(conn.execute(sa.select(patterns.c.key).where(patterns.c.problem_id == problem.id)).scalars())
        for p in new:
            if p.source not in SOURCES:
                raise ProblemError(f"pattern source must be one of {SOURCES}, not {p.source!r}")
            if p.key in known:
                present += 1
                continue
            known.add(p.key)
            conn.execute(patterns.insert().values(problem_id=problem.id, key=p.key, instance=p.instance,
                                                  expected=p.expected, source=p.source, note=p.note, created_at=_now()))
            added += 1
    return added, present


def problem_patterns(store: Store, problem: Problem) -> list[Pattern]:
    q = sa.select(patterns).where(patterns.c.problem_id == problem.id).order_by(patterns.c.id)
    with store.engine.connect() as conn:
        return [Pattern(r.id, r.problem_id, r.instance, r.expected, r.source, r.note) for r in conn.execute(q)]


def pattern_advice(pats: list[Pattern]) -> str | None:
    """What "Machine Learning in Real Life, part 2" would say about a problem's patterns (None: nothing to say)."""
    low, high = RECOMMENDED_PATTERNS
    notes = []
    if not low <= len(pats) <= high:
        notes.append(f"{len(pats)} patterns; {low} to {high} are recommended")
    if pats and len({p.expected for p in pats}) < 2:
        notes.append("only " + ("positive" if pats[0].expected else "negative") + " patterns; add both kinds")
    return "; ".join(notes) or None


# --- evaluations --------------------------------------------------------------------------------


def record_evaluation(store: Store, model_name: str, candidate: int, server: str, purpose: str,
                      results: Mapping[int, Mapping[int, tuple[float, int, bool]]],
                      metrics: Mapping[int, Mapping[int, Mapping[str, Any]]]) -> int:
    """Store one evaluation: results[version][pattern id] = (score, predicted, correct) and
    metrics[version][problem id] = that problem's metrics; returns the evaluation id."""
    with store.engine.begin() as conn:
        eid = inserted_id(conn.execute(evaluations.insert().values(
            model_name=model_name, candidate_version=candidate, versions=sorted(results), server=server,
            purpose=purpose, time=_now())))
        rows: list[dict[str, Any]] = [{"evaluation_id": eid, "pattern_id": pid, "model_version": v, "score": s, "predicted": pred,
                 "correct": ok} for v, by_pattern in results.items() for pid, (s, pred, ok) in by_pattern.items()]
        if rows:
            conn.execute(pattern_results.insert(), rows)
        rows = [{"evaluation_id": eid, "problem_id": pid, "model_version": v, "metrics": dict(m)}
                for v, by_problem in metrics.items() for pid, m in by_problem.items()]
        if rows:
            conn.execute(problem_results.insert(), rows)
    return eid


def latest_problem_metrics(store: Store, model_name: str) -> dict[tuple[int, int], dict[str, Any]]:
    """{(problem id, version): metrics} from the newest evaluation of each pair."""
    q = (sa.select(problem_results.c.problem_id, problem_results.c.model_version, problem_results.c.metrics)
         .join(problems, problems.c.id == problem_results.c.problem_id)
         .where(problems.c.model_name == model_name).order_by(problem_results.c.id))
    with store.engine.connect() as conn:
        return {(r.problem_id, r.model_version): r.metrics for r in conn.execute(q)}  # newer rows overwrite older


def latest_pattern_results(store: Store, problem: Problem) -> dict[tuple[int, int], dict[str, Any]]:
    """{(pattern id, version): {score, predicted, correct}} from the newest evaluation of each pair."""
    q = (sa.select(pattern_results).join(patterns, patterns.c.id == pattern_results.c.pattern_id)
         .where(patterns.c.problem_id == problem.id).order_by(pattern_results.c.id))
    with store.engine.connect() as conn:
        return {(r.pattern_id, r.model_version): {"score": r.score, "predicted": r.predicted, "correct": r.correct}
                for r in conn.execute(q)}


def flips(store: Store, problem: Problem, before: int, after: int) -> list[dict[str, Any]]:
    """Patterns answered differently by two versions: fixed (wrong, then right) or broken (right, then wrong)."""
    results = latest_pattern_results(store, problem)
    out = []
    for p in problem_patterns(store, problem):
        a, b = results.get((p.id, before)), results.get((p.id, after))
        if a is None or b is None or a["correct"] == b["correct"]:
            continue
        out.append({"pattern_id": p.id, "change": "fixed" if b["correct"] else "broken", "expected": p.expected,
                    "score_before": a["score"], "score_after": b["score"], "source": p.source, "note": p.note,
                    "instance": p.instance})
    return out
