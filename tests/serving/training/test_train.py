"""Training: reproducible, exported exactly as trained, with a baseline and metrics beside it."""

import json

import numpy as np
import pytest

from serving.legacy import rule as legacy_rule
from serving.training import dataset
from serving.training.importance import permutation_importance
from serving.training.train import RECIPES, Recipe, check_numerics, train

TINY = Recipe("mlp", (8,), epochs=3, learning_rate=0.01)


def test_same_seed_gives_the_same_model_metrics(tmp_path):
    a = train(tmp_path / "a", 1, seed=3, recipe=TINY, log=lambda *_: None)
    b = train(tmp_path / "b", 1, seed=3, recipe=TINY, log=lambda *_: None)
    c = train(tmp_path / "c", 1, seed=4, recipe=TINY, log=lambda *_: None)
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics  # the seed matters, so the equality above is not vacuous


def test_export_layout_and_metadata(models_dir):
    for version in RECIPES:
        vdir = models_dir / dataset.MODEL_NAME / str(version)
        assert (vdir / "saved_model.pb").exists() and (vdir / "variables").is_dir()
        training = json.loads((vdir / "modelramp" / "training.json").read_text())
        manifest = json.loads((models_dir / "data" / "manifest.json").read_text())
        assert training["data"]["fingerprints"] == manifest["fingerprints"]
        assert training["recipe"]["architecture"] == RECIPES[version].architecture
        baseline = json.loads((vdir / "modelramp" / "baseline.json").read_text())
        assert set(baseline["features"]) == set(dataset.FEATURES)
        day = baseline["features"]["total_day_minutes"]
        assert day["kind"] == "numeric" and sum(day["bin_counts"]) == baseline["rows"] == 2500
        assert len(day["bin_counts"]) == len(day["bin_edges"]) + 1
        state = baseline["features"]["state"]
        assert state["kind"] == "categorical" and abs(sum(state["frequencies"].values()) - 1) < 1e-9
        assert sum(baseline["prediction"]["bin_counts"]) == 500
    assert not list((models_dir / dataset.MODEL_NAME).glob(".staging*"))


def test_served_graph_encodes_exactly_like_training(models_dir):
    """Training-serving skew check: the SavedModel's own encoding equals the numpy encoding."""
    import tensorflow as tf

    from serving.training.encoding import Encoder

    vdir = models_dir / dataset.MODEL_NAME / "2"
    enc = Encoder(**json.loads((vdir / "modelramp" / "training.json").read_text())["encoder"])
    frame = dataset.read_split(models_dir / "data", "validation")
    frame.loc[0, "state"] = "ZZ"  # unseen category
    frame.loc[1, "total_day_minutes"] = np.nan  # missing number
    loaded = tf.saved_model.load(str(vdir))
    served = loaded.signatures["serving_default"](**{k: tf.constant(v.astype(str) if v.dtype == object else v)
                                                     for k, v in dataset.to_columns(frame).items()})["probability"].numpy()
    x = enc.transform(frame)
    h = x
    layers = list(zip(loaded.kernels, loaded.biases, strict=True))
    for i, (kernel, bias) in enumerate(layers):  # hidden layers are ReLU, the last one sigmoid
        h = h @ kernel.numpy() + bias.numpy()
        h = 1 / (1 + np.exp(-h)) if i == len(layers) - 1 else np.maximum(h, 0)
    np.testing.assert_allclose(served, h.ravel(), rtol=1e-4, atol=1e-6)


def test_candidates_and_legacy_differ_measurably(models_dir):
    """v2 beats the legacy rule and v1 does not, on validation data (what the demo relies on)."""
    val = dataset.read_split(models_dir / "data", "validation")
    legacy_acc = np.mean([legacy_rule.predict(r)["churn"] == bool(y)
                          for r, y in zip(dataset.to_instances(val), val[dataset.LABEL], strict=True)])
    acc = {v: json.loads((models_dir / "churn" / str(v) / "modelramp" / "metrics.json").read_text())["validation"]["accuracy"]
           for v in RECIPES}
    assert acc[2] > legacy_acc + 0.02, (acc, legacy_acc)
    assert acc[1] < legacy_acc, (acc, legacy_acc)


def test_a_diverged_training_run_is_not_published(tmp_path):
    with pytest.raises(ValueError, match="training diverged: the loss is nan at epoch 1"):
        train(tmp_path, 9, recipe=Recipe("mlp", (32,), epochs=3, learning_rate=1e25), log=lambda _: None)
    assert not any((tmp_path / "churn").iterdir()), "no version and no staging folder is left"


def test_check_numerics_refuses_nan_scores():
    check_numerics([0.5, 0.4], np.array([0.1, 0.9]))
    with pytest.raises(ValueError, match="scores 1 validation row"):
        check_numerics([0.5], np.array([0.1, np.inf]))


def test_permutation_importance_finds_the_features_a_model_uses(models_dir):
    frame = dataset.read_split(models_dir / "data", "validation")

    def score(f):  # a "model" that reads two features only
        return ((f["number_customer_service_calls"] >= 4) | (f["total_day_minutes"] > 265)).to_numpy(float)

    result = permutation_importance(score, frame, seed=1)
    used = {"number_customer_service_calls", "total_day_minutes"}
    assert set(result["features"]) == set(dataset.FEATURES)
    assert set(result["not_beneficial"]) == set(dataset.FEATURES) - used
    for name in used:
        assert result["features"][name]["auc_drop"] > 0.02 and result["features"][name]["accuracy_drop"] > 0


def test_each_version_records_its_feature_importance(models_dir):
    record = json.loads((models_dir / "churn" / "2" / "modelramp" / "importance.json").read_text())
    assert set(record["features"]) == set(dataset.FEATURES)
    # The strongest churn signals of this data set matter to the trained network.
    for name in ("number_customer_service_calls", "international_plan"):
        assert name not in record["not_beneficial"] and record["features"][name]["auc_drop"] > 0.01
