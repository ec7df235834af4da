"""gRPC clients for TF Serving's PredictionService and ModelService, without TensorFlow.

`PredictionClient` (blocking, for the gate and tools) and `AsyncPredictionClient` (grpc.aio, for
the router) share request building and response parsing. Each keeps one pooled channel per
target; every call has a deadline; only UNAVAILABLE (the request never reached a server) is
retried, because a call that timed out may still be running and its deadline is already spent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from serving.tfserving import errors, protos
from serving.tfserving.tensors import dtype_name, from_tensor_proto, to_tensor_proto

CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # retries are ours, and deliberate
    # Every address the target resolves to, call by call. gRPC's default (pick_first) sends a
    # channel's every call to one address: behind a Kubernetes headless Service (dns:///name:port,
    # one A record per TF Serving pod) each router would load one pod with its whole model arm.
    # With one address (a ClusterIP, loopback) round_robin is pick_first.
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
)
RETRY_BACKOFF_S = 0.05


def build_predict_request(
    model_name: str,
    inputs: Mapping[str, Any],
    *,
    version: int | None = None,
    version_label: str | None = None,
    signature_name: str = "serving_default",
    output_filter: list[str] | None = None,
):
    """A PredictRequest with each input encoded as a TensorProto."""
    request = protos.PredictRequest()
    _fill_model_spec(request.model_spec, model_name, version, version_label, signature_name)
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if isinstance(value, protos.TensorProto) else to_tensor_proto(value, protos.TensorProto))
    if output_filter:
        request.output_filter.extend(output_filter)
    return request


def _fill_model_spec(spec, model_name, version, version_label, signature_name=None) -> None:
    if version is not None and version_label is not None:
        raise errors.InvalidArgument("give a model version or a version label, not both")
    spec.name = model_name
    if version is not None:
        spec.version.value = int(version)
    elif version_label is not None:
        spec.version_label = version_label
    if signature_name:
        spec.signature_name = signature_name


def parse_predict_response(response) -> dict[str, np.ndarray]:
    return {name: from_tensor_proto(tensor) for name, tensor in response.outputs.items()}


def parse_signature_defs(metadata_response) -> dict[str, dict]:
    """GetModelMetadataResponse -> {signature: {"inputs": {name: {dtype, shape}}, "outputs": ...}}."""
    any_msg = metadata_response.metadata["signature_def"]
    sig_map = protos.SignatureDefMap()
    sig_map.ParseFromString(any_msg.value)

    def tensors(infos) -> dict:
        return {
            name: {"dtype": dtype_name(info.dtype),
                   "shape": None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]}
            for name, info in infos.items()
        }

    return {
        name: {"inputs": tensors(sig.inputs), "outputs": tensors(sig.outputs), "method_name": sig.method_name}
        for name, sig in sig_map.signature_def.items()
    }


def parse_model_status(status_response) -> list[dict]:
    return [
        {"version": s.version, "state": protos.GetModelStatusResponse.DESCRIPTOR.fields_by_name["model_version_status"]
            .message_type.fields_by_name["state"].enum_type.values_by_number[s.state].name,
         "error_code": s.status.error_code, "error_message": s.status.error_message}
        for s in status_response.model_version_status
    ]


def _error(err: grpc.RpcError) -> errors.UserFacingError:
    return errors.from_grpc_code(err.code(), err.details() or err.code().name)


def _methods(channel):
    """Predict, GetModelMetadata and GetModelStatus callables on a sync or grpc.aio channel."""
    return tuple(
        channel.unary_unary(method, request_serializer=request.SerializeToString, response_deserializer=response.FromString)
        for method, request, response in (
            (protos.PREDICT_METHOD, protos.PredictRequest, protos.PredictResponse),
            (protos.GET_MODEL_METADATA_METHOD, protos.GetModelMetadataRequest, protos.GetModelMetadataResponse),
            (protos.GET_MODEL_STATUS_METHOD, protos.GetModelStatusRequest, protos.GetModelStatusResponse)))


class PredictionClient:
    """Blocking client for one TF Serving gRPC target (host:port)."""

    def __init__(self, target: str, timeout: float = 2.0, retries: int = 2):
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._predict, self._metadata, self._status = _methods(self._channel)

    def _call(self, method, request, timeout: float | None, metadata=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata)
            except grpc.RpcError as err:
                retry = err.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries
                if not retry or deadline - time.monotonic() <= RETRY_BACKOFF_S:
                    raise _error(err) from None
                time.sleep(RETRY_BACKOFF_S * (attempt + 1))  # back off before reconnecting
        raise AssertionError("unreachable")

    def predict(self, model_name: str, inputs: Mapping[str, Any], *, timeout: float | None = None, **spec) -> dict[str, np.ndarray]:
        """Run `model_name`'s signature on named inputs; returns named output arrays."""
        return parse_predict_response(self.predict_raw(build_predict_request(model_name, inputs, **spec), timeout=timeout))

    def predict_raw(self, request, timeout: float | None = None, metadata=None):
        return self._call(self._predict, request, timeout, metadata)

    def get_model_metadata(self, model_name: str, version: int | None = None, timeout: float | None = None) -> dict[str, dict]:
        request = protos.GetModelMetadataRequest()
        _fill_model_spec(request.model_spec, model_name, version, None)
        request.metadata_field.append("signature_def")
        return parse_signature_defs(self._call(self._metadata, request, timeout))

    def get_model_status(self, model_name: str, version: int | None = None, timeout: float | None = None) -> list[dict]:
        request = protos.GetModelStatusRequest()
        _fill_model_spec(request.model_spec, model_name, version, None)
        return parse_model_status(self._call(self._status, request, timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncPredictionClient:
    """grpc.aio client for one target, with a bound on calls in flight (NOTES: unbounded fails)."""

    def __init__(self, target: str, timeout: float = 2.0, retries: int = 1, max_in_flight: int = 256):
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self._limit = asyncio.Semaphore(max_in_flight)
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self._predict, self._metadata, self._status = _methods(self._channel)

    async def _call(self, method, request, timeout: float | None, metadata=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        async with self._limit:
            for attempt in range(self.retries + 1):
                try:
                    return await method(request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata)
                except grpc.RpcError as err:
                    retry = err.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries
                    if not retry or deadline - time.monotonic() <= RETRY_BACKOFF_S:
                        raise _error(err) from None
                    await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable")

    async def predict(self, model_name: str, inputs: Mapping[str, Any], *, timeout: float | None = None, **spec) -> dict[str, np.ndarray]:
        return parse_predict_response(await self.predict_raw(build_predict_request(model_name, inputs, **spec), timeout=timeout))

    async def predict_raw(self, request, timeout: float | None = None, metadata=None):
        return await self._call(self._predict, request, timeout, metadata)

    async def get_model_metadata(self, model_name: str, version: int | None = None, timeout: float | None = None) -> dict[str, dict]:
        request = protos.GetModelMetadataRequest()
        _fill_model_spec(request.model_spec, model_name, version, None)
        request.metadata_field.append("signature_def")
        return parse_signature_defs(await self._call(self._metadata, request, timeout))

    async def get_model_metadata_raw(self, request, timeout: float | None = None, metadata=None):
        return await self._call(self._metadata, request, timeout, metadata)

    async def get_model_status_raw(self, request, timeout: float | None = None, metadata=None):
        return await self._call(self._status, request, timeout, metadata)

    async def close(self) -> None:
        await self._channel.close()
