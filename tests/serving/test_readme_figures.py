"""The figures README.md quotes about the models come from the models the session trains.

Training is deterministic for a seed, so the table's validation accuracies, the gate's test-set
accuracies and "about 4.5 points worse" live are recomputed here from the trained SavedModels
and the data splits; an edit of the recipes that moves a figure fails this until the README says
what the training gives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from serving.legacy import rule as legacy_rule
from serving.training import dataset
from serving.training.quality import THRESHOLD

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _table_accuracy(row: str) -> float:
    match = re.search(rf"^\| {re.escape(row)} \|[^|]*\| (0\.\d{{3}}) \|", README, re.MULTILINE)
    assert match, f"README's model table has no row {row!r} with a validation accuracy"
    return float(match.group(1))


def _legacy_accuracy(frame) -> float:
    return float(np.mean([legacy_rule.predict(r)["churn"] == bool(y)
                          for r, y in zip(dataset.to_instances(frame), frame[dataset.LABEL], strict=True)]))


@pytest.fixture(scope="module")
def accuracy(models_dir):
    """Accuracy of each trained version's SavedModel on a split (as the model server would score it)."""
    import tensorflow as tf

    signatures = {v: tf.saved_model.load(str(models_dir / dataset.MODEL_NAME / str(v))).signatures["serving_default"]
                  for v in (1, 2)}

    def of(version: int, split: str) -> float:
        frame = dataset.read_split(models_dir / "data", split)
        columns = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in dataset.to_columns(frame).items()}
        scores = signatures[version](**columns)["probability"].numpy().ravel()
        return float(np.mean((scores >= THRESHOLD) == frame[dataset.LABEL].to_numpy().astype(bool)))

    return of


def test_the_model_table_is_what_training_gives(models_dir):
    for version in (1, 2):
        metrics = json.loads((models_dir / dataset.MODEL_NAME / str(version) / "modelramp" / "metrics.json").read_text())
        assert _table_accuracy(str(version)) == round(metrics["validation"]["accuracy"], 3), f"version {version}"
    validation = dataset.read_split(models_dir / "data", "validation")
    assert _table_accuracy("legacy") == round(_legacy_accuracy(validation), 3)


def test_the_gate_figures_and_the_live_gap_are_what_the_models_give(models_dir, accuracy):
    for version in (1, 2):
        match = re.search(rf"`--candidate {version}`[^\n]*?passes the gate \((0\.\d{{3}})", README)
        assert match, f"README does not quote candidate {version}'s gate accuracy"
        assert float(match.group(1)) == round(accuracy(version, "test"), 3), f"candidate {version}'s gate accuracy"
    live = dataset.read_split(models_dir / "data", "live")
    gap = 100 * (accuracy(1, "live") - _legacy_accuracy(live))
    match = re.search(r"live it is about (\d+(?:\.\d)?) points worse than the\s+legacy rule", README)
    assert match, "README does not say how much worse candidate 1 is live"
    assert abs(-gap - float(match.group(1))) <= 0.5, f"candidate 1 is {gap:+.1f} points against legacy on the live split"
