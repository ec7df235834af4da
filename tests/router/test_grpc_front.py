"""The gRPC front in-process against in-test backends, called with TensorFlow-free TF Serving protos."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from router.core import Router
from router.grpc import create_server
from router.signing import Signer
from serving.tfserving import protos
from serving.tfserving.grpc_client import (
    build_predict_request,
    parse_predict_response,
    parse_signature_defs,
)
from serving.tfserving.tensors import to_tensor_proto
from tests.router.fakes import columns, fake_factory, make_config


async def with_server(body, **config):
    router = Router(make_config(0.5, **config), signer=Signer(b"k"), backend_factory=fake_factory)
    await router.refresh_metadata()
    server, port = create_server(router, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    predict = channel.unary_unary(protos.PREDICT_METHOD, request_serializer=protos.PredictRequest.SerializeToString,
                                  response_deserializer=protos.PredictResponse.FromString)
    metadata = channel.unary_unary(protos.GET_MODEL_METADATA_METHOD, request_serializer=protos.GetModelMetadataRequest.SerializeToString,
                                   response_deserializer=protos.GetModelMetadataResponse.FromString)
    try:
        return await body(router, predict, metadata)
    finally:
        await channel.close()
        await server.stop(0)


def test_predict_with_unit_id_and_trailing_metadata():
    async def body(router, predict, _):
        call = predict(build_predict_request("churn", columns(3)), metadata=(("x-unit-id", "user-9"),), timeout=5)
        response = await call
        trailing = dict(await call.trailing_metadata())
        return router, response, trailing

    router, response, trailing = asyncio.run(with_server(body))
    arm = router.assign("user-9")
    assert trailing["x-modelramp-arm"] == arm
    assert router.signer.verify(trailing["x-modelramp-outcome-id"]).arm == arm
    out = parse_predict_response(response)["probability"]
    assert out.dtype == np.float32 and out.shape == (3,)
    assert response.model_spec.name == "churn" and response.model_spec.version.value == 2


@pytest.mark.parametrize("mutate, code", [
    (lambda r: r.inputs.pop("state"), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda r: r.inputs["total_day_minutes"].CopyFrom(to_tensor_proto(np.zeros(1, np.float64), protos.TensorProto)),
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda r: r.inputs["bogus"].CopyFrom(to_tensor_proto(np.zeros(1, np.float32), protos.TensorProto)), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda r: r.inputs["state"].tensor_shape.dim[0].__setattr__("size", 5), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda r: r.inputs["state"].string_val.extend([b"x" * 4000]), grpc.StatusCode.INVALID_ARGUMENT),
    (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND),
    (lambda r: setattr(r.model_spec, "signature_name", "nope"), grpc.StatusCode.NOT_FOUND),
])
def test_bad_requests_get_status_codes_and_are_counted(mutate, code):
    async def body(router, predict, _):
        request = build_predict_request("churn", columns(1))
        mutate(request)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await predict(request, timeout=5)
        return router, err.value.code()

    router, got = asyncio.run(with_server(body, router={"max_body_bytes": 2048}))
    assert got == code
    total = sum(router.metrics.registry.get_sample_value("modelramp_requests_total",
                {"experiment": "churn-test", "arm": a, "protocol": "grpc", "code": code.name}) or 0 for a in ("legacy", "model"))
    assert total == 1


def test_get_model_metadata():
    async def body(router, _, metadata):
        request = protos.GetModelMetadataRequest()
        request.model_spec.name = "churn"
        request.metadata_field.append("signature_def")
        response = await metadata(request, timeout=5)
        request.model_spec.name = "other"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await metadata(request, timeout=5)
        return response, err.value.code()

    response, code = asyncio.run(with_server(body))
    sig = parse_signature_defs(response)["serving_default"]
    assert sig["inputs"]["state"] == {"dtype": "DT_STRING", "shape": [-1]}
    assert response.model_spec.version.value == 2 and code == grpc.StatusCode.NOT_FOUND


def test_request_id_and_trace_context_reach_the_backend_and_come_back():
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def body(router, predict, _):
        call = predict(build_predict_request("churn", columns(1)), timeout=5,
                       metadata=(("x-unit-id", "user-9"), ("x-request-id", "client-7"), ("traceparent", traceparent)))
        await call
        return router, dict(await call.trailing_metadata())

    router, trailing = asyncio.run(with_server(body))
    assert trailing["x-request-id"] == "client-7"
    backend = router.state.backends[trailing["x-modelramp-arm"]]
    assert backend.forwarded[-1] == {"x-request-id": "client-7", "traceparent": traceparent}


def test_tfserving_grpc_backend_sends_forwarded_headers_as_metadata():
    """A router's model backend (TfServingGrpcBackend) pointed at another router's gRPC front: the headers travel as metadata."""
    from router.backends import PredictCall, forwarding
    from router.backends.tfserving_grpc import TfServingGrpcBackend
    from router.config import TfServingGrpcSpec

    async def go():
        router = Router(make_config(1.0), signer=Signer(b"k"), backend_factory=fake_factory)
        await router.refresh_metadata()
        server, port = create_server(router, "127.0.0.1:0")
        await server.start()
        backend = TfServingGrpcBackend(TfServingGrpcSpec(kind="tfserving_grpc", target=f"127.0.0.1:{port}", model_name="churn"))
        try:
            with forwarding((("x-request-id", "r-1"), ("traceparent", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"))):
                await backend.predict(PredictCall(columns(1)), 5.0)
            await backend.predict(PredictCall(columns(1)), 5.0)
        finally:
            await backend.close()
            await server.stop(0)
        return router.state.backends["model"].forwarded

    seen = asyncio.run(go())
    assert seen[-2] == {"x-request-id": "r-1", "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    assert seen[-1] == {}


def test_an_error_echoes_the_request_id_too():
    async def body(router, predict, _):
        request = build_predict_request("churn", columns(1))
        request.inputs.pop("state")
        call = predict(request, timeout=5, metadata=(("x-request-id", "client-err"),))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        return raised.value

    err = asyncio.run(with_server(body))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.trailing_metadata() or ())["x-request-id"] == "client-err"
