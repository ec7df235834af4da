"""The legacy system's JSON API as a backend: `POST {url}/v1/predict {"instances": [...]}`.

HTTP client chosen by measurement (loopback, 2 cores, small JSON bodies, 2026-11-23):
aiohttp 2,000 req/s at 1 in flight (p50 0.42 ms, 250 us client CPU per request) and 8,700 req/s
at 16 in flight (110 us CPU); httpx's async pool 580 and 370 req/s (1.4 to 2.5 ms CPU per
request, p99 over 200 ms at 16 in flight, as reported in encode/httpx#3215). A minimal
keep-alive client on httptools (`router.backends.http1`) costs 25-35 us CPU per request, so it
carries both HTTP arms (this one and the REST model backend); httpx serves the rest of modelramp.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from router.backends.base import (
    Backend,
    BadResponse,
    ColumnOutputs,
    PredictCall,
    Prediction,
    forwarded,
)
from router.backends.http1 import Http1Pool
from router.config import LegacyHttpSpec
from router.rest import json_codec
from serving.tfserving import errors
from serving.tfserving.tensors import NUMPY_BY_DTYPE


def _column(array: np.ndarray) -> list[Any]:
    values: list[Any] = array.tolist()
    if array.dtype == object:  # strings arrive as bytes; the legacy system reads JSON strings
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    return values


class LegacyHttpBackend(Backend):
    kind = "legacy_http"

    def __init__(self, config: LegacyHttpSpec, max_connections: int = 256):
        self.url = config.url.rstrip("/")
        self.timeout = config.timeout_ms / 1000.0
        self._max_connections = max_connections
        self._pool: Http1Pool | None = None

    def _client(self) -> Http1Pool:
        # Created lazily: connections belong to the running event loop.
        if self._pool is None:
            self._pool = Http1Pool(self.url, self._max_connections)
        return self._pool

    async def _call(self, method: str, path: str, body: bytes, timeout: float, headers: bytes = b"") -> tuple[int, bytes]:
        try:
            return await self._client().request(method, path, body, timeout, headers)
        except (asyncio.TimeoutError, TimeoutError):
            raise errors.DeadlineExceeded("legacy system did not answer in time") from None
        except OSError as err:  # refused, reset, closed (ConnectionError is an OSError)
            raise errors.Unavailable(f"legacy system unreachable: {err}") from None

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        rows = call.rows
        if rows is None:
            names = list(call.inputs)
            columns = [_column(call.inputs[n]) for n in names]
            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        body = json_codec.dumps({"instances": rows})
        extra = forwarded()
        # Header values came from the client's request as parsed by httptools: no CR or LF in them.
        lines = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in extra) if extra else b""
        status, payload = await self._call("POST", "/v1/predict", body, min(timeout, self.timeout), lines)
        try:
            answer = json_codec.loads(payload)
        except ValueError:
            raise BadResponse(f"legacy system answered HTTP {status} with a body that is not JSON") from None
        if status != 200:
            # The system's JSON error, else the raw body's start (bytes, shown as such).
            message: object = answer.get("error", payload[:200]) if isinstance(answer, dict) else payload[:200]
            raise errors.from_http_status(status, f"legacy system: {message}")
        return Prediction(_outputs(answer, call, len(rows)))

    async def ready(self, timeout: float) -> bool:
        try:
            status, _ = await self._call("GET", "/healthz", b"", timeout)
        except errors.UserFacingError:
            return False
        return status == 200

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _outputs(answer: object, call: PredictCall, batch: int) -> dict[str, np.ndarray] | ColumnOutputs:
    """The legacy predictions as the model's named outputs (same names and dtypes), so arms look alike."""
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list) or len(predictions) != batch or not all(isinstance(p, dict) for p in predictions):
        raise BadResponse(f"legacy system must answer {batch} prediction object(s) under 'predictions'")
    if call.outputs is not None:
        specs = {name: NUMPY_BY_DTYPE.get(spec.dtype) for name, spec in call.outputs.items()}
    else:  # signature not known yet: pass on the numeric fields
        specs = {k: None for k, v in predictions[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if call.output_filter:
        specs = {k: v for k, v in specs.items() if k in call.output_filter}
    try:
        columns = {name: [p[name] for p in predictions] for name in specs}
    except KeyError as err:
        raise BadResponse(f"legacy system's predictions lack the model output {err.args[0]!r}") from None
    float_dtypes = {name: dtype for name, dtype in specs.items() if dtype is not None and dtype.kind == "f"}
    if len(float_dtypes) == len(specs):
        fast = ColumnOutputs.from_numbers(columns, float_dtypes)  # the common case, without numpy
        if fast is not None:
            return fast
    try:
        with np.errstate(over="raise"):  # 1e39 as a float32 is not a score to pass on as infinity
            return {name: np.asarray(values, dtype=specs[name]) for name, values in columns.items()}
    except (TypeError, ValueError, OverflowError, FloatingPointError) as err:
        raise BadResponse(f"legacy system's predictions do not fit the model outputs: {err}") from None
