"""The legacy system's JSON API as a backend: `POST {url}/v1/predict {"instances": [...]}`, or as the file maps it.

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
    TRACE_HEADERS,
    Backend,
    BadResponse,
    PredictCall,
    Prediction,
    capture_headers,
    forwarded,
)
from router.backends.http1 import Http1Pool
from router.backends.legacy_mapping import RequestMapping, ResponseMapping, default_outputs, header_lines, ssl_context
from router.config import LegacyHttpSpec
from router.rest import json_codec
from serving.tfserving import errors


def _column(array: np.ndarray) -> list[Any]:
    values: list[Any] = array.tolist()
    if array.dtype == object:  # strings arrive as bytes; the legacy system reads JSON strings
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    return values


def _unanswered(err: asyncio.TimeoutError | OSError) -> errors.UserFacingError:
    """The error for a call the pool could not complete: its deadline passed, or the system was not reachable."""
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):  # one class since Python 3.11, two before
        return errors.DeadlineExceeded("legacy system did not answer in time")
    # Refused, reset, closed, TLS refused (ConnectionError and ssl.SSLError are OSErrors).
    return errors.Unavailable(f"legacy system unreachable: {err}")


class LegacyHttpBackend(Backend):
    kind = "legacy_http"

    def __init__(self, config: LegacyHttpSpec, max_connections: int = 256):
        self.url = config.url.rstrip("/")
        self.timeout = config.timeout_ms / 1000.0
        self.method, self.path = config.method, config.path
        self.health_path, self.health_status = config.health.path, config.health.expect_status
        # Read now: a missing secret or certificate fails the router's start (or the reload), not a request.
        self._static = header_lines(config)
        self._ssl = ssl_context(config)
        self._forward = capture_headers(config.forward_headers) if config.forward_headers else TRACE_HEADERS
        self._request = RequestMapping(config.request) if config.request is not None else None
        self._response = ResponseMapping(config.response) if config.response is not None else None
        self._max_connections = max_connections
        self._pool: Http1Pool | None = None

    def _client(self) -> Http1Pool:
        # Created lazily: connections belong to the running event loop.
        if self._pool is None:
            self._pool = Http1Pool(self.url, self._max_connections, self._ssl)
        return self._pool

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        rows = call.rows
        if rows is None:
            names = list(call.inputs)
            columns = [_column(call.inputs[n]) for n in names]
            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        body = json_codec.dumps({"instances": rows} if self._request is None else self._request.body(rows))
        extra = forwarded(self._forward)
        # Header values came from the client's request as parsed by httptools: no CR or LF in them.
        lines = b"".join(b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1")) for k, v in extra) if extra else b""
        # The pool awaited here, not through a wrapper coroutine: each level is resumed on every request.
        try:
            status, payload = await (self._pool or self._client()).request(self.method, self.path, body,
                                                                           min(timeout, self.timeout), self._static + lines)
        except (asyncio.TimeoutError, OSError) as err:
            raise _unanswered(err) from None
        try:
            answer = json_codec.loads(payload)
        except ValueError:
            if status != 200:  # a foreign system's error page: its status says more than its body
                raise errors.from_http_status(status, f"legacy system: {payload[:200]!r}") from None
            raise BadResponse(f"legacy system answered HTTP {status} with a body that is not JSON") from None
        if status != 200:
            # The system's JSON error, else the raw body's start (bytes, shown as such).
            message: object = answer.get("error", payload[:200]) if isinstance(answer, dict) else payload[:200]
            raise errors.from_http_status(status, f"legacy system: {message}")
        if self._response is None:
            return Prediction(default_outputs(answer, call, len(rows)))
        return Prediction(self._response.outputs(answer, call, len(rows)))

    async def ready(self, timeout: float) -> bool:
        try:
            status, _ = await self._client().request("GET", self.health_path, b"", timeout, self._static)
        except (asyncio.TimeoutError, OSError):
            return False
        return status == self.health_status

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
