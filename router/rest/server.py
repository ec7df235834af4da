"""The router's HTTP/1.1 server, the one way into its REST API: predict answered directly, the rest through ASGI.

Predict is the only hot path, and with uvicorn its HTTP layer alone cost about 76 us of CPU per
request more than a bare httptools protocol (loadtests/bench_http_front.py): a third of what the
router adds. This server parses with the same httptools, hands `POST /v1/models/...:predict`
straight to `router.rest.predict.answer_predict` (and `POST /v1/outcomes`, the other route under
load, to `router.rest.outcomes`) and writes each answer with one `write`; every other route
(metadata, experiments, weights, metrics, probes, OpenAPI docs) goes to the
FastAPI app (`router.rest.app`) through a small ASGI bridge. It does what the router needs:
keep-alive and HTTP/1.0 close, pipelined requests answered in order, `Expect: 100-continue`, an
idle timeout, a graceful stop that lets requests in flight finish, and the router's one body
limit (`router.max_body_bytes`): applied here to every request, predict and bridged alike, and
answered 413 without buffering the body. Predict's 413 still goes through `Router.predict`, so
that it is counted like any other bad input; the app's handlers read the body this server kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

import httptools

from router.backends import FORWARDED_HEADER_BYTES, forwardable
from router.core import Router
from router.rest.outcomes import OUTCOMES_PATH, answer_outcomes
from router.rest.predict import PREDICT_PATH, answer_predict, too_large

if TYPE_CHECKING:  # the types only: this module does not need Starlette to run
    from starlette.types import ASGIApp

log = logging.getLogger("router.rest.server")

KEEP_ALIVE_SECONDS = 5.0  # idle connections are closed after this (uvicorn's default)
_JSON = b"application/json"
# HTTPStatus(code) is an enum call through Python code on every answer (0.47 us against 0.04 for a dict).
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
_FORWARDED = FORWARDED_HEADER_BYTES  # a live set: it grows with the legacy backend's forward_headers


class _Request:
    __slots__ = ("method", "url", "headers", "body", "too_large", "keep_alive", "unit_id", "forward")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.too_large = False
        self.keep_alive = True
        self.unit_id: str | None = None
        self.forward: tuple[tuple[str, str], ...] = ()  # X-Request-Id and trace context, passed on to the backends
        self.method = b""


class HttpServer:
    """Listens on (host, port); `app` answers everything but predict (ASGI)."""

    def __init__(self, router: Router, app: ASGIApp, host: str, port: int) -> None:
        self.router, self.app, self.host, self.port = router, app, host, port
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        # Kept, not looked up per request: asyncio.get_running_loop() makes a getpid() system call
        # each time (fork detection), six of them per request before this.
        self.loop = loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port, reuse_address=True)
        self._sweeper = loop.create_task(self._close_idle())

    async def _close_idle(self) -> None:
        # One sweep a second instead of a timer per request: a timer costs a few microseconds of
        # CPU on every request, and closing an idle connection a second late harms no one.
        while True:
            await asyncio.sleep(1.0)
            cutoff = self.loop.time() - KEEP_ALIVE_SECONDS
            for conn in list(self.connections):
                if not conn.busy and conn.last_active < cutoff:
                    conn.close()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, close idle connections, give busy ones `grace` seconds, then close the rest."""
        if self._server is not None:
            self._server.close()
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.closing = True
            if not conn.busy:
                conn.close()
        deadline = asyncio.get_running_loop().time() + grace
        while any(c.busy for c in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)  # polling the in-flight requests, bounded by the grace period
        for conn in list(self.connections):
            conn.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport  # set by connection_made, which asyncio calls before anything else
        self.request = _Request()
        self.queue: deque[_Request] = deque()
        self.busy = False
        self.paused = False  # reading paused: pipelined requests are waiting in the queue
        self.closing = False
        self.size = 0
        self.last_active = 0.0
        self.writable = asyncio.Event()  # cleared while the client does not read what we write
        self.writable.set()

    # asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transports are Transports
        self.server.connections.add(self)
        self.last_active = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.writable.set()  # nothing will drain any more: release a request waiting to write

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()  # a slow upload is not an idle connection
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as err:
            self._fail(400, f"malformed HTTP request: {err}")

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def _pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = _Request()
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.request.headers.append((name, value))
        if name == b"x-unit-id":
            self.request.unit_id = value.decode("latin-1")
        elif name in _FORWARDED:
            pair = forwardable(name.decode(), value.decode("latin-1"))
            if pair is not None:
                self.request.forward += (pair,)

    def on_headers_complete(self) -> None:
        request = self.request
        request.method = self.parser.get_method()
        request.keep_alive = self.parser.should_keep_alive()
        limit = self.server.router.state.config.router.max_body_bytes
        for name, value in request.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                request.too_large = True
            elif name == b"expect" and value.lower() == b"100-continue" and not request.too_large:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request.too_large:
            return  # refused: counted, not kept
        self.size += len(body)
        if self.size > self.server.router.state.config.router.max_body_bytes:
            request.too_large = True
            request.body.clear()
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        self.queue.append(self.request)
        if self.busy:
            # Pipelined requests wait in the queue and the socket, answered in order. Reading is
            # paused only then: pausing and resuming around every request cost an epoll change each.
            self._pause_reading()
        else:
            self.busy = True
            self.loop.create_task(self._serve_queue())

    # answering -----------------------------------------------------------------------------------

    async def _serve_queue(self) -> None:
        try:
            while self.queue:
                request = self.queue.popleft()
                status, headers, body = await self._dispatch(request)
                if self.transport.is_closing():
                    return  # the client went away meanwhile
                keep = request.keep_alive and not self.closing
                self._write(request, status, headers, body, keep)
                if not keep:
                    self.close()
                    return
            # A client that sends but does not read must not pile up answers in memory: read its
            # next request only once what we wrote has drained.
            if not self.writable.is_set():
                self._pause_reading()
                await self.writable.wait()
        finally:
            self.busy = False
        self.last_active = self.loop.time()
        if self.paused and not self.transport.is_closing():
            self.paused = False
            self.transport.resume_reading()

    async def _dispatch(self, request: _Request) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        path, _, query = request.url.partition(b"?")
        match = PREDICT_PATH.match(path.decode("latin-1")) if request.method == b"POST" else None
        try:
            if match is not None:
                body = None if request.too_large else b"".join(request.body)
                status, content, extra = await answer_predict(self.server.router, match.group(1), request.unit_id, body,
                                                              request.forward)
                return status, [(b"content-type", _JSON), *((k.lower().encode(), v.encode()) for k, v in extra.items())], content
            if request.too_large:
                err = too_large(self.server.router.state.config.router.max_body_bytes)
                return err.http_status, [(b"content-type", _JSON)], json.dumps({"error": str(err)}).encode()
            if path == OUTCOMES_PATH:
                if request.method != b"POST":  # as the app answers a known path with another method
                    message = f"Malformed request: {request.method.decode('latin-1')} {path.decode('latin-1')}"
                    return 405, [(b"content-type", _JSON), (b"allow", b"POST")], json.dumps({"error": message}).encode()
                status, content, extra = await answer_outcomes(self.server.router, b"".join(request.body))
                return status, [(b"content-type", _JSON), *((k.lower().encode(), v.encode()) for k, v in extra.items())], content
            return await self._asgi(request, path, query)
        except Exception:
            log.exception("error answering %s %s", request.method.decode(), path.decode("latin-1"))
            return 500, [(b"content-type", _JSON)], b'{"error":"internal error in the router"}'

    async def _asgi(self, request: _Request, path: bytes, query: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": request.method.decode(), "scheme": "http", "path": unquote(path.decode("latin-1")),
                 "raw_path": path, "query_string": query, "root_path": "", "headers": request.headers,
                 "client": self.transport.get_extra_info("peername"), "server": (self.server.host, self.server.port)}
        body = b"".join(request.body)
        sent = False
        disconnected: asyncio.Future[MutableMapping[str, Any]] = self.loop.create_future()

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await disconnected  # nothing more will come; only a disconnect

        response: dict[str, Any] = {"status": 500, "headers": [], "body": []}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response["status"], response["headers"] = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                response["body"].append(message.get("body", b""))

        await self.server.app(scope, receive, send)
        return response["status"], response["headers"], b"".join(response["body"])

    def _write(self, request: _Request, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep: bool) -> None:
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b""))]
        lines.extend(b"%s: %s\r\n" % (k, v) for k, v in headers if k.lower() not in (b"content-length", b"connection"))
        lines.append(b"content-length: %d\r\n" % len(body))
        if not keep:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        if request.method != b"HEAD":
            lines.append(body)
        self.transport.write(b"".join(lines))

    def _fail(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer it and close (the stream's framing is lost)."""
        if not self.transport.is_closing():
            body = json.dumps({"error": message}).encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, HTTPStatus(status).phrase.encode(), len(body), body))
            self.close()
