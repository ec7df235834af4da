"""TF Serving (or `modelramp serve-model`) over gRPC PredictionService and ModelService, without TensorFlow.

The calls go through `router.backends.grpc_unary` (the protocol on asyncio, not grpc.aio: its
module docstring says why); the messages are TF Serving's own protos (`serving.tfserving.protos`).

With `rest_port`, a REST client's row-format request (`PredictCall.rows`) goes instead to TF
Serving's REST API on the server the target's round robin picks next (`router.backends.tfserving_rest`,
one per server): the rows are already TF Serving's row format, and an HTTP/1.1 call costs the
router less CPU than the same call over HTTP/2 (`python loadtests/bench_peers.py`: router CPU per
request at a 100% model share, rows over REST against every call over gRPC). The servers are the
gRPC target's, resolved and balanced by the same client, so a headless Service spreads REST rows
over every pod as it spreads gRPC calls. gRPC clients' tensors, columnar bodies, metadata and
model status stay on gRPC. REST answers carry no model version: the version is the signature's.
"""

from __future__ import annotations

import array
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from router.backends.base import Backend, BadResponse, ColumnOutputs, ModelMetadata, PredictCall, Prediction, forwarded
from router.backends.grpc_unary import RETRY_BACKOFF_S, UnaryGrpcClient
from router.backends.tfserving_rest import TfServingRestBackend
from router.config import TfServingGrpcSpec, TfServingRestSpec
from router.signature import Signature, TensorSpec
from serving.tfserving import errors, protos
from serving.tfserving.grpc_client import parse_predict_response, parse_signature_defs
from serving.tfserving.predict_wire import RowsRequestEncoder
from serving.tfserving.tensors import DT_FLOAT, to_tensor_proto

_FLOAT32 = np.dtype(np.float32)


def _output_filter(names: Sequence[str]) -> bytes:
    request = protos.PredictRequest()
    request.output_filter.extend(names)
    return bytes(request.SerializeToString())


def _float_columns(outputs: Any) -> dict[str, list[float]] | None:
    """Each output as a list of numbers when every one is a rank-1 DT_FLOAT tensor in `tensor_content` (one score
    per row, the common case), else None (the numpy path decides, with its errors)."""
    columns = {}
    for name, tensor in outputs.items():
        content = tensor.tensor_content
        dims = tensor.tensor_shape.dim
        if tensor.dtype != DT_FLOAT or len(dims) != 1 or len(content) != 4 * dims[0].size:
            return None
        values = array.array("f")
        values.frombytes(content)
        columns[name] = values.tolist()
    return columns


def _parsed(method: str, data: bytes, response_type: Any) -> Any:
    try:
        return response_type.FromString(data)
    except DecodeError:
        raise BadResponse(f"model server's answer to {method} is not a {response_type.DESCRIPTOR.name}") from None


# `spec`: a ModelSpec message, whose class serving.tfserving.protos builds at import time (no static type).
def _fill_spec(spec: Any, name: str, version: int | None, label: str | None, signature_name: str | None = None) -> None:
    spec.name = name
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label
    if signature_name:
        spec.signature_name = signature_name


class TfServingGrpcBackend(Backend):
    kind = "tfserving_grpc"

    def __init__(self, config: TfServingGrpcSpec, max_in_flight: int = 256):
        self.config = config
        self.timeout = config.timeout_ms / 1000.0
        self._client = UnaryGrpcClient(config.target, max_in_flight=max_in_flight)  # connects on its first call

        head = protos.PredictRequest()
        self._spec(head.model_spec)
        self._head = head.SerializeToString()  # the model spec field, the same in every request
        self._encoder: RowsRequestEncoder | None = None
        self._encoder_specs: Mapping[str, TensorSpec] | None = None  # the signature inputs it was built for
        self._rest: dict[str, TfServingRestBackend] = {}  # with rest_port: each server's REST API, by host

    async def _call(self, method: str, request: Any, response_type: Any, timeout: float) -> Any:
        data = await self._client.call(method, request if isinstance(request, bytes) else request.SerializeToString(),
                                       timeout, forwarded())
        return _parsed(method, data, response_type)

    def _spec(self, spec: Any) -> None:
        c = self.config
        _fill_spec(spec, c.model_name, c.version, c.version_label, c.signature_name)

    def _request(self, call: PredictCall) -> bytes:
        """The PredictRequest's bytes: written from REST rows checked against the signature (no numpy, no messages), else serialized."""
        if call.rows is not None and call.input_specs is not None:
            if self._encoder is None or self._encoder_specs is not call.input_specs:
                self._encoder = RowsRequestEncoder(self._head, {name: spec.dtype for name, spec in call.input_specs.items()})
                self._encoder_specs = call.input_specs
            encoded = self._encoder.encode(call.rows)
            if encoded is not None:
                return encoded if not call.output_filter else encoded + _output_filter(call.output_filter)
        request = protos.PredictRequest()
        self._spec(request.model_spec)
        for name, values in call.inputs.items():
            request.inputs[name].CopyFrom(to_tensor_proto(values, protos.TensorProto))
        request.output_filter.extend(call.output_filter)
        return bytes(request.SerializeToString())

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        if call.rows is not None and call.outputs and self.config.rest_port is not None:
            return await self._rows_over_rest(call, min(timeout, self.timeout))
        # The client awaited here, not through `_call`: each coroutine level is resumed on every call.
        data = await self._client.call(protos.PREDICT_METHOD, self._request(call), min(timeout, self.timeout), forwarded())
        response = _parsed(protos.PREDICT_METHOD, data, protos.PredictResponse)
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        columns = _float_columns(response.outputs)
        if columns is not None:
            fast = ColumnOutputs.from_numbers(columns, dict.fromkeys(columns, _FLOAT32))  # finite float32 scores: no numpy
            if fast is not None:
                return Prediction(fast, version)
        return Prediction(parse_predict_response(response), version)

    async def _rows_over_rest(self, call: PredictCall, timeout: float) -> Prediction:
        deadline = time.monotonic() + timeout
        for attempt in (0, 1):
            address = self._client.next_address() or await self._client.address(deadline)
            server = self._rest_server(address[0])
            try:
                return await server.predict(call, max(deadline - time.monotonic(), 0.001))
            except errors.Unavailable as err:
                # Unreachable, or 503 (not serving): a predict changes nothing, so the next server may answer it.
                # Not a BadResponse (a subclass): that server answered, wrongly.
                if type(err) is not errors.Unavailable:
                    raise
                self._client.back_off(address, str(err))
                if attempt or deadline - time.monotonic() <= RETRY_BACKOFF_S:
                    raise
        raise AssertionError("unreachable")

    def _rest_server(self, host: str) -> TfServingRestBackend:
        """The REST API of the server at `host`, created on its first call; servers no longer resolved are let go then."""
        server = self._rest.get(host)
        if server is not None:
            return server
        resolved = {address[0] for address in self._client.addresses}
        for gone in [h for h in self._rest if h not in resolved]:
            self._rest.pop(gone).close_now()
        c = self.config
        assert c.rest_port is not None  # only called with rest_port set
        url = f"http://[{host}]:{c.rest_port}" if ":" in host else f"http://{host}:{c.rest_port}"
        server = self._rest[host] = TfServingRestBackend(TfServingRestSpec(
            url=url, model_name=c.model_name, version=c.version, version_label=c.version_label,
            signature_name=c.signature_name, timeout_ms=c.timeout_ms))
        return server

    async def ready(self, timeout: float) -> bool:
        """The metadata answers over gRPC and, with rest_port, some server's REST API answers too."""
        if not await super().ready(timeout):
            return False
        if self.config.rest_port is None:
            return True
        deadline = time.monotonic() + timeout
        for _ in range(max(len(self._client.addresses), 1)):  # each server at most once
            try:
                address = await self._client.address(deadline)
            except errors.UserFacingError:
                return False
            server = self._rest_server(address[0])
            if await server.ready(max(deadline - time.monotonic(), 0.001)):
                return True
            self._client.back_off(address, f"no REST API answers on port {self.config.rest_port}")
        return False

    async def metadata(self, timeout: float) -> ModelMetadata:
        request = protos.GetModelMetadataRequest()
        _fill_spec(request.model_spec, self.config.model_name, self.config.version, self.config.version_label)
        request.metadata_field.append("signature_def")
        raw = await self._call(protos.GET_MODEL_METADATA_METHOD, request, protos.GetModelMetadataResponse, timeout)
        version = raw.model_spec.version.value if raw.model_spec.HasField("version") else None
        signature = Signature.from_metadata(parse_signature_defs(raw), self.config.signature_name, version)
        return ModelMetadata(signature, raw)

    async def model_status(self, version: int | None, label: str | None, timeout: float) -> Any:
        # The client's version or label, not the pinned one: TF Serving answers for what was asked.
        request = protos.GetModelStatusRequest()
        _fill_spec(request.model_spec, self.config.model_name, version, label)
        return await self._call(protos.GET_MODEL_STATUS_METHOD, request, protos.GetModelStatusResponse, timeout)

    async def close(self) -> None:
        self._client.close()
        for server in self._rest.values():
            server.close_now()
        self._rest.clear()
