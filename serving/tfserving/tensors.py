"""numpy arrays <-> TensorProto, for any TensorProto class (official or `serving.tfserving.protos`).

The conversion reads and writes fields by name, so one implementation serves the model server
(official protos) and the router and clients (the TensorFlow-free pool in `serving.tfserving.protos`).
Numeric tensors travel packed in `tensor_content` (one memcpy); `*_val` fields are accepted on
input as TF Serving accepts them, including a single value broadcast to the whole shape.
"""

from __future__ import annotations

import math

import numpy as np

from serving.tfserving.errors import InvalidArgument

# TensorFlow DataType enum numbers (tensorflow/core/framework/types.proto).
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_HALF = 9, 10, 19

NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32), DT_DOUBLE: np.dtype(np.float64), DT_INT32: np.dtype(np.int32),
    DT_UINT8: np.dtype(np.uint8), DT_INT16: np.dtype(np.int16), DT_INT8: np.dtype(np.int8),
    DT_INT64: np.dtype(np.int64), DT_BOOL: np.dtype(np.bool_), DT_HALF: np.dtype(np.float16),
}
DTYPE_BY_NUMPY = {v: k for k, v in NUMPY_BY_DTYPE.items()}
DTYPE_NAMES = {
    DT_FLOAT: "DT_FLOAT", DT_DOUBLE: "DT_DOUBLE", DT_INT32: "DT_INT32", DT_UINT8: "DT_UINT8",
    DT_INT16: "DT_INT16", DT_INT8: "DT_INT8", DT_STRING: "DT_STRING", DT_INT64: "DT_INT64",
    DT_BOOL: "DT_BOOL", DT_HALF: "DT_HALF",
}

# Which repeated field carries values of a dtype when tensor_content is not used.
_VAL_FIELD = {
    DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val", DT_UINT8: "int_val",
    DT_INT16: "int_val", DT_INT8: "int_val", DT_INT64: "int64_val", DT_BOOL: "bool_val",
    DT_STRING: "string_val", DT_HALF: "half_val",
}


def dtype_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"DataType({dtype})")


def to_tensor_proto(value, proto_cls, dtype: int | None = None):
    """Encode an array-like as a TensorProto of class `proto_cls`."""
    array = np.asarray(value)
    proto = proto_cls()
    if dtype is None:
        dtype = DT_STRING if array.dtype.kind in "USO" else DTYPE_BY_NUMPY.get(array.dtype)
        if dtype is None:
            raise InvalidArgument(f"unsupported numpy dtype {array.dtype}")
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    if dtype == DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.ravel())
    else:
        proto.tensor_content = np.ascontiguousarray(array, dtype=NUMPY_BY_DTYPE[dtype]).tobytes()
    return proto


def from_tensor_proto(proto, max_bytes: int | None = None) -> np.ndarray:
    """Decode a TensorProto into a numpy array (strings come back as an object array of bytes).

    `max_bytes`: refuse a tensor whose decoded array would be larger, before allocating it. TF
    fills a whole shape from one value, so a message of a few hundred bytes can declare 50
    million floats; a server decoding what clients send passes its message limit here.
    """
    shape = tuple([d.size for d in proto.tensor_shape.dim])  # a list is cheaper than a generator here
    if shape and min(shape) < 0:
        raise InvalidArgument(f"tensor shape {list(shape)} has an unknown dimension")
    size = math.prod(shape)  # 1 for a scalar; np.prod costs microseconds per tensor on this path
    dtype = proto.dtype
    np_dtype = NUMPY_BY_DTYPE.get(dtype)
    if max_bytes is not None and size * (np_dtype.itemsize if np_dtype is not None else 8) > max_bytes:
        raise InvalidArgument(f"tensor shape {list(shape)} of {dtype_name(dtype)} is larger than the limit of {max_bytes} bytes "
                              "once decoded")
    if dtype == DT_STRING:
        strings = proto.string_val
        values = np.fromiter(strings, dtype=object, count=len(strings))  # np.array(list(...)) costs twice as much
    elif np_dtype is not None:
        content = proto.tensor_content
        if content:
            if len(content) != size * np_dtype.itemsize:
                raise InvalidArgument(
                    f"tensor_content has {len(content)} bytes, shape {list(shape)} of "
                    f"{dtype_name(dtype)} needs {size * np_dtype.itemsize}")
            return np.frombuffer(content, dtype=np_dtype).reshape(shape)
        raw = getattr(proto, _VAL_FIELD[dtype])
        values = np.array(list(raw), dtype=np.uint16).view(np.float16) if dtype == DT_HALF else np.array(list(raw), dtype=np_dtype)
    else:
        raise InvalidArgument(f"unsupported tensor dtype {dtype_name(dtype)}")
    if values.size == size:
        return values.reshape(shape)
    if values.size == 1:  # TF fills a shape from one value
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0 and size == 0:
        return values.reshape(shape)
    raise InvalidArgument(f"tensor of shape {list(shape)} needs {size} values, got {values.size}")
