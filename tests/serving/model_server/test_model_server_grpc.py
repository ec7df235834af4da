"""gRPC conformance: driven only through the official tensorflow_serving.apis protos and stubs."""

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.training import dataset
from tests.serving.model_server.conformance import external_target


@pytest.fixture(scope="module")
def channel(request, models_dir):
    target = external_target()
    ch = grpc.insecure_channel(target[0] if target else request.getfixturevalue("model_server").grpc_target)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def rows(models_dir):
    return dataset.read_split(models_dir / "data", "validation").head(5)


def make_tensor(values, dtype) -> tensor_pb2.TensorProto:
    t = tensor_pb2.TensorProto(dtype=dtype)
    t.tensor_shape.dim.add().size = len(values)
    if dtype == types_pb2.DT_STRING:
        t.string_val.extend(v.encode() for v in values)
    else:
        t.float_val.extend(float(v) for v in values)
    return t


def predict_request(rows, **spec) -> predict_pb2.PredictRequest:
    req = predict_pb2.PredictRequest()
    req.model_spec.name = spec.pop("name", "churn")
    if "version" in spec:
        req.model_spec.version.value = spec.pop("version")
    req.model_spec.signature_name = "serving_default"
    for c in dataset.CATEGORICAL:
        req.inputs[c].CopyFrom(make_tensor(rows[c].tolist(), types_pb2.DT_STRING))
    for c in dataset.NUMERIC:
        req.inputs[c].CopyFrom(make_tensor(rows[c].tolist(), types_pb2.DT_FLOAT))
    return req


def test_predict_returns_probabilities_for_the_latest_version(channel, rows):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    resp = stub.Predict(predict_request(rows), timeout=10)
    assert resp.model_spec.name == "churn" and resp.model_spec.version.value == 2
    out = resp.outputs["probability"]
    assert out.dtype == types_pb2.DT_FLOAT and [d.size for d in out.tensor_shape.dim] == [5]
    probs = np.frombuffer(out.tensor_content, np.float32) if out.tensor_content else np.array(out.float_val)
    assert ((probs >= 0) & (probs <= 1)).all()
    pinned = stub.Predict(predict_request(rows, version=1), timeout=10)
    assert pinned.model_spec.version.value == 1
    assert pinned.outputs["probability"].tensor_content != out.tensor_content  # a different model answered
    labelled = predict_request(rows)
    labelled.model_spec.version_label = "stable"
    assert stub.Predict(labelled, timeout=10).model_spec.version.value == 1


def test_metadata_and_status(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "churn"
    resp = stub.GetModelMetadata(req, timeout=10)
    sigs = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigs)
    sig = sigs.signature_def["serving_default"]
    assert set(sig.inputs) == set(dataset.FEATURES) and set(sig.outputs) == {"probability"}
    assert sig.inputs["state"].dtype == types_pb2.DT_STRING and sig.inputs["total_day_minutes"].dtype == types_pb2.DT_FLOAT

    status_req = get_model_status_pb2.GetModelStatusRequest()
    status_req.model_spec.name = "churn"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_req, timeout=10)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, available), (2, available)]


@pytest.mark.parametrize("mutate, code, words", [
    (lambda r: r.inputs["bogus"].CopyFrom(make_tensor([1.0] * 5, types_pb2.DT_FLOAT)), grpc.StatusCode.INVALID_ARGUMENT, "bogus"),
    (lambda r: r.inputs.pop("state"), grpc.StatusCode.INVALID_ARGUMENT, "state"),
    (lambda r: r.inputs["total_day_minutes"].CopyFrom(make_tensor(["x"] * 5, types_pb2.DT_STRING)), grpc.StatusCode.INVALID_ARGUMENT,
     "total_day_minutes"),
    (lambda r: r.inputs["total_day_minutes"].CopyFrom(make_tensor([1.0] * 4, types_pb2.DT_FLOAT)), grpc.StatusCode.INVALID_ARGUMENT, "batch"),
    (lambda r: r.inputs["total_day_minutes"].tensor_shape.dim.add(size=1), grpc.StatusCode.INVALID_ARGUMENT, "total_day_minutes"),
    (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    (lambda r: r.model_spec.version.__setattr__("value", 7), grpc.StatusCode.NOT_FOUND, "7"),
    (lambda r: setattr(r.model_spec, "version_label", "nightly"), grpc.StatusCode.NOT_FOUND, "nightly"),
    (lambda r: r.output_filter.append("logits"), grpc.StatusCode.INVALID_ARGUMENT, "logits"),
])
def test_errors_use_tf_serving_codes(channel, rows, mutate, code, words):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_request(rows)
    mutate(req)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(req, timeout=10)
    assert info.value.code() == code
    details = info.value.details()
    assert details is not None and words in details


def test_output_filter_names_the_outputs_returned(channel, rows):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_request(rows)
    req.output_filter.extend(["probability"] * 3)  # repeats ask for the same output once
    resp = stub.Predict(req, timeout=10)
    assert set(resp.outputs) == {"probability"} and len(resp.outputs["probability"].float_val or
                                                         resp.outputs["probability"].tensor_content) > 0
