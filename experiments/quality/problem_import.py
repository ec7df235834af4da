"""Reading problem patterns from CSV or JSON lines, checked against the model's input schema.

A file is checked whole before anything is stored: one bad line refuses the import and names the
line, so a half-imported problem never looks complete.

JSON lines: `{"problem": "...", "instance": {<feature>: value, ...}, "expected": 0|1, "source":
"production"|"handmade", "note": "..."}`. CSV: one column per feature, `expected` (or the label
column, for production rows exported with their observed outcome), optional `problem`, `source`,
`note`. `problem` may be left out when the importer names one for the whole file.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from experiments.quality.problems import SOURCES, NewPattern, ProblemError
from serving.training import dataset

_TRUE = {"1", "true", "yes", "churn"}
_FALSE = {"0", "false", "no", "stay"}


def parse_expected(value: Any, where: str) -> int:
    """0 or 1 from 0/1, true/false, yes/no (the label's own spelling)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise ProblemError(f"{where}: expected output must be 0 or 1 (churn), not {value!r}")


def check_instance(instance: Any, where: str) -> dict[str, Any]:
    """The instance with every feature present and typed as the signature takes it."""
    if not isinstance(instance, dict):
        raise ProblemError(f"{where}: the instance must be an object of features, not {type(instance).__name__}")
    unknown = sorted(set(instance) - set(dataset.FEATURES))
    if unknown:
        raise ProblemError(f"{where}: unknown feature(s) {', '.join(unknown)}; the model takes {', '.join(dataset.FEATURES)}")
    missing = [f for f in dataset.FEATURES if f not in instance]
    if missing:
        raise ProblemError(f"{where}: missing feature(s) {', '.join(missing)}")
    out: dict[str, Any] = {}
    for name in dataset.CATEGORICAL:
        value = instance[name]
        if isinstance(value, (dict, list)) or value is None:
            raise ProblemError(f"{where}: {name} must be a category (text), not {value!r}")
        out[name] = str(value)
    for name in dataset.NUMERIC:
        value = instance[name]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ProblemError(f"{where}: {name} must be a number, not {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise ProblemError(f"{where}: {name} must be a finite number, not {value!r}")
        out[name] = number
    return out


def _pattern(instance: Any, expected: Any, source: Any, note: Any, where: str) -> NewPattern:
    source = str(source or "handmade").strip()
    if source not in SOURCES:
        raise ProblemError(f"{where}: source must be one of {', '.join(SOURCES)}, not {source!r}")
    return NewPattern(check_instance(instance, where), parse_expected(expected, where), source, str(note or ""))


def read_patterns(path: Path, problem: str | None = None) -> list[tuple[str, NewPattern]]:
    """(problem name, pattern) for every line of a CSV or JSON-lines file; the whole file or an error."""
    path = Path(path)
    if not path.is_file():
        raise ProblemError(f"no such file: {path}")
    reader = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
    rows = reader(path, problem)
    if not rows:
        raise ProblemError(f"{path}: no patterns in the file")
    return rows


def _problem_of(value: Any, default: str | None, where: str) -> str:
    name = str(value).strip() if value not in (None, "") else default
    if not name:
        raise ProblemError(f"{where}: no problem named; add a `problem` field or pass --problem NAME")
    return name


def _read_jsonl(path: Path, problem: str | None) -> list[tuple[str, NewPattern]]:
    out = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                raise ProblemError(f"{where}: not JSON ({err.msg})") from None
            if not isinstance(doc, dict):
                raise ProblemError(f"{where}: each line must be a JSON object")
            extra = sorted(set(doc) - {"problem", "instance", "expected", "source", "note"})
            if extra:
                raise ProblemError(f"{where}: unknown field(s) {', '.join(extra)}")
            if "instance" not in doc or "expected" not in doc:
                raise ProblemError(f"{where}: a pattern needs `instance` and `expected`")
            out.append((_problem_of(doc.get("problem"), problem, where),
                        _pattern(doc["instance"], doc["expected"], doc.get("source"), doc.get("note"), where)))
    return out


def _read_csv(path: Path, problem: str | None) -> list[tuple[str, NewPattern]]:
    out = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        label = "expected" if "expected" in header else dataset.LABEL if dataset.LABEL in header else None
        if label is None:
            raise ProblemError(f"{path}: needs an `expected` column (or the label column `{dataset.LABEL}`)")
        allowed = {*dataset.FEATURES, "expected", dataset.LABEL, "problem", "source", "note"}
        extra = sorted(set(header) - allowed)
        if extra:
            raise ProblemError(f"{path}: unknown column(s) {', '.join(extra)}")
        for number, row in enumerate(reader, 2):  # line 1 is the header
            where = f"{path}:{number}"
            instance = {k: v for k, v in row.items() if k in dataset.FEATURES}
            out.append((_problem_of(row.get("problem"), problem, where),
                        _pattern(instance, row[label], row.get("source"), row.get("note"), where)))
    return out
