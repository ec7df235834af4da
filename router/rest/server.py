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
answered 413 without reading the body. Predict's 413 still goes through `Router.predict`, so
that it is counted like any other bad input; the app's handlers read the body this server kept.

One client must not hold what others need (`router.http`, router/config.py): header bytes and
count are limited (431), headers and body must arrive within their deadlines (408), an answer
left unread past the send deadline drops the connection, and each of those answers closes it.
A request the server refuses while earlier pipelined ones are still being answered is answered
after them, in order, so that a client never pairs an error with the wrong request; nothing
after a refusal or after `Connection: close` is parsed or run. Between pipelined requests the
connection yields to the others: 300 pipelined `GET /metrics` once stalled every other client
for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import MutableMapping
from http import HTTPStatus
from itertools import chain
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote

import httptools

from router.backends import FORWARDED_HEADER_BYTES, forwardable
from router.config import HttpLimitsSpec
from router.core import Router
from router.rest.outcomes import OUTCOMES_PATH, answer_outcomes
from router.rest.predict import PREDICT_PATH, answer_predict, too_large

if TYPE_CHECKING:  # the types only: this module does not need Starlette to run
    from starlette.types import ASGIApp

log = logging.getLogger("router.rest.server")

# HTTPStatus(code) is an enum call through Python code on every answer (0.47 us against 0.04 for a dict).
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
_FORWARDED = FORWARDED_HEADER_BYTES  # a live set: it grows with the legacy backend's forward_headers
_JSON_LINE = b"content-type: application/json\r\n"
_NOTED = {b"x-unit-id": "unit", b"content-length": "length", b"expect": "expect"}  # header -> the _Request field it sets
# (status, header lines each ending in CRLF, body): what the server writes for one request,
# content-length and connection added by `_write`. Header lines, not pairs: predict's are
# written in one formatting operation (`router.rest.predict`), not a generator per answer.
_Answer = tuple[int, bytes, bytes]


def _header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """An ASGI app's headers as lines, without the framing headers the server sets itself."""
    return b"".join(b"%s: %s\r\n" % (k, v) for k, v in headers if k.lower() not in (b"content-length", b"connection"))


class _Request:
    __slots__ = ("method", "url", "headers", "body", "too_large", "keep_alive", "unit", "forward", "answer", "length", "expect")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.too_large = False
        self.keep_alive = True
        self.unit: bytes | None = None  # X-Unit-Id, as sent
        self.forward: tuple[tuple[str, str], ...] = ()  # X-Request-Id and trace context, passed on to the backends
        self.method = b""
        self.answer: _Answer | None = None  # set: refused by the server itself
        self.length: bytes | None = None  # Content-Length, as sent
        self.expect: bytes | None = None


class _Stop(Exception):
    """Raised in a parser callback: parse nothing more on this connection."""


LINGER_SECONDS = 2.0  # how long a closing connection's late bytes are read and dropped (nginx: lingering_timeout 5 s)
_IDLE, _HEADERS, _BODY = 0, 1, 2  # where a connection is in reading its current request


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
        # CPU on every request, and enforcing a deadline a second late harms no one.
        while True:
            await asyncio.sleep(1.0)
            limits = self.router.state.config.router.http
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_deadlines(now, limits)

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
        self.busy = False  # a request is being answered (the queue's task is not parked)
        self.parked: asyncio.Future[None] | None = None  # set while the queue's task waits for the next request
        self.paused = False  # reading paused: pipelined requests are waiting in the queue
        self.closing = False
        self.size = 0
        self.last_active = 0.0
        self.writable = asyncio.Event()  # cleared while the client does not read what we write
        self.writable.set()
        self.write_paused = False  # the same, read per request without a call
        self.unread_since = 0.0  # when writing was paused by a client that does not read
        self.phase = _IDLE
        self.phase_started = 0.0
        self.unparsed_header_bytes = 0
        self.limits: HttpLimitsSpec = server.router.state.config.router.http  # the current request's (on_message_begin)
        self.stopped = False  # nothing more is parsed: after a refusal or a request with Connection: close
        self.lingering_since: float | None = None

    # asyncio.Protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transports are Transports
        self.server.connections.add(self)
        self.last_active = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._wake()  # a parked task sees the closed transport and ends
        self.write_paused = False
        self.writable.set()  # nothing will drain any more: release a request waiting to write

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        self.last_active = self.loop.time()  # a slow upload is not an idle connection
        in_headers = self.phase == _HEADERS
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as err:
            if not self.stopped:  # a _Stop from a callback has answered already
                self._refuse(400, f"malformed HTTP request: {err}")
        else:
            # Headers that go on past this read are checked here, the others once they are complete.
            # The parser keeps a header until its end, so what it holds is counted too: one endless
            # header is refused after one read past the limit, not after the client gives up.
            if self.phase == _HEADERS:
                if in_headers:
                    self.unparsed_header_bytes += len(data)
                with contextlib.suppress(_Stop):  # refused: answered in order, nothing more parsed
                    self._check_header_size(max(self.unparsed_header_bytes, self._header_size()))

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        self.unread_since = self.loop.time()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()

    def check_deadlines(self, now: float, limits: HttpLimitsSpec) -> None:
        """The server's sweep: keep-alive, header and body deadlines, an unread answer."""
        if self.write_paused and now - self.unread_since > limits.send_timeout_seconds:
            self.transport.abort()  # what is queued for this client would never drain
        elif self.lingering_since is not None:
            if now - self.lingering_since > LINGER_SECONDS:
                self.close()
        elif self.stopped or self.paused:
            return  # paused: the deadline is ours, not the client's (pipelined requests wait for their turn)
        elif self.phase == _HEADERS and now - self.phase_started > limits.header_timeout_seconds:
            self._refuse(408, f"the request's headers did not arrive within {limits.header_timeout_seconds:g} s "
                              "(router.http.header_timeout_seconds)")
        elif self.phase == _BODY and now - self.phase_started > limits.body_timeout_seconds:
            self._refuse(408, f"the request's body did not arrive within {limits.body_timeout_seconds:g} s "
                              "(router.http.body_timeout_seconds)")
        elif self.phase == _IDLE and not self.busy and now - self.last_active > limits.keep_alive_seconds:
            self.close()

    def _pause_reading(self) -> None:
        if not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _linger(self) -> None:
        """Close after the last answer, as nginx's lingering close does.

        Closing a socket with unread bytes in it makes the kernel send a reset, and a reset can
        destroy the answer before the client reads it: exactly the 413 or 431 sent to a client
        still sending. So the write side is shut (the client sees the end of the answers) and
        what still arrives is read and dropped, for at most LINGER_SECONDS.
        """
        self.stopped = True
        if not self.transport.can_write_eof():
            self.close()
            return
        self.transport.write_eof()
        self.lingering_since = self.loop.time()
        if self.paused:
            self.paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the client is done sending: close (asyncio's default, said here because _linger relies on it)

    # httptools callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.limits = self.server.router.state.config.router.http
        self.request = _Request()
        self.size = 0
        self.phase, self.phase_started = _HEADERS, self.loop.time()
        self.unparsed_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.request.url += url
        if len(self.request.url) > self.limits.max_header_bytes:
            self._check_header_size()

    def _header_size(self) -> int:
        """The bytes of the request line's URL and the headers parsed so far, each header as `name: value` CRLF."""
        headers = self.request.headers
        return len(self.request.url) + 4 * len(headers) + sum(map(len, chain.from_iterable(headers)))

    def _check_header_size(self, size: int | None = None) -> None:
        limits = self.limits
        if len(self.request.headers) > limits.max_headers:
            self._refuse(431, f"the request has more than {limits.max_headers} headers (router.http.max_headers)")
            raise _Stop
        if (self._header_size() if size is None else size) > limits.max_header_bytes:
            self._refuse(431, f"the request line and headers are larger than {limits.max_header_bytes} bytes "
                              "(router.http.max_header_bytes)")
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        # This runs for every header of every request: the few headers the server acts on are
        # noted here, so that nothing loops over the headers again, and their number and size are
        # checked once per read (data_received) or when they are complete (on_headers_complete).
        name = name.lower()
        request = self.request
        request.headers.append((name, value))
        noted = _NOTED.get(name)
        if noted is not None:
            setattr(request, noted, value)
        elif name in _FORWARDED:
            pair = forwardable(name.decode(), value.decode("latin-1"))
            if pair is not None:
                request.forward += (pair,)

    def on_headers_complete(self) -> None:
        request = self.request
        request.method = self.parser.get_method()
        request.keep_alive = self.parser.should_keep_alive()
        self.phase, self.phase_started = _BODY, self.loop.time()
        self._check_header_size()
        length = request.length
        if length is not None and length.isdigit() and int(length) > self.server.router.state.config.router.max_body_bytes:
            request.too_large = True
            # Answered now, the body unread: reading 10^12 announced bytes first would let one
            # client hold the connection (and the answer) for as long as it likes.
            request.keep_alive = False
            self.on_message_complete()
            raise _Stop
        expect = request.expect  # answered once, and only for a request whose headers passed every check
        if expect is not None and expect.lower() == b"100-continue" and not self.busy:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request.too_large:
            return  # refused: counted, not kept
        self.size += len(body)
        if self.size > self.server.router.state.config.router.max_body_bytes:
            request.too_large = True  # a chunked body past the limit: answered now, the rest unread
            request.body.clear()
            request.keep_alive = False
            self.on_message_complete()
            raise _Stop
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        self.phase = _IDLE
        self.queue.append(self.request)
        if not self.request.keep_alive:
            self.stopped = True  # bytes after the last request are neither parsed nor answered
        if self.busy:
            # Pipelined requests wait in the queue and the socket, answered in order. Reading is
            # paused only then: pausing and resuming around every request cost an epoll change each.
            self._pause_reading()
        else:
            self._start_serving()
        if self.stopped:
            raise _Stop

    # answering -----------------------------------------------------------------------------------

    def _start_serving(self) -> None:
        self.busy = True
        if not self._wake():  # the connection's first request, or its task was cancelled (the loop shutting down)
            self.loop.create_task(self._serve_queue())

    def _wake(self) -> bool:
        """Wake the connection's parked task, if one waits; whether one did."""
        parked, self.parked = self.parked, None
        if parked is None or parked.done():
            return False
        parked.set_result(None)
        return True

    async def _serve_queue(self) -> None:
        """The connection's one task while it lives: answers the queue in order, then parks until the next request.

        One task per connection rather than one per request: creating a task registers it in
        asyncio's set of all tasks through Python code, and waking a parked one is a future's
        result. A parked task ends when the connection closes (`connection_lost` wakes it).
        """
        while True:
            try:
                while self.queue and not self.transport.is_closing():
                    request = self.queue.popleft()
                    status, head, body = request.answer or await self._dispatch(request)
                    if self.transport.is_closing():
                        return  # the client went away meanwhile
                    keep = request.keep_alive and not self.closing
                    self._write(request, status, head, body, keep)
                    if not keep:
                        self._linger()
                        return
                    if self.queue:
                        await asyncio.sleep(0)  # pipelined requests take turns with other connections
                    # A client that sends but does not read must not pile up answers in memory: read
                    # its next request only once what we wrote has drained.
                    if self.write_paused:
                        self._pause_reading()
                        await self.writable.wait()
            finally:
                self.busy = False
            self.last_active = self.loop.time()
            if self.transport.is_closing() or self.stopped:
                return  # nothing more will be parsed or answered on this connection
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self.parked = self.loop.create_future()
            await self.parked

    async def _dispatch(self, request: _Request) -> _Answer:
        path, _, query = request.url.partition(b"?")
        match = PREDICT_PATH.match(path.decode("latin-1")) if request.method == b"POST" else None
        try:
            if match is not None:
                body = None if request.too_large else b"".join(request.body)
                unit = None if request.unit is None else request.unit.decode("latin-1")
                status, content, lines = await answer_predict(self.server.router, match.group(1), unit, body, request.forward)
                return status, _JSON_LINE + lines, content
            if request.too_large:
                err = too_large(self.server.router.state.config.router.max_body_bytes)
                return err.http_status, _JSON_LINE, json.dumps({"error": str(err)}).encode()
            if path == OUTCOMES_PATH:
                if request.method != b"POST":  # as the app answers a known path with another method
                    message = f"Malformed request: {request.method.decode('latin-1')} {path.decode('latin-1')}"
                    return 405, _JSON_LINE + b"allow: POST\r\n", json.dumps({"error": message}).encode()
                status, content, lines = await answer_outcomes(self.server.router, b"".join(request.body))
                return status, _JSON_LINE + lines, content
            return await self._asgi(request, path, query)
        except Exception:
            log.exception("error answering %s %s", request.method.decode(), path.decode("latin-1"))
            return 500, _JSON_LINE, b'{"error":"internal error in the router"}'

    async def _asgi(self, request: _Request, path: bytes, query: bytes) -> _Answer:
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
        return response["status"], _header_lines(response["headers"]), b"".join(response["body"])

    def _write(self, request: _Request, status: int, head: bytes, body: bytes, keep: bool) -> None:
        answer = b"HTTP/1.1 %d %s\r\n%scontent-length: %d\r\n%s\r\n" % (
            status, _PHRASES.get(status, b""), head, len(body), b"" if keep else b"connection: close\r\n")
        self.transport.write(answer if request.method == b"HEAD" else answer + body)

    def _refuse(self, status: int, message: str) -> None:
        """A request the server will not run: answered after those before it, then the connection closes.

        Closed because the stream's framing is lost (a parse error) or because reading on would
        give the client what the limit denies it.
        """
        if self.stopped:
            return
        self.stopped = True
        refused = _Request()
        refused.keep_alive = False
        refused.answer = (status, _JSON_LINE, json.dumps({"error": message}).encode())
        self.queue.append(refused)
        if not self.busy:
            self._start_serving()
