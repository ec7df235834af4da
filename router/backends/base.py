"""The backend interface: one arm's answering system (legacy HTTP, TF Serving gRPC or REST).

A backend turns a validated `PredictCall` (defined with its validation in `router.signature`,
re-exported here) into named output arrays within a timeout, or raises a
`serving.tfserving.errors` error. The core never sees HTTP or protobuf; fronts never see backends.
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.signature import PredictCall, PredictRequest, Signature
from serving.tfserving import errors

__all__ = ["FORWARDED_HEADERS", "FORWARDED_HEADER_BYTES", "TRACE_HEADERS", "Backend", "BadResponse", "ColumnOutputs", "ModelMetadata",
           "NonFiniteOutput", "PredictCall", "PredictRequest", "Prediction", "UnmappedAnswer", "capture_headers", "check_finite",
           "failure_reason", "forwardable", "forwarded", "forwarding"]

# Request headers a front passes on to both arms' backends, lower-case: the client's correlation
# id and W3C trace context (https://www.w3.org/TR/trace-context/). The router takes no part in
# the trace (no span of its own), so it forwards them unchanged, as any proxy that does not trace.
TRACE_HEADERS: frozenset[str] = frozenset({"x-request-id", "traceparent", "tracestate"})
# What the fronts capture from a request: TRACE_HEADERS and the legacy backend's `forward_headers`
# (an Authorization, a tenant), which only that backend passes on. Sets the fronts hold by
# reference, grown by `capture_headers` when a backend is built, so the fronts need no setting.
FORWARDED_HEADERS: set[str] = set(TRACE_HEADERS)
FORWARDED_HEADER_BYTES: set[bytes] = {name.encode() for name in TRACE_HEADERS}
Forwarded = tuple[tuple[str, str], ...]
# Set by a front around one predict call, read by backends as they build their request: a context
# variable rather than a field of PredictCall because the core need not know about it, and a task
# the call spawns (a shadow call to the model) copies it, so the shadow call carries them too.
MAX_FORWARDED_VALUE = 512  # a longer X-Request-Id or traceparent is not passed on (W3C traceparent is 55 characters)
MAX_CONFIGURED_VALUE = 8192  # a configured header may be a bearer token (JWTs run to a few kilobytes)
_forwarded: ContextVar[Forwarded] = ContextVar("modelramp_forwarded_headers", default=())
_captured_beyond_trace = [False]  # a cell: True once some backend asked for more than TRACE_HEADERS


def capture_headers(names: Iterable[str]) -> frozenset[str]:
    """Make the fronts capture `names` too; returns TRACE_HEADERS plus them, lower-case (what to pass to `forwarded`)."""
    wanted = TRACE_HEADERS | {name.lower() for name in names}
    FORWARDED_HEADERS.update(wanted)
    FORWARDED_HEADER_BYTES.update(name.encode() for name in wanted)
    _captured_beyond_trace[0] = len(FORWARDED_HEADERS) > len(TRACE_HEADERS)
    return wanted


def forwardable(name: str, value: str) -> tuple[str, str] | None:
    """(name, value) if a request header may be passed on to the backends (and echoed): printable ASCII, bounded.

    Anything else is dropped rather than refused: a correlation id is the client's convenience,
    never a reason to fail its prediction, and gRPC metadata takes printable ASCII only.
    """
    value = value.strip()
    limit = MAX_FORWARDED_VALUE if name in TRACE_HEADERS else MAX_CONFIGURED_VALUE
    if not value or len(value) > limit or not (value.isascii() and value.isprintable()):
        return None
    return name, value


def forwarded(names: AbstractSet[str] = TRACE_HEADERS) -> Forwarded:
    """The (name, value) pairs of the current request among `names` (default: the trace headers); () for most requests."""
    pairs = _forwarded.get()
    if not pairs or not _captured_beyond_trace[0]:
        return pairs  # only trace headers are ever captured then: nothing to filter
    return tuple(pair for pair in pairs if pair[0] in names)


class forwarding:
    """Context manager: backends called inside it pass on `headers` ((lower-case name, value) pairs)."""

    __slots__ = ("headers", "_token")

    def __init__(self, headers: Forwarded) -> None:
        self.headers = headers
        self._token: Token[Forwarded] | None = None

    def __enter__(self) -> None:
        if self.headers:  # the common case (no such header) costs no context change
            self._token = _forwarded.set(self.headers)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _forwarded.reset(self._token)
            self._token = None


@dataclass
class Prediction:
    """Named output arrays and, for a model, the version that answered."""

    outputs: Mapping[str, np.ndarray]
    model_version: int | None = None


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_F32_VALUE_CACHE: dict[float, float] = {}  # a legacy system answers few distinct scores


def _as_float32_json(value: float) -> float:
    """The JSON number TF Serving writes for `value` as a float32 (shortest repr that round-trips)."""
    found = _F32_VALUE_CACHE.get(value)
    if found is None:
        if len(_F32_VALUE_CACHE) > 4096:
            _F32_VALUE_CACHE.clear()
        found = _F32_VALUE_CACHE[value] = float(str(np.float32(value)))
    return found


class ColumnOutputs(Mapping[str, np.ndarray]):
    """Outputs held as JSON numbers per name, arrays built only on first use.

    The response to a legacy answer needs no numpy: the legacy system's numbers, in the model's
    float dtypes, are written back as TF Serving would write them (`columns`). Arrays are built
    when something asks for them (the gRPC front, shadow comparisons). That is the answer-side
    twin of `PredictCall.rows`, on the same 99% of requests.
    """

    def __init__(self, columns: dict[str, list[float]], dtypes: Mapping[str, np.dtype]):
        self.columns = columns
        self._dtypes = dtypes
        self._arrays: dict[str, np.ndarray] | None = None

    @classmethod
    def from_numbers(cls, columns: dict[str, list[Any]], dtypes: Mapping[str, np.dtype]) -> ColumnOutputs | None:
        """None unless every value is a finite JSON number (the array path then decides, with its errors)."""
        converted: dict[str, list[float]] = {}
        for name, values in columns.items():
            as_float32 = dtypes[name].char == "f"  # an attribute, not `== np.float32` (a dtype made from the type per call)
            limit = _FLOAT32_MAX if as_float32 else math.inf
            numbers = converted[name] = []
            try:
                for v in values:  # a loop, not any() and a list comprehension: two frames fewer per answer
                    if type(v) not in (int, float) or not abs(v) <= limit:  # NaN fails too
                        return None
                    numbers.append((_F32_VALUE_CACHE.get(v) or _as_float32_json(v)) if as_float32 else float(v))
            except OverflowError:  # an integer too large for a float
                return None
        return cls(converted, dtypes)

    def _built(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            self._arrays = {name: np.asarray(values, dtype=self._dtypes[name]) for name, values in self.columns.items()}
        return self._arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self._built()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


@dataclass
class ModelMetadata:
    """A model backend's signature and the raw GetModelMetadataResponse (passed on by the gRPC front)."""

    signature: Signature
    raw: Any = None


class Backend(ABC):
    """One arm's backend. Implementations raise `serving.tfserving.errors` subclasses, never transport errors."""

    kind = "backend"

    @abstractmethod
    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        """Answer `call` within `timeout` seconds."""

    async def metadata(self, timeout: float) -> ModelMetadata | None:
        """The model's signature; None for backends that have none (legacy)."""
        return None

    async def model_status(self, version: int | None, label: str | None, timeout: float) -> Any:
        """TF Serving's GetModelStatusResponse for the backend's model (ModelService); model backends only."""
        raise errors.Unimplemented(f"the {self.kind} backend has no model status")

    async def ready(self, timeout: float) -> bool:
        """True when the backend answers a cheap call now (by default: its model metadata)."""
        try:
            await self.metadata(timeout)
            return True
        except errors.UserFacingError:
            return False

    async def close(self) -> None:  # noqa: B027 - optional: backends without connections keep this no-op
        """Release connections."""


def failure_reason(err: BaseException) -> str:
    """The `reason` label of `modelramp_backend_errors_total` for a backend failure."""
    if isinstance(err, (errors.DeadlineExceeded, asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    # Subclasses before their bases: a BadResponse is also Unavailable.
    if isinstance(err, NonFiniteOutput):
        return "non_finite"
    if isinstance(err, BadResponse):
        return "bad_response"
    if isinstance(err, errors.Unavailable):
        return "unavailable"
    if isinstance(err, errors.InvalidArgument):
        return "rejected"
    if isinstance(err, errors.NotFound):
        return "not_found"
    return "error"


class BadResponse(errors.Unavailable):
    """The backend answered, but not with something the router can pass on."""


class UnmappedAnswer(BadResponse):
    """A legacy answer that does not map to the model's outputs: the gateway's fault, 502 (still UNAVAILABLE over gRPC)."""

    http_status = 502


class NonFiniteOutput(BadResponse):
    """The model answered NaN or infinity: never passed on to a client (ML Test Score, Monitor 5)."""


def check_finite(prediction: Prediction) -> None:
    """Raise NonFiniteOutput if a numeric output holds NaN or an infinity."""
    if isinstance(prediction.outputs, ColumnOutputs):
        return  # `from_numbers` admits finite numbers only, and building the arrays to check them again costs numpy
    for name, array in prediction.outputs.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad = int(array.size - np.isfinite(array).sum())
            raise NonFiniteOutput(f"the model's output {name!r} has {bad} NaN or infinite value(s) of {array.size}")
