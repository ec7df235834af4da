"""Experiment tracking: what produced each model version, and how it did at the gate and live.

Kept as data, not notebooks: the version folder's `modelramp/` records (written by `modelramp
train`: code version, data fingerprints, recipe, seed, training and validation metrics) joined with
the audit database (gate runs of the version, and ramp decisions of experiments whose candidate it
was). Anything missing is reported as missing, never guessed: a version without training.json, a
decision recorded before candidates were, a candidate pinned by label rather than number.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from experiments.store import DecisionRecord, GateRun, Store

METADATA_DIR = "modelramp"  # serving.training.train.METADATA_DIR; not imported, it pulls in pandas and the encoder


def version_dirs(models_dir: Path, model_name: str | None = None) -> list[tuple[str, int, Path]]:
    """(model, version, folder) for every numeric version folder under `models_dir/<model>/`."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ValueError(f"no model folder {models_dir}; `modelramp train --out DIR` writes one")
    names = [model_name] if model_name else sorted(d.name for d in models_dir.iterdir() if d.is_dir())
    found = []
    for name in names:
        base = models_dir / name
        if base.is_dir():
            found += [(name, int(d.name), d) for d in base.iterdir() if d.is_dir() and d.name.isdigit()]
    return sorted(found, key=lambda t: (t[0], t[1]))


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.exists():
        problems.append(f"no {path.name}")
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{path.name} unreadable: {err}")
        return None
    if not isinstance(doc, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return doc


def training_record(folder: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """What produced the version (training.json) and its metrics (metrics.json), and what is missing."""
    problems: list[str] = []
    meta = folder / METADATA_DIR
    training = _read_json(meta / "training.json", problems)
    metrics = _read_json(meta / "metrics.json", problems)
    if training is not None:
        data = training.get("data") or {}
        training = {"code_version": training.get("code_version"), "trained_at": training.get("trained_at"),
                    "seed": training.get("seed"), "recipe": training.get("recipe"),
                    "data": {"source": data.get("source"), "split_seed": data.get("split_seed"),
                             "fingerprints": data.get("fingerprints") or {}},
                    "tensorflow": training.get("tensorflow")}
        if not training["code_version"]:
            problems.append("no code version recorded (trained outside a git checkout)")
    if metrics is not None:
        metrics = {split: metrics.get(split) for split in ("train", "validation")}
    return training, metrics, problems


def gate_summary(run: GateRun) -> dict[str, Any]:
    model = run.result.get("model") or {}
    return {"id": run.id, "time": _iso(run.time), "verdict": run.result.get("verdict"),
            "accuracy": model.get("accuracy"), "n": model.get("n"), "honest": run.honest,
            "test_set_fingerprint": run.test_set_fingerprint}


def _rate(arm: dict[str, Any] | None) -> float | None:
    if not arm:
        return None
    judged = arm.get("successes", 0) + arm["failures"] if "failures" in arm else arm.get("exposures", 0)
    return arm.get("successes", 0) / judged if judged else None


def live_summary(experiment: str, records: list[DecisionRecord]) -> dict[str, Any]:
    """One experiment that had the version as candidate: how far it got and where it stands."""
    applied = [r for r in records if r.applied]
    outcome = next((("shipped" if r.decision == "ship" else "rolled back") for r in reversed(applied)
                    if r.decision in ("ship", "rollback")), "in progress")
    weights = [w.get("model", 0.0) for r in records for w in (r.weights_before, r.weights_after) if w]
    counts = next((r.counts for r in reversed(records) if r.counts), None) or {}
    last = records[-1]
    return {"experiment": experiment, "outcome": outcome, "decisions": len(records),
            "first": _iso(records[0].time), "last": _iso(last.time),
            "last_decision": last.decision, "last_reason": last.reason,
            "max_model_weight": max(weights) if weights else None,
            "applied": [{"time": _iso(r.time), "decision": r.decision, "weights_after": r.weights_after} for r in applied],
            "success_rate": {arm: _rate(counts.get(arm)) for arm in ("legacy", "model")},
            "exposures": {arm: (counts.get(arm) or {}).get("exposures") for arm in ("legacy", "model")}}


def attribute(decisions: Iterable[DecisionRecord]) -> tuple[dict[tuple[str, int], dict[str, list]], list[dict]]:
    """Decisions grouped by (model, version) then experiment; and the experiments no version can claim."""
    by_version: dict[tuple[str, int], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    unattributed: dict[tuple[str, str], int] = defaultdict(int)
    for d in decisions:
        cand = (d.statistics or {}).get("candidate")
        if not cand:
            why = "the decision does not record its candidate (recorded before candidates were tracked)"
        elif cand.get("version") is not None:
            by_version[(cand.get("model_name"), int(cand["version"]))][d.experiment].append(d)
            continue
        elif cand.get("version_label"):
            why = f"the candidate was pinned by label {cand['version_label']!r}, not a version number"
        else:
            why = "the candidate was the server's latest version (not pinned)"
        unattributed[(d.experiment, why)] += 1
    return by_version, [{"experiment": e, "decisions": n, "why": why} for (e, why), n in sorted(unattributed.items())]


def collect(models_dir: Path, store: Store | None, model_name: str | None = None,
            version: int | None = None) -> dict[str, Any]:
    """One record per version (optionally one model, one version); `store` None: no audit database."""
    found = version_dirs(models_dir, model_name)
    if version is not None:
        chosen = [f for f in found if f[1] == version]
        if not chosen:
            raise ValueError(f"no version {version} under {models_dir}; versions are "
                             f"{', '.join(f'{m} {v}' for m, v, _ in found) or 'none'}")
        found = chosen
    gate_runs = store.gate_runs() if store is not None else []
    by_version, unattributed = attribute(store.decisions() if store is not None else [])
    records = []
    for name, number, folder in found:
        training, metrics, problems = training_record(folder)
        if not (folder / "saved_model.pb").exists():
            problems.append("no saved_model.pb (not servable)")
        gates = [gate_summary(r) for r in gate_runs if r.model_name == name and r.model_version == str(number)]
        live = [live_summary(e, recs) for e, recs in sorted(by_version.get((name, number), {}).items())]
        if store is not None and not gates:
            problems.append("no gate run")
        if store is not None and not live:
            problems.append("no live experiment")
        records.append({"model": name, "version": number, "path": str(folder), "training": training,
                        "metrics": metrics, "gate_runs": gates if store is not None else None,
                        "live": live if store is not None else None, "missing": problems})
    return {"models": str(models_dir), "versions": records, "unattributed_live": unattributed}


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def finite(value: Any) -> Any:
    """NaN and infinities (a one-class AUC in a hand-edited metrics.json) become null, so --json stays JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value
