"""The offline launch gate: one model version, once, on the pristine test split (the "Deep Learning Walkthrough" talk, step 9).

Accuracy is tested with a one-sided one-sample proportion z-test against the target fixed in the
experiment config; precision, recall, F1 and the confusion matrix are reported overall and per
configured slice, beside the legacy rule's numbers on the same rows. A test set is used once:
every run is recorded with the test set's fingerprint, and a second run on it is refused unless
the caller overrides that, in which case the record says the estimate is no longer honest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.config import GateSpec
from experiments.quality.slicing import slice_mask, slice_rule
from experiments.stats.proportion import one_proportion_ztest, proportion_confint
from experiments.store import GateRun, Store
from serving.legacy import rule as legacy_rule
from serving.tfserving import errors
from serving.tfserving.grpc_client import (
    PredictionClient,
    build_predict_request,
    parse_predict_response,
)
from serving.training import dataset
from serving.training.quality import classification_report
from serving.training.train import METADATA_DIR

OUTPUT = "probability"  # the signature's output (serving.training.export.OUTPUT; that module imports TensorFlow)
BATCH = 256  # rows per Predict call: well under the router's and server's batch limits
TEST_NAME = "one-sided one-sample proportion z-test (H1: accuracy > target)"


class GateError(errors.FailedPrecondition):
    """The gate cannot run or refuses to; the message says why and what to do instead."""


@dataclass(frozen=True)
class TestSet:
    """The pristine test split as read, with the fingerprint it was verified against."""

    path: Path
    frame: pd.DataFrame
    fingerprint: str


def load_test_set(data_dir: Path) -> TestSet:
    """Read `<data>/pristine/test.csv` and refuse it unless its fingerprint is the manifest's."""
    data_dir = Path(data_dir)
    path, manifest = dataset.split_path(data_dir, "test"), data_dir / "manifest.json"
    if not path.exists():
        raise GateError(f"no pristine test split at {path}; `modelramp train --out DIR` writes DIR/data")
    try:
        recorded = json.loads(manifest.read_text())["fingerprints"]["test"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise GateError(f"cannot verify {path}: {manifest} is missing or has no test fingerprint ({err})") from None
    frame = dataset.read_split(data_dir, "test")
    actual = dataset.fingerprint(frame)
    if actual != recorded:
        # A changed test file would make every earlier gate result incomparable, and may hide
        # rows that were edited after looking at the model's mistakes.
        raise GateError(f"test set {path} has fingerprint {actual} but {manifest} recorded {recorded}: "
                        "the file was modified; refusing to evaluate on it")
    return TestSet(path, frame, actual)


def check_training_split(models_dir: Path, model_name: str, version: int, test_set: TestSet) -> bool | None:
    """True if the version's training record names this test split; None when there is no record.

    A version trained on another split may have trained on these very rows (the pitfall of reusing a test set:
    Deep Learning Walkthrough talk, step 9).
    """
    record = Path(models_dir) / model_name / str(version) / METADATA_DIR / "training.json"
    if not record.exists():
        return None
    recorded = json.loads(record.read_text()).get("data", {}).get("fingerprints", {}).get("test")
    if recorded != test_set.fingerprint:
        raise GateError(f"{model_name} version {version} was trained with a split whose test fingerprint is "
                        f"{recorded}, not {test_set.fingerprint}: its training data may overlap this test set")
    return True


def describe_run(run: GateRun) -> str:
    verdict = run.result.get("verdict", "?")
    acc = run.result.get("model", {}).get("accuracy")
    return (f"gate run #{run.id} ({run.model_name} version {run.model_version}, {_iso(run.time)}, {verdict}"
            + (f", accuracy {acc:.4f})" if isinstance(acc, float) else ")"))


def check_unused(store: Store, test_set: TestSet, allow_reuse: bool) -> list[GateRun]:
    """Earlier uses of this test set; refuses when there are any and reuse is not allowed."""
    earlier = store.test_set_uses(test_set.fingerprint)
    if earlier and not allow_reuse:
        more = f" and {len(earlier) - 1} earlier run(s)" if len(earlier) > 1 else ""
        raise GateError(
            f"test set {test_set.fingerprint} ({test_set.path}) was already used by {describe_run(earlier[-1])}{more}; "
            "a second evaluation, of this or any candidate, no longer gives an honest accuracy estimate "
            "(a test set is used once). Collect a new pristine test set, or pass --allow-reuse "
            "to run anyway, recorded as not honest")
    return earlier


def score(client: PredictionClient, model_name: str, frame: pd.DataFrame,
          version: int | None = None, version_label: str | None = None) -> tuple[np.ndarray, int]:
    """Churn probabilities for every row from the model server, and the version that answered."""
    columns = dataset.to_columns(frame)
    scores: list[np.ndarray] = []
    served: int | None = None
    for start in range(0, len(frame), BATCH):
        chunk = {name: col[start:start + BATCH] for name, col in columns.items()}
        # After the first answer, pin its version: a version published mid-run must not mix two
        # models into one estimate.
        spec = {"version": served} if served is not None else {"version": version, "version_label": version_label}
        try:
            response = client.predict_raw(build_predict_request(model_name, chunk, **spec))
        except (errors.Unavailable, errors.DeadlineExceeded) as err:
            raise GateError(f"no model server answers at {client.target} (gRPC): {err}; start one with "
                            "`modelramp serve-model` or pass --start-server") from None
        except errors.UserFacingError as err:
            raise GateError(f"the model server at {client.target} cannot score {model_name}: {err}") from None
        outputs = parse_predict_response(response)
        if OUTPUT not in outputs:
            raise GateError(f"{model_name}'s answer has no {OUTPUT!r} output (it has {sorted(outputs)})")
        part = np.asarray(outputs[OUTPUT], dtype=np.float64).reshape(-1)
        if len(part) != len(chunk[dataset.FEATURES[0]]):
            raise GateError(f"{model_name} returned {len(part)} scores for {len(chunk[dataset.FEATURES[0]])} rows")
        served = served if served is not None else int(response.model_spec.version.value) or version
        scores.append(part)
    if served is None:
        raise GateError(f"no version of {model_name} answered: no rows to score, or the model server named no version")
    return np.concatenate(scores), served


def served_versions(client: PredictionClient, model_name: str) -> list[int]:
    """Versions of `model_name` the server reports AVAILABLE (GetModelStatus), ascending."""
    try:
        status = client.get_model_status(model_name)
    except (errors.Unavailable, errors.DeadlineExceeded) as err:
        raise GateError(f"no model server answers at {client.target} (gRPC): {err}; start one with "
                        "`modelramp serve-model` or pass --start-server") from None
    except errors.UserFacingError as err:
        raise GateError(f"the model server at {client.target} has no model {model_name!r}: {err}") from None
    return sorted(s["version"] for s in status if s["state"] == "AVAILABLE")


def legacy_scores(frame: pd.DataFrame) -> np.ndarray:
    """The legacy rule's 0/1 answers for every row (in process: it is a pure function)."""
    return np.array([legacy_rule.predict(row)["probability"] for row in dataset.to_instances(frame)])


def _report(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    report = classification_report(labels, scores)
    if report["n"]:
        low, high = proportion_confint(report["correct"], report["n"], alpha=0.05)
        report["accuracy_ci95"] = [float(low), float(high)]
    return report


def evaluate(frame: pd.DataFrame, scores: np.ndarray, baseline: np.ndarray, gate: GateSpec) -> dict[str, Any]:
    """The gate's statistics and verdict (pure: no server, no store)."""
    labels = frame[dataset.LABEL].to_numpy()
    model = _report(labels, scores)
    n, correct = model["n"], model["correct"]
    try:
        z, p = one_proportion_ztest(correct, n, gate.target_accuracy, "larger")
        variance = "observed"
    except ValueError:
        # Every row right (or wrong): the observed variance is zero, so use the target's (score test).
        z, p = one_proportion_ztest(correct, n, gate.target_accuracy, "larger", null_variance=True)
        variance = "target"
    passed = p < gate.alpha
    relation = "significantly above" if passed else "not significantly above"
    reason = (f"accuracy {model['accuracy']:.4f} ({correct}/{n}) is {relation} the target {gate.target_accuracy:g}: "
              f"z = {z:.3f}, one-sided p = {p:.3g} {'<' if passed else '>='} alpha {gate.alpha:g}")
    slices = []
    for s in gate.slices:
        mask = slice_mask(frame, s)
        slices.append({"name": s.name, "rule": slice_rule(s), "n": int(mask.sum()),
                       "model": _report(labels[mask], scores[mask]),
                       "baseline": _report(labels[mask], baseline[mask])})
    return {
        "verdict": "PASS" if passed else "FAIL", "passed": bool(passed), "reason": reason,
        "test": {"name": TEST_NAME, "target_accuracy": gate.target_accuracy, "alpha": gate.alpha,
                 "n": n, "successes": correct, "z": z, "p_value": p, "variance": variance},
        "model": model, "baseline": {"name": "legacy rule", **_report(labels, baseline)}, "slices": slices,
    }


def run_gate(store: Store, client: PredictionClient, test_set: TestSet, gate: GateSpec, model_name: str, *,
             version: int | None = None, version_label: str | None = None, allow_reuse: bool = False,
             models_dir: Path | None = None) -> tuple[dict[str, Any], GateRun]:
    """Check the test set is unused, score it once, evaluate, and record the run (also one use)."""
    earlier = check_unused(store, test_set, allow_reuse)
    scores, served = score(client, model_name, test_set.frame, version, version_label)
    trained_on_split = None if models_dir is None else check_training_split(models_dir, model_name, served, test_set)
    result = evaluate(test_set.frame, scores, legacy_scores(test_set.frame), gate)
    honest = not earlier
    result.update({
        "model_name": model_name, "model_version": served, "server": client.target,
        "requested": (f"version {version}" if version is not None
                      else f"label {version_label}" if version_label is not None else "latest"),
        "test_set": {"path": str(test_set.path), "fingerprint": test_set.fingerprint, "rows": len(test_set.frame)},
        "training_split_verified": trained_on_split,
        "honest": honest,
        "earlier_uses": [describe_run(r) for r in earlier],
    })
    if not honest:
        result["honesty_note"] = ("the test set had been used before (--allow-reuse): this estimate is optimistic "
                                  "and no longer an honest measure of accuracy on new data")
    result = json_ready(result)
    run = store.record_gate_run(test_set.fingerprint, model_name, served, result, honest,
                                time=datetime.now(timezone.utc))
    return {**result, "gate_run_id": run.id, "time": _iso(run.time)}, run


def json_ready(value: Any) -> Any:
    """NaN and infinities become null (AUC of a one-class slice), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
