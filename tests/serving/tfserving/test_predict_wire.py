"""`RowsRequestEncoder` writes the PredictRequest the protobuf runtime builds from the numpy columns of the same rows."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from serving.tfserving import protos
from serving.tfserving.predict_wire import RowsRequestEncoder, varint
from serving.tfserving.tensors import DT_DOUBLE, DT_FLOAT, DT_INT64, DT_STRING, to_tensor_proto


def _via_numpy(rows: list[dict], dtypes: dict[str, int], spec: protos.ModelSpec):
    """The request the array path builds (router.signature.rows_to_arrays, then to_tensor_proto)."""
    request = protos.PredictRequest()
    request.model_spec.CopyFrom(spec)
    for name, dtype in dtypes.items():
        values = [row[name] for row in rows]
        with np.errstate(over="ignore"):  # 1e39 as float32 is inf on both paths
            array = np.array([v.encode() for v in values], dtype=object) if dtype == DT_STRING else np.asarray(values, dtype=np.float32)
        request.inputs[name].CopyFrom(to_tensor_proto(array, protos.TensorProto))
    return request


def _spec() -> protos.ModelSpec:
    spec = protos.ModelSpec()
    spec.name, spec.signature_name = "churn", "serving_default"
    spec.version.value = 3
    return spec


def test_random_rows_give_the_request_of_the_numpy_path():
    rng = random.Random(17)
    spec = _spec()
    head = protos.PredictRequest()
    head.model_spec.CopyFrom(spec)
    # 20 inputs, long names and strings: entry lengths past one varint byte (128) are written too.
    dtypes = {"state": DT_STRING, "minutes": DT_FLOAT, "calls": DT_FLOAT, "plan": DT_STRING, "note_" + "x" * 150: DT_STRING,
              **{f"f{i}": DT_FLOAT for i in range(16)}}
    encoder = RowsRequestEncoder(head.SerializeToString(), dtypes)
    specials = [0, -0.0, 1e-45, 1e-50, 3.4028235e38, 1e39, -1e39, float("nan"), float("inf"), 2**60, 0.1]
    for batch in (1, 2, 7, 64, 300):
        rows = [{"state": rng.choice(["KS", "OH", "", "é\u00e9", "a\x00b"]),
                 "minutes": rng.choice(specials + [rng.uniform(-1e6, 1e6)] * 5),
                 "calls": rng.randint(-2**31, 2**31),
                 "plan": rng.choice(["yes", "no"]),
                 "note_" + "x" * 150: "y" * rng.choice([0, 1, 127, 128, 300]),
                 **{f"f{i}": rng.uniform(-10, 10) for i in range(16)}} for _ in range(batch)]
        encoded = protos.PredictRequest.FromString(encoder.encode(rows))
        expected = _via_numpy(rows, dtypes, spec)
        assert encoded.model_spec == expected.model_spec
        assert set(encoded.inputs) == set(expected.inputs)
        for name in dtypes:  # byte for byte, NaN included (message equality would say NaN != NaN)
            assert encoded.inputs[name].SerializeToString(deterministic=True) == expected.inputs[name].SerializeToString(deterministic=True)


@pytest.mark.parametrize("dtypes", [{"only": DT_FLOAT}, {"only": DT_STRING}, {"a": DT_STRING, "b": DT_FLOAT},
                                    {"s1": DT_STRING, "s2": DT_STRING, "f1": DT_FLOAT}])
def test_one_row_of_one_input_or_of_few_is_the_numpy_paths_request(dtypes):
    """One-row requests take their own way (no loop over the inputs): one input of a kind, and string entries met before."""
    spec = _spec()
    head = protos.PredictRequest()
    head.model_spec.CopyFrom(spec)
    encoder = RowsRequestEncoder(head.SerializeToString(), dtypes)
    for value in ("KS", "OH", "KS", "", "KS"):  # repeated values are answered from the encoder's entries
        for number in (0.1, -3, 1e39):
            row = {name: value if dtype == DT_STRING else number for name, dtype in dtypes.items()}
            encoded = protos.PredictRequest.FromString(encoder.encode([row]))
            expected = _via_numpy([row], dtypes, spec)
            assert set(encoded.inputs) == set(dtypes)
            for name in dtypes:
                assert encoded.inputs[name].SerializeToString(deterministic=True) == expected.inputs[name].SerializeToString(deterministic=True)


def test_an_output_filter_appended_as_its_own_field():
    encoder = RowsRequestEncoder(b"", {"x": DT_FLOAT})
    tail = protos.PredictRequest(output_filter=["prob"]).SerializeToString()
    request = protos.PredictRequest.FromString(encoder.encode([{"x": 1.5}]) + tail)
    assert list(request.output_filter) == ["prob"] and math.isclose(np.frombuffer(request.inputs["x"].tensor_content, np.float32)[0], 1.5)


@pytest.mark.parametrize("other", [DT_DOUBLE, DT_INT64])
def test_other_dtypes_are_left_to_the_message_path(other):
    assert RowsRequestEncoder(b"", {"a": DT_FLOAT, "b": other}).encode([{"a": 1.0, "b": 2}]) is None


@pytest.mark.parametrize("value", [1, 127, 128, 300, 16_383, 16_384, 2**31 - 1, 2**63 - 1])
def test_varints_as_protobuf_writes_them(value):
    assert protos.TensorShapeProto.Dim(size=value).SerializeToString() == b"\x08" + varint(value)
