"""The model's signature (from GetModelMetadata) and validation of decoded inputs against it.

The router validates every request against the signature the model server reports, so a bad
input is answered with 400 / INVALID_ARGUMENT by the router itself, whichever arm it was
assigned to, instead of reaching a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from serving.tfserving import protos
from serving.tfserving.errors import InvalidArgument
from serving.tfserving.tensors import DT_STRING, NUMPY_BY_DTYPE, dtype_name


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature: DataType number and shape (-1 = any; None = any rank)."""

    dtype: int
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    """What the model accepts and returns, as its server reported it."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    model_version: int | None = None

    @property
    def input_dtypes(self) -> dict[str, int]:
        return {name: spec.dtype for name, spec in self.inputs.items()}

    @cached_property
    def row_kinds(self) -> tuple[tuple[str, bool], ...] | None:
        """(input name, is a string) for each input when every input is rank 1; None otherwise.

        What `rows_fit` checks each row against, worked out once per signature, not per request.
        """
        if any(spec.shape is None or len(spec.shape) != 1 for spec in self.inputs.values()):
            return None
        return tuple((name, spec.dtype == DT_STRING) for name, spec in self.inputs.items())

    @classmethod
    def from_metadata(cls, signature_defs: Mapping[str, dict], signature_name: str, model_version: int | None = None) -> "Signature":
        """From `serving.tfserving.grpc_client.parse_signature_defs` output (dtype names like "DT_FLOAT")."""
        if signature_name not in signature_defs:
            raise InvalidArgument(f"model has no signature {signature_name!r}; it has {sorted(signature_defs)}")
        sig = signature_defs[signature_name]

        def specs(tensors: Mapping[str, dict]) -> dict[str, TensorSpec]:
            return {
                name: TensorSpec(protos.DataType.values_by_name[t["dtype"]].number,
                                 None if t["shape"] is None else tuple(int(d) for d in t["shape"]))
                for name, t in tensors.items()
            }

        return cls(signature_name, specs(sig["inputs"]), specs(sig["outputs"]), model_version)


_NUMERIC = (int, float)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def validate_call(call, signature: Signature | None, max_batch_size: int) -> None:
    """Check a PredictCall against the signature (names, dtypes, shapes, batch size) or raise InvalidArgument."""
    if signature is not None:
        call.input_specs, call.outputs = signature.inputs, signature.outputs
    if call.rows is not None:
        # Fronts pass rows only when `rows_fit` accepted them; a front that checked against this
        # very signature says so (`rows_fit_signature`) and the rows are not walked twice.
        if signature is None or (call.rows_fit_signature is not signature and not rows_fit(call.rows, signature)):
            raise InvalidArgument("request rows do not fit the model's signature")
        if len(call.rows) > max_batch_size:
            raise InvalidArgument(f"batch of {len(call.rows)} examples is larger than the limit of {max_batch_size}")
        if not call.rows:
            raise InvalidArgument("the request has an empty batch")
    else:
        check_inputs(call.inputs, signature, max_batch_size)
    call.validated = True


def rows_fit(rows: list, signature: Signature) -> bool:
    """True if every row holds exactly the signature's inputs, each one scalar of the right kind.

    Pure Python, no numpy: the common case of rank-1 inputs ([-1]) and plain JSON scalars. Any
    other case (b64 strings, ranked inputs, mistakes) returns False, and the array path decides
    with a precise message.
    """
    kinds = signature.row_kinds
    if kinds is None:
        return False
    names = signature.inputs.keys()
    for row in rows:
        if type(row) is not dict or row.keys() != names:
            return False
        for name, is_string in kinds:
            value = row[name]
            if is_string:
                if type(value) is not str:
                    return False
            elif type(value) not in _NUMERIC:  # `type`, not isinstance: bools are not numbers here
                return False
            elif type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
                return False  # no tensor holds it (float32 overflows on it): the array path says so
    return True


def check_inputs(inputs: Mapping[str, np.ndarray], signature: Signature | None, max_batch_size: int) -> int:
    """Validate names, dtypes, shapes and batch size; return the batch size or raise InvalidArgument."""
    if not inputs:
        raise InvalidArgument("the request has no inputs")
    if signature is not None:
        missing = sorted(set(signature.inputs) - set(inputs))
        extra = sorted(set(inputs) - set(signature.inputs))
        if extra:
            raise InvalidArgument(f"unknown input(s) {extra}; the signature's inputs are {sorted(signature.inputs)}")
        if missing:
            raise InvalidArgument(f"missing input(s) {missing}; the signature's inputs are {sorted(signature.inputs)}")
    batch_sizes = set()
    for name, array in inputs.items():
        if signature is not None:
            _check_tensor(name, array, signature.inputs[name])
        batch_sizes.add(int(array.shape[0]) if array.ndim else 1)
    if len(batch_sizes) != 1:
        raise InvalidArgument(f"inputs have different batch sizes {sorted(batch_sizes)}; every input needs one value per example")
    batch = batch_sizes.pop()
    if batch > max_batch_size:
        raise InvalidArgument(f"batch of {batch} examples is larger than the limit of {max_batch_size}")
    if batch == 0:
        raise InvalidArgument("the request has an empty batch")
    return batch


def _check_tensor(name: str, array: np.ndarray, spec: TensorSpec) -> None:
    if spec.dtype == DT_STRING:
        if array.dtype != object or any(not isinstance(v, bytes) for v in array.ravel()):
            raise InvalidArgument(f"input '{name}' expects strings (DT_STRING), got {array.dtype}")
    elif array.dtype != NUMPY_BY_DTYPE.get(spec.dtype):
        raise InvalidArgument(f"input '{name}' expects {dtype_name(spec.dtype)}, got {array.dtype}")
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise InvalidArgument(f"input '{name}' expects shape {list(spec.shape)}, got {list(array.shape)}")
        for want, got in zip(spec.shape, array.shape):
            if want >= 0 and want != got:
                raise InvalidArgument(f"input '{name}' expects shape {list(spec.shape)}, got {list(array.shape)}")
