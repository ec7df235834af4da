"""TF Serving's protobuf messages without TensorFlow.

`tensorflow_serving.apis` imports all of TensorFlow (about 645 MB resident) just to define protobuf
classes. Routers and clients load the same descriptors, copied from the official package into
`tfserving.binpb` (see `build_descriptors.py`), into a private descriptor pool instead: the wire
format is identical, the import costs a few milliseconds, and the classes never clash with the
official ones if both are imported in one process.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_pool = descriptor_pool.DescriptorPool()
_fds = descriptor_pb2.FileDescriptorSet.FromString(Path(__file__).with_name("tfserving.binpb").read_bytes())
for _file in _fds.file:
    _pool.Add(_file)
#: The descriptors' files as FileDescriptorProtos, dependencies first: for servers that describe themselves (gRPC reflection).
FILES = tuple(_fds.file)


def _message(full_name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(full_name))


PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")
GetModelMetadataRequest = _message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap = _message("tensorflow.serving.SignatureDefMap")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")
ModelSpec = _message("tensorflow.serving.ModelSpec")
TensorProto = _message("tensorflow.TensorProto")
TensorShapeProto = _message("tensorflow.TensorShapeProto")

DataType = _pool.FindEnumTypeByName("tensorflow.DataType")

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE_DEF_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"
