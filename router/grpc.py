"""The router's gRPC front: TF Serving's PredictionService (Predict, GetModelMetadata) without TensorFlow.

Generic handlers with the `serving.tfserving.protos` serializers, so the wire format is TF Serving's and
any TF Serving client works unchanged. Unit id in request metadata `x-unit-id`; the assigned arm
and the signed id to report the outcome with come back in trailing metadata (`x-modelramp-arm`,
`x-modelramp-outcome-id`). A client's `x-request-id`, `traceparent` and `tracestate` are passed
on to the backends, and `x-request-id` is echoed in trailing metadata, errors included.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from router.backends import FORWARDED_HEADERS, PredictRequest, forwardable, forwarding
from router.core import Router
from router.signature import Signature
from serving.tfserving import errors, protos
from serving.tfserving.tensors import from_tensor_proto, to_tensor_proto

SERVICE = "tensorflow.serving.PredictionService"


OUTCOME_ID_KEY = "x-modelramp-outcome-id"

# TF Serving's messages: classes `serving.tfserving.protos` builds from descriptors at import time,
# so there is no static type to give them (no generated _pb2 stubs without TensorFlow).
Message: TypeAlias = Any
Context: TypeAlias = grpc.aio.ServicerContext[Message, Message]


def _read_metadata(context: Context) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """The unit id and the (key, value) pairs to pass on to the backends, from the request's metadata."""
    unit_id: str | None = None
    forward: tuple[tuple[str, str], ...] = ()
    for key, value in context.invocation_metadata() or ():
        if key == "x-unit-id":
            unit_id = value if isinstance(value, str) else None
        elif key in FORWARDED_HEADERS and isinstance(value, str):
            pair = forwardable(key, value)
            if pair is not None:
                forward += (pair,)
    return unit_id, forward


class PredictionService:
    """Predict and GetModelMetadata for one router."""

    def __init__(self, router: Router):
        self.router = router

    async def predict(self, request: Message, context: Context) -> Message:
        router = self.router
        cfg = router.state.config
        configured = cfg.arms["model"].backend.signature_name
        limit = cfg.router.max_body_bytes

        def decode(signature: Signature | None) -> PredictRequest:
            if request.ByteSize() > limit:
                raise errors.PayloadTooLarge(f"request is larger than the limit of {limit} bytes")
            if request.model_spec.signature_name not in ("", configured):
                raise errors.NotFound(f"unknown signature {request.model_spec.signature_name!r}; the model serves {configured!r}")
            inputs = {name: from_tensor_proto(tensor, limit) for name, tensor in request.inputs.items()}
            return PredictRequest(inputs, signature_name=configured, output_filter=list(request.output_filter))

        remaining = context.time_remaining()
        unit_id, forward = _read_metadata(context)
        echo = tuple((k, v) for k, v in forward if k == "x-request-id")
        try:
            with forwarding(forward):
                served = await router.predict(request.model_spec.name, unit_id, decode, "grpc", remaining)
        except errors.UserFacingError as err:
            if echo:
                context.set_trailing_metadata(echo)
            await context.abort(err.grpc_code, str(err))
        response = protos.PredictResponse()
        response.model_spec.name = served.model_name
        response.model_spec.signature_name = served.signature_name
        if served.prediction.model_version is not None:
            response.model_spec.version.value = served.prediction.model_version
        for name, array in served.prediction.outputs.items():
            response.outputs[name].CopyFrom(to_tensor_proto(array, protos.TensorProto))
        context.set_trailing_metadata((("x-modelramp-arm", served.arm), (OUTCOME_ID_KEY, served.request_id), *echo))
        return response

    async def get_model_metadata(self, request: Message, context: Context) -> Message:
        router = self.router
        name = router.state.config.model_name
        if request.model_spec.name != name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_spec.name!r}; this router serves {name!r}")
        metadata = router.metadata
        if metadata is None and await router.refresh_metadata():
            metadata = router.metadata
        if metadata is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the model's signature is not known yet")
        response = protos.GetModelMetadataResponse()
        if metadata.raw is not None:
            response.CopyFrom(metadata.raw)
        else:
            response.metadata["signature_def"].Pack(signature_def_map(metadata.signature))
            if metadata.signature.model_version is not None:
                response.model_spec.version.value = metadata.signature.model_version
        response.model_spec.name = name  # the name clients use, whatever the backend calls it
        return response


def signature_def_map(signature: Signature) -> Message:
    """A SignatureDefMap holding the one signature the experiment serves."""
    sig_map = protos.SignatureDefMap()
    sig = sig_map.signature_def[signature.name]
    sig.method_name = "tensorflow/serving/predict"
    for target, specs in ((sig.inputs, signature.inputs), (sig.outputs, signature.outputs)):
        for name, spec in specs.items():
            info = target[name]
            info.name = name
            info.dtype = spec.dtype
            if spec.shape is None:
                info.tensor_shape.unknown_rank = True
            else:
                for size in spec.shape:
                    info.tensor_shape.dim.add().size = size
    return sig_map


def create_server(router: Router, address: str) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the PredictionService on `address`; returns (server, bound port)."""
    service = PredictionService(router)
    limit = router.state.config.router.max_body_bytes
    # gRPC's own limit is looser than ours, so an oversized request reaches the handler and is
    # answered INVALID_ARGUMENT and counted, like every other bad input.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max(4 * limit, 4 * 1024 * 1024))])
    handlers = {
        "Predict": grpc.unary_unary_rpc_method_handler(
            service.predict, request_deserializer=protos.PredictRequest.FromString,
            response_serializer=protos.PredictResponse.SerializeToString),
        "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
            service.get_model_metadata, request_deserializer=protos.GetModelMetadataRequest.FromString,
            response_serializer=protos.GetModelMetadataResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server, port
