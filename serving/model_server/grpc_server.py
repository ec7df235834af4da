"""The model server's gRPC front: TF Serving's PredictionService and ModelService, official protos."""

from __future__ import annotations

from typing import NoReturn

import grpc
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.model_server.dataplane import DataPlane
from serving.tfserving.errors import InvalidArgument, UserFacingError
from serving.tfserving.tensors import from_tensor_proto, to_tensor_proto

_STATE_NUMBERS = {name: number for name, number in get_model_status_pb2.ModelVersionStatus.State.items()}


def _spec_args(spec) -> dict:
    which = spec.WhichOneof("version_choice")
    return {"name": spec.name,
            "version": spec.version.value if which == "version" else None,
            "label": spec.version_label if which == "version_label" else None}


async def _abort(context: grpc.aio.ServicerContext, err: UserFacingError) -> NoReturn:
    await context.abort(err.grpc_code, str(err))


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def Predict(self, request, context):
        try:
            servable = self.plane.resolve(**_spec_args(request.model_spec))
            inputs = {name: from_tensor_proto(t) for name, t in request.inputs.items()}
            key, outputs = await self.plane.predict(servable, request.model_spec.signature_name or None, inputs, list(request.output_filter))
        except UserFacingError as err:
            await _abort(context, err)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = key
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(to_tensor_proto(array, tensor_pb2.TensorProto))
        return response

    async def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise InvalidArgument(f"Metadata field(s) {fields} not supported: only \"signature_def\" is")
            servable = self.plane.resolve(**_spec_args(request.model_spec))
        except UserFacingError as err:
            await _abort(context, err)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in servable.signature_defs.items():
            sig_map.signature_def[key].CopyFrom(sig)
        response.metadata["signature_def"].Pack(sig_map)
        return response

    async def Classify(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Classify is not supported; use Predict")

    async def Regress(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not supported; use Predict")

    async def MultiInference(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not supported; use Predict")


def status_response(plane: DataPlane, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in plane.status(name, version):
        entry = response.model_version_status.add()
        entry.version = s.version
        entry.state = _STATE_NUMBERS[s.state]
        entry.status.error_code = 0 if s.error_code == "OK" else 2  # tensorflow.error.Code UNKNOWN
        entry.status.error_message = s.error_message
    return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, plane: DataPlane):
        self.plane = plane

    async def GetModelStatus(self, request, context):
        spec = _spec_args(request.model_spec)
        try:
            # A label names one version, as in TF Serving and this server's REST front.
            version = spec["version"] if spec["label"] is None else self.plane.resolve(spec["name"], label=spec["label"]).version
            return status_response(self.plane, spec["name"], version)
        except UserFacingError as err:
            await _abort(context, err)

    async def HandleReloadConfigRequest(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "config reload over gRPC is not supported; edit the model folders")


def build_grpc_server(plane: DataPlane, port: int, host: str = "0.0.0.0") -> grpc.aio.Server:
    # SO_REUSEPORT off: with it a second server (or a stale one still alive) would bind the same
    # port beside the first and share its connections without an error. gRPC core sets
    # SO_REUSEADDR on every listener regardless, so connections a crashed server left in TIME_WAIT
    # do not keep a restart off the port (tests/serving/test_restart.py).
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                      ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(plane), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(plane), server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (port in use?)")
    return server
