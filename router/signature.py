"""The model's signature (from GetModelMetadata), and a decoded request validated against it.

The router validates every request against the signature the model server reports, so a bad
input is answered with 400 / INVALID_ARGUMENT by the router itself, whichever arm it was
assigned to, instead of reaching a backend. Numbers must be finite or NaN: NaN is a missing
value on both arms (the model's signature takes it, the exported model imputes the training
mean, and the legacy system's rule meets no threshold with it), while an infinity makes the model
answer NaN and so is refused here for both (`check_inputs`). What is valid never depends on the
arm: the checks read the request and the signature only.

A front decodes its protocol into a `PredictRequest`; `validate_request` checks it and returns
a new value, the `PredictCall` every backend receives (re-exported by `router.backends`). Each
is written once, by its constructor: nothing annotates a request on its way through. Both live
here, not in `router.backends`, because validation builds the call and the backends import the
signature types: the import runs one way.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

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
    def row_kinds(self) -> tuple[tuple[str, bool, float], ...] | None:
        """(input name, is a string, largest finite value) for each input when every input is rank 1; None otherwise.

        What `rows_fit` checks each row against, worked out once per signature, not per request.
        The largest value is the float dtype's (a JSON number beyond it would be infinite in the
        tensor), infinity for other dtypes.
        """
        if any(spec.shape is None or len(spec.shape) != 1 for spec in self.inputs.values()):
            return None
        return tuple((name, spec.dtype == DT_STRING, _largest(spec.dtype)) for name, spec in self.inputs.items())

    @cached_property
    def row_check(self) -> _RowCheck | None:
        """`rows_fit`'s fast check for this signature (None when `row_kinds` is)."""
        return None if self.row_kinds is None else _RowCheck(self.row_kinds)

    @classmethod
    def from_metadata(cls, signature_defs: Mapping[str, dict[str, Any]], signature_name: str, model_version: int | None = None) -> Signature:
        """From `serving.tfserving.grpc_client.parse_signature_defs` output (dtype names like "DT_FLOAT")."""
        if signature_name not in signature_defs:
            raise InvalidArgument(f"model has no signature {signature_name!r}; it has {sorted(signature_defs)}")
        sig = signature_defs[signature_name]

        def specs(tensors: Mapping[str, dict[str, Any]]) -> dict[str, TensorSpec]:
            return {
                name: TensorSpec(protos.DataType.values_by_name[t["dtype"]].number,
                                 None if t["shape"] is None else tuple(int(d) for d in t["shape"]))
                for name, t in tensors.items()
            }

        return cls(signature_name, specs(sig["inputs"]), specs(sig["outputs"]), model_version)


Array = npt.NDArray[Any]
Row = dict[str, Any]  # one example in REST row format: input name -> plain JSON scalar


class PredictRequest:
    """One predict request as a front decoded it, not yet checked against the signature.

    Either named input arrays or, for REST row-format bodies, the rows as they came (see
    `PredictCall`). `rows_fit_signature` is the signature the front already found the rows to
    fit, if it checked, so that validation does not walk them twice.
    """

    __slots__ = ("inputs", "rows", "signature_name", "output_filter", "rows_fit_signature")

    def __init__(self, inputs: Mapping[str, Array] | None = None, *, rows: list[Row] | None = None,
                 signature_name: str | None = None, output_filter: Sequence[str] = (),
                 rows_fit_signature: Signature | None = None) -> None:
        if (inputs is None) == (rows is None):
            raise ValueError("give inputs or rows")
        self.inputs = inputs
        self.rows = rows
        self.signature_name = signature_name
        self.output_filter = output_filter
        self.rows_fit_signature = rows_fit_signature


class PredictCall:
    """One validated predict request, as every backend receives it (built by `validate_request`).

    REST row-format bodies keep their rows (plain JSON values, already checked against the
    signature): the legacy system takes them as they are, and the numpy arrays are built only
    when something needs them (model arm, shadow, sinks). That saves most of the router's CPU
    on the 99% of requests that go to the legacy system.
    """

    __slots__ = ("_inputs", "rows", "signature_name", "output_filter", "input_specs", "outputs")

    # Not keyword-only (unlike PredictRequest): `validate_request` passes all six by position, which
    # costs less than keywords on every request.
    def __init__(self, inputs: Mapping[str, Array] | None = None, rows: list[Row] | None = None,
                 signature_name: str | None = None, output_filter: Sequence[str] = (),
                 input_specs: Mapping[str, TensorSpec] | None = None, outputs: Mapping[str, TensorSpec] | None = None) -> None:
        if (inputs is None) == (rows is None):
            raise ValueError("give inputs or rows")
        self._inputs = inputs  # built from the rows on first use: a cache, not a second writer
        self.rows = rows
        self.signature_name = signature_name
        self.output_filter = output_filter
        self.input_specs = input_specs  # the signature's inputs, when known
        self.outputs = outputs  # the signature's outputs, when known

    @property
    def inputs(self) -> Mapping[str, Array]:
        """Named input arrays (built from the rows on first use)."""
        if self._inputs is None:
            assert self.rows is not None  # the constructor holds one of the two
            self._inputs = rows_to_arrays(self.rows, self.input_specs)
        return self._inputs


def rows_to_arrays(rows: list[Row], specs: Mapping[str, TensorSpec] | None) -> dict[str, Array]:
    """Row-format JSON values -> one array per input, in the signature's dtypes (strings as bytes)."""
    out = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        spec = specs.get(name) if specs else None
        if spec is not None and spec.dtype == DT_STRING:
            out[name] = np.array([v.encode() for v in values], dtype=object)
        else:
            out[name] = np.asarray(values, dtype=NUMPY_BY_DTYPE.get(spec.dtype) if spec is not None else None)
    return out


_NUMERIC = (int, float)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def validate_request(request: PredictRequest, signature: Signature | None, max_batch_size: int) -> PredictCall:
    """The validated call for `request` (names, dtypes, shapes, batch size against the signature), or InvalidArgument."""
    rows = request.rows
    if rows is not None:
        # Fronts pass rows only when `rows_fit` accepted them; a front that checked against this
        # very signature says so and the rows are not walked twice.
        if signature is None or (request.rows_fit_signature is not signature and not rows_fit(rows, signature)):
            raise InvalidArgument("request rows do not fit the model's signature")
        if len(rows) > max_batch_size:
            raise InvalidArgument(f"batch of {len(rows)} examples is larger than the limit of {max_batch_size}")
        if not rows:
            raise InvalidArgument("the request has an empty batch")
        return PredictCall(None, rows, request.signature_name, request.output_filter, signature.inputs, signature.outputs)
    inputs = request.inputs
    assert inputs is not None  # the request holds one of the two
    check_inputs(inputs, signature, max_batch_size)
    if request.output_filter and signature is not None:
        unknown = sorted(set(request.output_filter) - set(signature.outputs))
        if unknown:  # the model would answer no such output: the client's mistake, not the model's failure
            raise InvalidArgument(f"output_filter names unknown output(s) {unknown}; the signature's outputs are {sorted(signature.outputs)}")
    if signature is None:  # the model's signature is not known yet: the inputs are checked among themselves
        return PredictCall(inputs, None, request.signature_name, request.output_filter)
    return PredictCall(inputs, None, request.signature_name, request.output_filter, signature.inputs, signature.outputs)


class _RowCheck:
    """What `rows_fit` needs per signature to check a row in a few C-level calls instead of a loop over its inputs.

    A row's value types, in the signature's order, are looked up among the type tuples already
    judged (a client sends the same few: floats, or ints where a number happens to be whole),
    and its numbers are bounded by one `min` and one `max` against the tightest limit of any
    input. A row outside that bound is not refused: the exact loop (`_row_fits`) decides it, so
    the answer is always the loop's. At 19 inputs the loop was a fifth of the router's Python
    per request.
    """

    def __init__(self, kinds: tuple[tuple[str, bool, float], ...]):
        # itemgetter of one name returns the value, not a 1-tuple: a lone name is asked for twice.
        def getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]] | None:
            return None if not names else operator.itemgetter(*(names * 2 if len(names) == 1 else names))

        self.kinds = kinds * 2 if len(kinds) == 1 else kinds
        self.values = getter([name for name, _, _ in kinds])
        self.numbers = getter([name for name, is_string, _ in kinds if not is_string])
        # Within it, every number passes the loop: an int within int64, a float within its dtype. The
        # int64 limit stays an int (as a float it rounds up to 2**63, which no int64 holds): Python
        # compares ints and floats exactly.
        self.bound: float = min([_INT64_MAX, *(largest for _, is_string, largest in kinds if not is_string)])
        self.fits: dict[tuple[type, ...], bool] = {}

    def types_fit(self, types: tuple[type, ...]) -> bool:
        """Strings where the signature has strings, ints or floats (not bools) elsewhere; remembered."""
        ok = all((t is str) if is_string else (t is int or t is float) for t, (_, is_string, _) in zip(types, self.kinds, strict=True))
        if len(self.fits) < 1024:  # a client with many mixes of ints and floats takes the slower path, never more memory
            self.fits[types] = ok
        return ok


def rows_fit(rows: list[Any], signature: Signature) -> bool:
    """True if every row holds exactly the signature's inputs, each one scalar of the right kind.

    Pure Python, no numpy: the common case of rank-1 inputs ([-1]) and plain JSON scalars. Any
    other case (b64 strings, ranked inputs, mistakes) returns False, and the array path decides
    with a precise message.
    """
    check = signature.row_check
    if check is None:
        return False
    names = signature.inputs.keys()
    values, numbers, bound, fits = check.values, check.numbers, check.bound, check.fits
    assert values is not None  # a signature has inputs
    for row in rows:
        if type(row) is not dict or row.keys() != names:
            return False
        types = tuple(map(type, values(row)))
        known = fits.get(types)
        if not (check.types_fit(types) if known is None else known):
            return False
        if numbers is not None:
            found = numbers(row)
            if not (-bound <= min(found) and max(found) <= bound) and not _row_fits(row, check.kinds):
                return False  # beyond the bound (or NaN, which min and max do not order): the loop decided
    return True


def _row_fits(row: dict[str, Any], kinds: tuple[tuple[str, bool, float], ...]) -> bool:
    """The exact check of one row whose keys are the signature's inputs."""
    for name, is_string, largest in kinds:
        value = row[name]
        if is_string:
            if type(value) is not str:
                return False
        elif type(value) not in _NUMERIC:  # `type`, not isinstance: bools are not numbers here
            return False
        elif type(value) is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                return False  # no tensor holds it (float32 overflows on it): the array path says so
        elif value > largest or value < -largest:  # infinite in the input's dtype (NaN passes: missing)
            return False  # the array path refuses it (`check_inputs`)
    return True


def _largest(dtype: int) -> float:
    np_dtype = NUMPY_BY_DTYPE.get(dtype)
    return float(np.finfo(np_dtype).max) if np_dtype is not None and np_dtype.kind == "f" else math.inf


def check_inputs(inputs: Mapping[str, Array], signature: Signature | None, max_batch_size: int) -> int:
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
    infinite = False
    floats = []
    for name, array in inputs.items():
        if signature is not None:
            _check_tensor(name, array, signature.inputs[name])
        batch_sizes.add(int(array.shape[0]) if array.ndim else 1)
        if array.dtype.kind == "f":
            if array.size == 1:  # one example: a Python float is cheaper to test than a numpy reduction
                infinite = infinite or math.isinf(array.item())
            else:
                floats.append(array)
    # An infinite input makes the model answer NaN: refused here, before either arm, so it is the
    # client's 400 on both and never a model failure (NaN stays a missing value). One pass for all.
    if infinite or floats and np.isinf(np.concatenate(floats, axis=None)).any():
        bad = sorted(name for name, array in inputs.items() if array.dtype.kind == "f" and np.isinf(array).any())
        raise InvalidArgument(f"input(s) {bad} hold infinite values; only finite numbers (or NaN, a missing value) are accepted")
    if len(batch_sizes) != 1:
        raise InvalidArgument(f"inputs have different batch sizes {sorted(batch_sizes)}; every input needs one value per example")
    batch = batch_sizes.pop()
    if batch > max_batch_size:
        raise InvalidArgument(f"batch of {batch} examples is larger than the limit of {max_batch_size}")
    if batch == 0:
        raise InvalidArgument("the request has an empty batch")
    return batch


def _check_tensor(name: str, array: Array, spec: TensorSpec) -> None:
    if spec.dtype == DT_STRING:
        if array.dtype != object or any(not isinstance(v, bytes) for v in array.ravel()):
            raise InvalidArgument(f"input '{name}' expects strings (DT_STRING), got {array.dtype}")
    elif array.dtype != NUMPY_BY_DTYPE.get(spec.dtype):
        raise InvalidArgument(f"input '{name}' expects {dtype_name(spec.dtype)}, got {array.dtype}")
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise InvalidArgument(f"input '{name}' expects shape {list(spec.shape)}, got {list(array.shape)}")
        for want, got in zip(spec.shape, array.shape, strict=True):  # same rank, checked above
            if want >= 0 and want != got:
                raise InvalidArgument(f"input '{name}' expects shape {list(spec.shape)}, got {list(array.shape)}")
