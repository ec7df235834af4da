"""Sliced error analysis: per-slice metrics of each model version beside the legacy rule, and what to fix first.

Pure functions over labels and scores (no server, no files): `analyse` takes the rows, the legacy
rule's answers and each version's scores, and returns per-slice classification reports (accuracy,
precision, recall, F1, support, confusion matrix) and the "prioritising what to work on" table of
"ML in Production, part 2: select and train a model". Scoring through the model server is the command's job (experiments/cli/slices.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import SliceSpec
from experiments.quality.slicing import check_slices, slice_mask, slice_rule
from serving.training import dataset
from serving.training.quality import classification_report

ALL_ROWS = "all rows"
BASELINE = "legacy rule"


@dataclass(frozen=True)
class SliceResult:
    """One slice (or all rows): its size, the baseline's report and each version's report."""

    name: str
    rule: str
    n: int
    share: float
    baseline: dict[str, Any]
    versions: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Priority:
    """One row of the prioritising table: how much a version would gain by matching the baseline on a slice."""

    slice: str
    version: int
    n: int
    share: float
    model_accuracy: float | None
    baseline_accuracy: float | None
    gap: float | None
    potential_gain: float
    error_share: float | None
    rank: int = 0


def potential_gain(gap: float | None, share: float) -> float:
    """Accuracy on all rows recovered if the model matched the baseline on the slice: gap x share.

    Seed 004 ranks categories by room for improvement and by how often they occur: a 4-point gap on
    4% of the data is worth 0.16 points overall, a 1-point gap on 60% of it 0.6 points. The product
    is exactly the overall accuracy the version gains by closing that gap, so it puts both criteria
    on one scale. An empty or unmeasurable slice gains nothing.
    """
    return 0.0 if gap is None else gap * share


def rank(rows: Sequence[Priority]) -> list[Priority]:
    """Rows of each version ordered by potential gain, then gap, then share (largest first); rank from 1.

    Ties in gain go to the larger gap: the same overall gain from fewer rows is usually the cheaper
    fix. Slices with no measurable gap (no rows) come last: they say nothing either way. Versions
    are kept apart (ascending) because each is worked on by itself.
    """
    def key(p: Priority) -> tuple:
        # Rounded so that 0.01 x 0.6 and 0.02 x 0.3 tie as they do on paper.
        return (p.version, p.gap is None, -round(p.potential_gain, 12), -(p.gap or 0.0), -p.share, p.slice)

    ordered = sorted(rows, key=key)
    out: list[Priority] = []
    for p in ordered:
        position = 1 + sum(1 for q in out if q.version == p.version)
        out.append(Priority(**{**asdict(p), "rank": position}))
    return out


def _accuracy(report: Mapping[str, Any]) -> float | None:
    acc = report["accuracy"]
    return None if acc is None or not math.isfinite(acc) else float(acc)


def prioritise(overall: SliceResult, slices: Sequence[SliceResult]) -> list[Priority]:
    """The prioritising table for every slice and version (the all-rows result gives the error totals).

    Slices may overlap, so the gains of two slices do not add up; each is a what-if on its own.
    A negative gap means the version already beats the baseline there: nothing to recover from the
    baseline, though `error_share` shows how much of the version's error still lives in the slice.
    """
    rows = []
    for s in slices:
        base = _accuracy(s.baseline)
        for version, report in s.versions.items():
            model = _accuracy(report)
            gap = None if model is None or base is None else base - model
            errors_all = overall.versions[version]["n"] - overall.versions[version]["correct"]
            errors_here = report["n"] - report["correct"]
            rows.append(Priority(slice=s.name, version=version, n=s.n, share=s.share, model_accuracy=model,
                                 baseline_accuracy=base, gap=gap, potential_gain=potential_gain(gap, s.share),
                                 error_share=errors_here / errors_all if errors_all else None))
    return rank(rows)


@dataclass(frozen=True)
class ErrorAnalysis:
    """Per-slice reports and the prioritising table."""

    overall: SliceResult
    slices: list[SliceResult]
    priorities: list[Priority]

    def to_dict(self) -> dict[str, Any]:
        def result(r: SliceResult) -> dict[str, Any]:
            return {**asdict(r), "versions": {str(v): rep for v, rep in r.versions.items()}}

        return {"baseline_name": BASELINE, "overall": result(self.overall),
                "slices": [result(s) for s in self.slices], "priorities": [asdict(p) for p in self.priorities]}


def _result(name: str, rule: str, mask: np.ndarray, labels: np.ndarray, baseline: np.ndarray,
            scores: Mapping[int, np.ndarray]) -> SliceResult:
    n = int(mask.sum())
    return SliceResult(name=name, rule=rule, n=n, share=n / len(mask) if len(mask) else 0.0,
                       baseline=classification_report(labels[mask], baseline[mask]),
                       versions={v: classification_report(labels[mask], s[mask]) for v, s in sorted(scores.items())})


def analyse(frame: pd.DataFrame, baseline: np.ndarray, scores: Mapping[int, np.ndarray],
            slices: Sequence[SliceSpec]) -> ErrorAnalysis:
    """Per-slice reports for the baseline and every version, and the ranked prioritising table.

    `baseline` and each version's `scores` are per-row churn scores (thresholded at 0.5, as served).
    """
    check_slices(slices)
    labels = frame[dataset.LABEL].to_numpy()
    baseline = np.asarray(baseline, dtype=np.float64)
    scores = {int(v): np.asarray(s, dtype=np.float64) for v, s in scores.items()}
    for name, s in [(BASELINE, baseline), *((f"version {v}", s) for v, s in scores.items())]:
        if len(s) != len(frame):
            raise ValueError(f"{name} has {len(s)} scores for {len(frame)} rows")
    overall = _result(ALL_ROWS, "every row", np.ones(len(frame), dtype=bool), labels, baseline, scores)
    results = [_result(s.name, slice_rule(s), slice_mask(frame, s), labels, baseline, scores) for s in slices]
    return ErrorAnalysis(overall, results, prioritise(overall, results))
