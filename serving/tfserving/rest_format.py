"""TF Serving's REST predict bodies <-> named numpy arrays.

Follows TF Serving's REST API: a request has either `instances` (row format: a list with one
entry per example; objects keyed by input name when the signature has several inputs) or
`inputs` (columnar: one value, or an object keyed by input name). Binary strings travel as
`{"b64": ...}`. A row-format request is answered with `predictions`, a columnar one with
`outputs`; errors are `{"error": message}`. Used by the model server and by the router.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving.tfserving.errors import InvalidArgument
from serving.tfserving.tensors import DT_STRING, NUMPY_BY_DTYPE, dtype_name


def _decode_b64(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise InvalidArgument(f"an object value must be {{\"b64\": ...}}, got keys {sorted(value)}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError):
            raise InvalidArgument("invalid base64 in a \"b64\" value") from None
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value


def _to_array(name: str, value, dtype: int | None) -> np.ndarray:
    value = _decode_b64(value)
    try:
        if dtype == DT_STRING:
            array = np.asarray(value, dtype=object)
            flat = array.ravel()
            for i, v in enumerate(flat):
                if isinstance(v, str):
                    flat[i] = v.encode()
                elif not isinstance(v, bytes):
                    raise InvalidArgument(f"input '{name}' expects strings ({dtype_name(dtype)}), got {type(v).__name__} {v!r}")
            return array
        if dtype is None:
            return np.asarray(value)
        array = np.asarray(value)
        if array.dtype.kind in "USO":
            raise InvalidArgument(f"input '{name}' expects numbers ({dtype_name(dtype)}), got a string or ragged value")
        if array.dtype.kind == "b" and dtype != 10:
            raise InvalidArgument(f"input '{name}' expects numbers ({dtype_name(dtype)}), got a boolean")
        return array.astype(NUMPY_BY_DTYPE[dtype])
    except ValueError as err:  # ragged lists, overflow
        raise InvalidArgument(f"input '{name}' cannot be read as {dtype_name(dtype) if dtype else 'a tensor'}: {err}") from None


def parse_predict_body(body: object, input_dtypes: Mapping[str, int] | None) -> tuple[str | None, dict[str, np.ndarray], bool]:
    """Returns (signature_name, named input arrays, row_format) or raises InvalidArgument.

    `input_dtypes` maps the signature's input names to DataType numbers; with None, names are
    taken as given and dtypes inferred (the router validates against the signature it fetched).
    """
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    signature_name = body.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise InvalidArgument("'signature_name' must be a string")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise InvalidArgument("JSON object must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise InvalidArgument(f"unknown keys in request: {sorted(unknown)}")
    single = next(iter(input_dtypes)) if input_dtypes is not None and len(input_dtypes) == 1 else None

    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidArgument("'instances' must be a non-empty list")
        if all(isinstance(i, dict) and not (set(i) == {"b64"}) for i in instances):
            keys = set(instances[0])
            for n, inst in enumerate(instances):
                if set(inst) != keys:
                    raise InvalidArgument(f"instance {n} has inputs {sorted(inst)}, instance 0 has {sorted(keys)}: "
                                          "all instances must have the same named inputs")
            columns = {k: [inst[k] for inst in instances] for k in keys}
        elif single is not None:
            columns = {single: instances}
        else:
            raise InvalidArgument("instances must be objects keyed by input name when the signature has several inputs")
        row_format = True
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and set(inputs) != {"b64"}:
            columns = dict(inputs)
        elif single is not None:
            columns = {single: inputs}
        else:
            raise InvalidArgument("'inputs' must be an object keyed by input name when the signature has several inputs")
        row_format = False

    if input_dtypes is not None:
        missing = sorted(set(input_dtypes) - set(columns))
        extra = sorted(set(columns) - set(input_dtypes))
        if extra:
            raise InvalidArgument(f"unknown input(s) {extra}; the signature's inputs are {sorted(input_dtypes)}")
        if missing:
            raise InvalidArgument(f"missing input(s) {missing}; the signature's inputs are {sorted(input_dtypes)}")
    arrays = {name: _to_array(name, value, None if input_dtypes is None else input_dtypes[name]) for name, value in columns.items()}
    return signature_name, arrays, row_format


def _jsonable(array: np.ndarray):
    if array.dtype == object or array.dtype.kind == "S":
        def conv(v):
            if isinstance(v, bytes):
                try:
                    return v.decode()
                except UnicodeDecodeError:
                    return {"b64": base64.b64encode(v).decode()}
            return v
        return np.vectorize(conv, otypes=[object])(array).tolist() if array.size else array.tolist()
    if array.dtype in (np.float32, np.float16):
        # Shortest repr that round-trips the 32-bit value, as TF Serving prints (0.1, not 0.10000000149).
        return np.array([float(str(v)) for v in array.ravel()], dtype=np.float64).reshape(array.shape).tolist()
    return array.tolist()


def format_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict:
    """The JSON body TF Serving returns for these outputs."""
    return format_columns({name: _jsonable(a) for name, a in outputs.items()}, row_format)


def format_columns(columns: Mapping[str, Any], row_format: bool) -> dict[str, Any]:
    """The same body from outputs already as JSON values (a list per batched output, a scalar otherwise)."""
    if row_format:
        if len(columns) == 1:
            return {"predictions": next(iter(columns.values()))}
        batch = {len(v) if isinstance(v, list) else 0 for v in columns.values()}
        if len(batch) != 1:
            raise InvalidArgument("outputs have different batch sizes; use the columnar 'inputs' format")
        return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(batch.pop())]}
    if len(columns) == 1:
        return {"outputs": next(iter(columns.values()))}
    return {"outputs": dict(columns)}
