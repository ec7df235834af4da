"""A legacy answer becomes the model's outputs; the numpy-free path writes what the array path writes."""

from __future__ import annotations

import random

import numpy as np
import pytest

from router.backends import ColumnOutputs, PredictCall
from router.backends.base import BadResponse
from router.backends.legacy_mapping import default_outputs as _outputs
from router.signature import TensorSpec
from serving.tfserving.rest_format import format_columns, format_predict_response
from serving.tfserving.tensors import DT_DOUBLE, DT_FLOAT, DT_INT64


def call_with_outputs(**dtypes: int) -> PredictCall:
    return PredictCall(rows=[{"x": 1.0}], outputs={name: TensorSpec(dtype, (-1,)) for name, dtype in dtypes.items()})


def answer(*predictions: dict) -> dict:
    return {"predictions": list(predictions)}


def test_random_scores_are_written_as_the_array_path_writes_them():
    rng = random.Random(3)
    call = call_with_outputs(probability=DT_FLOAT, score=DT_DOUBLE)
    for _ in range(500):
        batch = rng.randrange(1, 4)
        preds = [{"probability": rng.choice([rng.random(), rng.randrange(2), 1e-30, 123456789.123]),
                  "score": rng.uniform(-1e9, 1e9)} for _ in range(batch)]
        outputs = _outputs(answer(*preds), call, batch)
        assert isinstance(outputs, ColumnOutputs)
        arrays = {"probability": np.asarray([p["probability"] for p in preds], dtype=np.float32),
                  "score": np.asarray([p["score"] for p in preds], dtype=np.float64)}
        for row_format in (True, False):
            assert format_columns(outputs.columns, row_format) == format_predict_response(arrays, row_format)
        for name, array in arrays.items():  # arrays, when something asks, hold the same values
            assert outputs[name].dtype == array.dtype
            np.testing.assert_array_equal(outputs[name], array)


@pytest.mark.parametrize("value", [True, "0.5", None, float("nan"), float("inf"), 1e39, 10**400])
def test_values_the_fast_path_does_not_take_go_to_the_array_path(value):
    call = call_with_outputs(probability=DT_FLOAT)
    try:
        outputs = _outputs(answer({"probability": value}), call, 1)
    except BadResponse:
        return  # refused by the array path, with its message
    assert not isinstance(outputs, ColumnOutputs)


def test_integer_outputs_use_the_array_path():
    outputs = _outputs(answer({"count": 3}), call_with_outputs(count=DT_INT64), 1)
    assert not isinstance(outputs, ColumnOutputs) and outputs["count"].dtype == np.int64


def test_an_integer_too_large_for_a_float_is_a_bad_response_not_a_crash():
    with pytest.raises(BadResponse):
        _outputs(answer({"probability": 10**400}), call_with_outputs(probability=DT_FLOAT), 1)


def test_a_missing_output_is_a_bad_response():
    with pytest.raises(BadResponse, match="lack the model output 'probability'"):
        _outputs(answer({"other": 0.5}), call_with_outputs(probability=DT_FLOAT), 1)
