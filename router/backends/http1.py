"""A minimal keep-alive HTTP/1.1 client for the legacy hot path (asyncio protocol + httptools parser).

Measured on loopback (one request in flight): aiohttp 110-165 us CPU and 195-300 us wall per
POST, this client 25-35 us CPU and 95-160 us wall. The legacy call is on 99% of requests at
stage 1, so that difference is most of what the router adds. It does only what the router
needs: POST/GET with a body, a bounded pool of kept-alive connections, a deadline per call,
one retry on a fresh connection when a reused one turns out closed before any answer byte.
With `keep_headers` a pool also hands back the answer's headers (the demo's simulated clients read
the router's X-Modelramp-* headers with it); the router's own pools parse none.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools

# (status, body, keep-alive) of one answer.
_Answer = tuple[int, bytes, bool]


class _Connection(asyncio.Protocol):
    # Set by connection_made, which the loop calls before create_connection hands the protocol back:
    # every _Connection the pool sees has one.
    transport: asyncio.Transport

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[_Answer] | None = None
        self.body: list[bytes] = []
        self.received = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream connection's transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"bad HTTP response: {err}"))
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        body, self.body = b"".join(self.body), []
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), body, self.parser.should_keep_alive()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("connection closed by the server"))

    def _fail(self, err: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(err)


class _HeaderConnection(_Connection):
    """A connection whose parser also reports headers, into the dict the current request passed (lower-case names)."""

    def __init__(self) -> None:
        self.sink: dict[str, str] | None = None  # set before httptools looks for on_header below
        super().__init__()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.sink is not None:
            self.sink[name.decode("latin-1").lower()] = value.decode("latin-1")


class Http1Pool:
    """Kept-alive connections to one origin (`http://host:port`), at most `max_connections` in use."""

    def __init__(self, base_url: str, max_connections: int = 256, ssl_context: ssl.SSLContext | None = None,
                 keep_headers: bool = False):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"only http:// and https:// URLs with a host are supported, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        # https: `ssl_context`, else the system's trust store and hostname checking (Python's client defaults).
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.prefix = parts.path.rstrip("/")
        self._prefix = self.prefix.encode()
        self._host_header = f"{self.host}:{self.port}".encode()
        self._idle: list[_Connection] = []
        # A counter and a queue rather than asyncio.Semaphore, whose acquire and release run seven
        # Python functions per request although a request rarely has to wait for a connection.
        self._max = max_connections
        self._busy = 0  # requests in flight, each on its own connection
        self._waiting: deque[asyncio.Future[None]] = deque()  # requests waiting for one of them to finish
        # The loop, kept from the first request: asyncio.get_running_loop() and current_task()
        # without a loop each make a getpid() system call (fork detection).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._protocol: type[_Connection] = _HeaderConnection if keep_headers else _Connection
        self._keep_headers = keep_headers

    async def request(self, method: str, path: str, body: bytes = b"", timeout: float = 1.0,
                      headers: bytes = b"", answer_headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body); raises asyncio.TimeoutError or ConnectionError/OSError. `headers`: extra lines, each ending in CRLF.

        `answer_headers` (a pool made with `keep_headers` only) receives the answer's headers.
        """
        if answer_headers is not None and not self._keep_headers:
            raise ValueError("answer_headers needs a pool made with keep_headers=True")
        # A timer that cancels this task, not asyncio.wait_for: on Python < 3.12 wait_for wraps the
        # call in a new Task, an extra scheduling round per request on the hottest path.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Http1Pool.request must run in an asyncio task")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = loop.call_later(timeout, expire)
        try:
            if self._busy >= self._max:
                await self._wait_for_connection(loop)
            self._busy += 1
            try:
                # Written out here, not in a coroutine of its own: each level of coroutines is
                # suspended and resumed again on every request.
                head = b"%s %s%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n" % (
                    method.encode(), self._prefix, path.encode(), self._host_header, headers, len(body))
                for attempt in (0, 1):
                    conn = self._idle_connection()
                    reused = conn is not None
                    if conn is None:  # not a coroutine per call when, as nearly always, an idle connection waits
                        _, conn = await loop.create_connection(self._protocol, self.host, self.port, ssl=self._ssl)
                    conn.received = False
                    if self._keep_headers:
                        cast(_HeaderConnection, conn).sink = answer_headers
                    conn.waiter = loop.create_future()
                    conn.transport.write(head + body)
                    try:
                        status, payload, keep_alive = await conn.waiter
                    except ConnectionError:
                        conn.transport.close()
                        # A kept-alive connection the server closed meanwhile: nothing was processed, try a new one.
                        if reused and not conn.received and attempt == 0:
                            continue
                        raise
                    except BaseException:
                        conn.transport.close()  # cancelled or timed out mid-answer: the connection's state is unknown
                        raise
                    if keep_alive and not conn.closed:
                        self._idle.append(conn)
                    else:
                        conn.transport.close()
                    return status, payload
                raise AssertionError("unreachable")
            finally:
                self._busy -= 1
                if self._waiting:
                    self._wake_next()
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancellation is consumed here
                task.uncancel()
            raise asyncio.TimeoutError(f"no answer within {timeout:.3f}s") from None
        finally:
            handle.cancel()

    async def _wait_for_connection(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._busy >= self._max:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken, then cancelled before it ran: the turn passes to the next in line
                raise

    def _wake_next(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # those that timed out while waiting are skipped
                waiter.set_result(None)
                return

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def close(self) -> None:
        for conn in self._idle:
            conn.transport.close()
        self._idle.clear()
