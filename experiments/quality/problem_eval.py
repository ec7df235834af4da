"""Running every problem's patterns through the model server, per version, and the canary check.

Seed 003: each time a candidate is chosen, its patterns are tested and so are every prior
candidate's, so a problem's metric can be compared across versions on the same patterns (results
from different validation sets are not comparable). Problems marked as regression tests are the
canary tests: a candidate that does worse on one than the version it would replace fails the gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.quality.gate import score, served_versions
from experiments.quality.problems import (
    Pattern,
    Problem,
    ProblemError,
    list_problems,
    problem_patterns,
    record_evaluation,
)
from experiments.store import Store
from serving.training import dataset
from serving.training.quality import THRESHOLD


@dataclass
class Evaluation:
    """One evaluation: per version, per problem, the metrics; per pattern, the answers."""

    id: int
    model_name: str
    candidate: int
    versions: list[int]
    problems: list[Problem]
    metrics: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # version -> problem id -> metrics
    skipped: list[str] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """One row per problem with its accuracy per version (JSON-ready)."""
        return [{"problem": p.name, "regression": p.regression, "min_accuracy": p.min_accuracy,
                 "versions": {str(v): self.metrics[v].get(p.id) for v in self.versions}} for p in self.problems]


def problem_metrics(expected: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Accuracy on a problem's patterns, with the positive and negative patterns counted apart."""
    predicted = (scores >= THRESHOLD).astype(int)
    right = predicted == expected
    pos, neg = expected == 1, expected == 0
    n = len(expected)
    return {"patterns": n, "correct": int(right.sum()), "accuracy": float(right.mean()) if n else None,
            "positives": int(pos.sum()), "positives_correct": int(right[pos].sum()),
            "negatives": int(neg.sum()), "negatives_correct": int(right[neg].sum()),
            "mean_score": float(scores.mean()) if n else None}


def versions_to_evaluate(client, model_name: str, candidate: int) -> list[int]:
    """The candidate and every earlier version the server still has (as "Machine Learning in Real Life, part 2" re-runs prior candidates)."""
    available = served_versions(client, model_name)
    if candidate not in available:
        raise ProblemError(f"{model_name} version {candidate} is not available on the model server "
                           f"(available: {', '.join(map(str, available)) or 'none'}); serve it, e.g. "
                           "`modelramp serve-model` with a version policy of `all`, or pass --start-server")
    return [v for v in available if v <= candidate]


def evaluate(store: Store, client, model_name: str, candidate: int, versions: list[int], *,
             purpose: str = "evaluate", only: list[Problem] | None = None) -> Evaluation:
    """Score every pattern of every problem (or `only` these) with each version; store and return it."""
    chosen = list_problems(store, model_name) if only is None else only
    with_patterns: list[tuple[Problem, list[Pattern]]] = []
    skipped = []
    for problem in chosen:
        pats = problem_patterns(store, problem)
        if pats:
            with_patterns.append((problem, pats))
        else:
            skipped.append(f"{problem.name}: no patterns yet")
    if not with_patterns:
        raise ProblemError(f"no patterns to evaluate for model {model_name!r}: add problems with "
                           "`modelramp problems add` and patterns with `modelramp problems import`")
    every = [p for _, pats in with_patterns for p in pats]
    frame = _frame(every)
    expected = np.array([p.expected for p in every])
    results: dict[int, dict[int, tuple[float, int, bool]]] = {}
    metrics: dict[int, dict[int, dict[str, Any]]] = {}
    for version in versions:
        scores, served = score(client, model_name, frame, version=version)
        if served != version:
            raise ProblemError(f"asked the model server for version {version} of {model_name}, got {served}")
        predicted = (scores >= THRESHOLD).astype(int)
        results[version] = {p.id: (float(s), int(y), bool(y == p.expected)) for p, s, y in zip(every, scores, predicted, strict=True)}
        metrics[version] = {}
        start = 0
        for problem, pats in with_patterns:
            part = slice(start, start + len(pats))
            metrics[version][problem.id] = problem_metrics(expected[part], scores[part])
            start += len(pats)
    eid = record_evaluation(store, model_name, candidate, client.target, purpose, results, metrics)
    return Evaluation(eid, model_name, candidate, list(versions), [p for p, _ in with_patterns], metrics, skipped)


def _frame(pats: list[Pattern]):
    frame = pd.DataFrame([p.instance for p in pats], columns=list(dataset.FEATURES))
    return frame.astype({**{c: str for c in dataset.CATEGORICAL}, **{c: np.float64 for c in dataset.NUMERIC}})


def has_regression_problems(store: Store, model_name: str) -> bool:
    return any(p.regression for p in list_problems(store, model_name))


def canary_check(store: Store, client, model_name: str, *, version: int | None = None, version_label: str | None = None,
                 reference: int | None = None) -> dict[str, Any]:
    """Whether the candidate keeps up on every regression problem; the failures name the problem.

    The candidate is the version the server answers for `version` / `version_label` (default its
    latest). The reference is the version it would replace: by default the newest earlier version
    the server still has. Worse means fewer of the problem's patterns answered right than the
    reference, or a share below the problem's own minimum accuracy.
    """
    regressions = [p for p in list_problems(store, model_name) if p.regression]
    testable = [p for p in regressions if problem_patterns(store, p)]
    untested = [f"{p.name}: no patterns yet" for p in regressions if p not in testable]
    if not testable:
        return {"passed": True, "candidate_version": version, "reference_version": None, "problems": [],
                "reason": "no regression problem with patterns for this model", "skipped": untested, "evaluation_id": None}
    # One pattern through the server tells which version a label or "latest" means right now.
    probe = _frame(problem_patterns(store, testable[0])[:1])
    candidate = score(client, model_name, probe, version=version, version_label=version_label)[1]
    available = served_versions(client, model_name)
    if reference is None:
        earlier = [v for v in available if v < candidate]
        reference = earlier[-1] if earlier else None
    elif reference not in available:
        raise ProblemError(f"reference version {reference} is not available on the model server (available: "
                           f"{', '.join(map(str, available)) or 'none'})")
    versions = [candidate] if reference is None else sorted({reference, candidate})
    evaluation = evaluate(store, client, model_name, candidate, versions, purpose="gate", only=testable)
    rows, failures = [], []
    for problem in evaluation.problems:
        now = evaluation.metrics[candidate][problem.id]
        before = evaluation.metrics[reference][problem.id] if reference is not None else None
        why = []
        if before is not None and now["correct"] < before["correct"]:
            why.append(f"{now['correct']}/{now['patterns']} patterns right against {before['correct']}/{before['patterns']} "
                       f"for version {reference}")
        if problem.min_accuracy is not None and now["accuracy"] < problem.min_accuracy:
            why.append(f"accuracy {now['accuracy']:.2f} below its minimum {problem.min_accuracy:.2f}")
        rows.append({"problem": problem.name, "candidate": now, "reference": before, "passed": not why,
                     "why": "; ".join(why)})
        if why:
            failures.append(f"{problem.name!r} ({'; '.join(why)})")
    against = f"version {reference}" if reference is not None else "no earlier version (minimums only)"
    reason = (f"worse on regression problem(s) {', '.join(failures)}" if failures
              else f"no regression problem got worse against {against}")
    return {"passed": not failures, "candidate_version": candidate, "reference_version": reference, "problems": rows,
            "reason": reason, "skipped": untested + evaluation.skipped, "evaluation_id": evaluation.id}
