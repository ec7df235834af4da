"""Export a trained network as a SavedModel that TF Serving loads: named inputs in, probability out.

The serving graph takes one tensor per feature (shape [batch]; strings for categories, float32
for numbers), applies the training encoding as TensorFlow ops (lookup tables, standardisation),
then the network's dense layers with their trained weights. Plain tf.Module code rather than
Keras's exporter: the signature is exactly what we declare, and TF Serving needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from serving.training.dataset import CATEGORICAL, NUMERIC
from serving.training.encoding import Encoder

OUTPUT = "probability"
SIGNATURE = "serving_default"
_ACTIVATIONS = {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "linear": tf.identity}


def input_specs() -> dict[str, tf.TensorSpec]:
    specs = {c: tf.TensorSpec([None], tf.string, name=c) for c in CATEGORICAL}
    specs.update({c: tf.TensorSpec([None], tf.float32, name=c) for c in NUMERIC})
    return specs


class ServingModule(tf.Module):
    """The exported model: encoding plus dense layers, as one `serving_default` signature."""

    def __init__(self, encoder: Encoder, dense_layers: list[tuple]):
        super().__init__()
        self.means = tf.constant([encoder.means[c] for c in NUMERIC], tf.float32)
        self.stds = tf.constant([encoder.stds[c] for c in NUMERIC], tf.float32)
        self.tables = {}
        self.depths = {}
        for c in CATEGORICAL:
            vocab = encoder.vocabularies[c]
            init = tf.lookup.KeyValueTensorInitializer(tf.constant(vocab), tf.range(len(vocab), dtype=tf.int64))
            # -1 for an unseen category: one_hot(-1) is all zeros, as in Encoder.transform.
            self.tables[c] = tf.lookup.StaticHashTable(init, default_value=-1)
            self.depths[c] = len(vocab)
        self.kernels = [tf.Variable(k, trainable=False, name=f"kernel_{i}") for i, (k, _, _) in enumerate(dense_layers)]
        self.biases = [tf.Variable(b, trainable=False, name=f"bias_{i}") for i, (_, b, _) in enumerate(dense_layers)]
        self.activations = [a for _, _, a in dense_layers]
        self.serve = tf.function(self._serve, input_signature=[input_specs()])

    def _serve(self, features):
        numbers = tf.stack([features[c] for c in NUMERIC], axis=1)
        numbers = tf.where(tf.math.is_nan(numbers), self.means, numbers)
        parts = [(numbers - self.means) / self.stds]
        for c in CATEGORICAL:
            parts.append(tf.one_hot(self.tables[c].lookup(features[c]), self.depths[c], dtype=tf.float32))
        x = tf.concat(parts, axis=1)
        for kernel, bias, activation in zip(self.kernels, self.biases, self.activations, strict=True):
            x = _ACTIVATIONS[activation](tf.matmul(x, kernel) + bias)
        return {OUTPUT: tf.reshape(x, [-1])}


def dense_layers_of(keras_model) -> list[tuple]:
    """(kernel, bias, activation name) of each Dense layer, in order."""
    layers = []
    for layer in keras_model.layers:
        weights = layer.get_weights()
        if not weights:
            continue  # Dropout, Input: no weights, identity at inference
        activation = layer.get_config().get("activation", "linear")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"layer {layer.name}: activation {activation!r} is not exportable")
        layers.append((weights[0], weights[1], activation))
    return layers


def export_saved_model(encoder: Encoder, keras_model, out_dir: Path) -> Path:
    """Write the SavedModel into `out_dir` (a `<base>/<name>/<version>/` folder)."""
    module = ServingModule(encoder, dense_layers_of(keras_model))
    tf.saved_model.save(module, str(out_dir), signatures={SIGNATURE: module.serve.get_concrete_function()})
    return Path(out_dir)
