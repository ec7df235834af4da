"""The servable's session calls: one per signature and set of outputs, whatever the filter's order or repeats."""

from __future__ import annotations

import numpy as np

from serving.model_server.servable import Servable
from serving.training import dataset


def test_repeated_or_reordered_output_filters_reuse_one_session_callable(models_dir):
    servable = Servable("churn", 2, models_dir / "churn" / "2")
    inputs = dataset.to_columns(dataset.read_split(models_dir / "data", "validation").head(3))
    _, plain = servable.predict(None, inputs)
    for output_filter in (["probability"], ["probability"] * 50, ["probability", "probability"]):
        _, filtered = servable.predict(None, inputs, output_filter)
        assert list(filtered) == ["probability"]
        np.testing.assert_array_equal(filtered["probability"], plain["probability"])
    # Each distinct key registers a callable in the TensorFlow session; a client must not grow them.
    assert len(servable._callables) == 1
