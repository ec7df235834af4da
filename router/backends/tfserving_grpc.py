"""TF Serving (or `modelramp serve-model`) over gRPC PredictionService and ModelService, without TensorFlow.

The calls go through `router.backends.grpc_unary` (the protocol on asyncio, not grpc.aio: its
module docstring says why); the messages are TF Serving's own protos (`serving.tfserving.protos`).
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from router.backends.base import Backend, BadResponse, ModelMetadata, PredictCall, Prediction, forwarded
from router.backends.grpc_unary import UnaryGrpcClient
from router.config import TfServingGrpcSpec
from router.signature import Signature
from serving.tfserving import protos
from serving.tfserving.grpc_client import parse_predict_response, parse_signature_defs
from serving.tfserving.tensors import rows_into_tensor_protos, to_tensor_proto


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

    async def _call(self, method: str, request: Any, response_type: Any, timeout: float) -> Any:
        data = await self._client.call(method, request.SerializeToString(), timeout, forwarded())
        try:
            return response_type.FromString(data)
        except DecodeError:
            raise BadResponse(f"model server's answer to {method} is not a {response_type.DESCRIPTOR.name}") from None

    def _spec(self, spec: Any) -> None:
        c = self.config
        _fill_spec(spec, c.model_name, c.version, c.version_label, c.signature_name)

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        request = protos.PredictRequest()
        self._spec(request.model_spec)
        # REST rows checked against the signature go into the protos directly (no numpy arrays).
        if call.rows is None or call.input_specs is None or not rows_into_tensor_protos(
                request.inputs, call.rows, {name: spec.dtype for name, spec in call.input_specs.items()}):
            for name, array in call.inputs.items():
                request.inputs[name].CopyFrom(to_tensor_proto(array, protos.TensorProto))
        request.output_filter.extend(call.output_filter)
        response = await self._call(protos.PREDICT_METHOD, request, protos.PredictResponse, min(timeout, self.timeout))
        version = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return Prediction(parse_predict_response(response), version)

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
