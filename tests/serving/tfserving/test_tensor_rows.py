"""`rows_into_tensor_protos` writes what `to_tensor_proto` writes for the numpy columns of the same rows."""

from __future__ import annotations

import random

import numpy as np
import pytest

from serving.tfserving import protos
from serving.tfserving.tensors import (
    DT_DOUBLE,
    DT_FLOAT,
    DT_INT64,
    DT_STRING,
    rows_into_tensor_protos,
    to_tensor_proto,
)


def _via_numpy(rows: list[dict], dtypes: dict[str, int]):
    """The request inputs the array path builds (router.backends.base.rows_to_arrays, then to_tensor_proto)."""
    request = protos.PredictRequest()
    for name, dtype in dtypes.items():
        values = [row[name] for row in rows]
        with np.errstate(over="ignore"):  # 1e39 as float32 is inf on both paths
            array = np.array([v.encode() for v in values], dtype=object) if dtype == DT_STRING else np.asarray(values, dtype=np.float32)
        request.inputs[name].CopyFrom(to_tensor_proto(array, protos.TensorProto))
    return request


def test_random_rows_give_the_same_tensors_as_the_numpy_path():
    rng = random.Random(17)
    dtypes = {"state": DT_STRING, "minutes": DT_FLOAT, "calls": DT_FLOAT, "plan": DT_STRING}
    specials = [0, -0.0, 1e-45, 1e-50, 3.4028235e38, 1e39, -1e39, float("nan"), float("inf"), 2**60, 0.1]
    for batch in (1, 2, 7, 64):
        rows = [{"state": rng.choice(["KS", "OH", "", "é\u00e9", "a\x00b"]),
                 "minutes": rng.choice(specials + [rng.uniform(-1e6, 1e6)] * 5),
                 "calls": rng.randint(-2**31, 2**31),
                 "plan": rng.choice(["yes", "no"])} for _ in range(batch)]
        request = protos.PredictRequest()
        assert rows_into_tensor_protos(request.inputs, rows, dtypes)
        expected = _via_numpy(rows, dtypes)
        for name in dtypes:  # byte for byte, NaN included (message equality would say NaN != NaN)
            assert request.inputs[name].SerializeToString(deterministic=True) == expected.inputs[name].SerializeToString(deterministic=True)


@pytest.mark.parametrize("other", [DT_DOUBLE, DT_INT64])
def test_other_dtypes_are_left_to_the_numpy_path(other):
    request = protos.PredictRequest()
    assert not rows_into_tensor_protos(request.inputs, [{"a": 1.0, "b": 2}], {"a": DT_FLOAT, "b": other})
    assert len(request.inputs) == 0  # nothing half-written
