"""A measuring stick for bench_router.py: the least a Python forwarder can do per request, and no more.

    python loadtests/bare_forwarder.py --legacy-port 8081 --port 18080 [--shape awaiting]

Not a router and not for use: it checks nothing, assigns nothing, signs and counts nothing. Each
client connection gets its own kept-alive connection to the legacy system; a request's body is
passed to `POST /v1/predict` as it came and the legacy answer's body is passed back as it came,
on the same event loop (uvloop) and HTTP parser (httptools) as the router, with callbacks only (no
task or future per request). What it costs per request, measured in the same rounds as the
router, is what any Python forwarder pays on that machine at that rate (system calls, wake-ups,
the interpreter), so `bench_router.py` reports the router's CPU beside it.

`--shape awaiting` moves the same bytes in the router's shape: one task per client connection,
parked on a future between requests (as `router.rest.server`), and each legacy call a future
with a deadline timer awaited through as many coroutine levels as the router's legacy path
(server, REST front, router, legacy arm, backend, pool). Its cost minus the callbacks' is what
that shape costs, the most a callbacks-only legacy path in the router could save; the router's
minus its is what the router does (checks, assignment, signing, counting).
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from http import HTTPStatus

import httptools
import uvloop

_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
LEVELS = 6  # coroutines between the router's connection task and its pool's future (see the module's docstring)
DEADLINE_SECONDS = 1.0


class _Upstream(asyncio.Protocol):
    """The connection to the legacy system of one client connection; answers go straight back."""

    def __init__(self, client: _Client):
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.client.upstream_ready(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.client.answered(self.parser.get_status_code(), body)

    def connection_lost(self, exc) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, legacy: tuple[str, int]):
        self.loop, self.legacy = loop, legacy
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.upstream: _Upstream | None = None
        self.waiting: list[bytes] = []  # bodies that came before the legacy connection was up

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: _Upstream(self), *self.legacy)
        except OSError:
            self.transport.close()  # no legacy system: the client sees its connection closed

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        for body in self.waiting:
            self.forward(upstream, body)
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.upstream is None:
            self.waiting.append(body)
        else:
            self.forward(self.upstream, body)

    def forward(self, upstream: _Upstream, body: bytes) -> None:
        upstream.transport.write(b"POST /v1/predict HTTP/1.1\r\nHost: legacy\r\ncontent-type: application/json\r\n"
                                      b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def answered(self, status: int, body: bytes) -> None:
        self.answer(status, body)

    def answer(self, status: int, body: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, _PHRASES.get(status, b""), len(body), body))

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()

    def close(self) -> None:
        self.transport.close()


class _AwaitingClient(_Client):
    """The same bytes in the router's shape: a task per connection, a future and a timer per call, LEVELS coroutines."""

    def __init__(self, loop: asyncio.AbstractEventLoop, legacy: tuple[str, int]):
        super().__init__(loop, legacy)
        self.queue: deque[bytes] = deque()
        self.parked: asyncio.Future[None] | None = None
        self.reply: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.task = self.loop.create_task(self._serve())

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.queue.append(body)
        parked, self.parked = self.parked, None
        if parked is not None and not parked.done():
            parked.set_result(None)

    async def _serve(self) -> None:
        try:
            _, upstream = await self.loop.create_connection(lambda: _Upstream(self), *self.legacy)
        except OSError:
            self.transport.close()
            return
        try:
            while not self.transport.is_closing():
                if not self.queue:
                    self.parked = self.loop.create_future()
                    await self.parked
                    continue
                status, body = await self._through(LEVELS, upstream, self.queue.popleft())
                self.answer(status, body)
        finally:
            self.transport.close()  # a legacy call past its deadline ends the task: the client must not wait on

    async def _through(self, levels: int, upstream: _Upstream, body: bytes) -> tuple[int, bytes]:
        if levels:
            return await self._through(levels - 1, upstream, body)
        reply: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()
        self.reply = reply
        timer = self.loop.call_later(DEADLINE_SECONDS, reply.cancel)
        try:
            self.forward(upstream, body)
            return await reply
        finally:
            timer.cancel()

    def answered(self, status: int, body: bytes) -> None:
        reply, self.reply = self.reply, None
        if reply is not None and not reply.done():
            reply.set_result((status, body))

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        self.task.cancel()


async def serve(host: str, port: int, legacy_port: int, shape: str = "callbacks") -> None:
    loop = asyncio.get_running_loop()
    client = _AwaitingClient if shape == "awaiting" else _Client
    server = await loop.create_server(lambda: client(loop, ("127.0.0.1", legacy_port)), host, port)
    print(f"bare forwarder ({shape}) on {host}:{port} -> legacy 127.0.0.1:{legacy_port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legacy-port", type=int, required=True, help="the legacy system's port on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--shape", choices=("callbacks", "awaiting"), default="callbacks",
                        help="callbacks only (default), or the router's tasks, futures and coroutine levels")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.legacy_port, args.shape))


if __name__ == "__main__":
    main()
