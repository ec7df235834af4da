"""A measuring stick for bench_router.py: the least a Python forwarder can do per request, and no more.

    python loadtests/bare_forwarder.py --legacy-port 8081 --port 18080

Not a router and not for use: it checks nothing, assigns nothing, signs and counts nothing. Each
client connection gets its own kept-alive connection to the legacy system; a request's body is
passed to `POST /v1/predict` as it came and the legacy answer's body is passed back as it came,
on the same event loop (uvloop) and HTTP parser (httptools) as the router, with callbacks only (no
task or future per request). What it costs per request, measured in the same rounds as the
router, is what any Python forwarder pays on that machine at that rate (system calls, wake-ups,
the interpreter), so `bench_router.py` reports the router's CPU beside it.
"""

from __future__ import annotations

import argparse
import asyncio
from http import HTTPStatus

import httptools
import uvloop

_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


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
        self.client.answer(self.parser.get_status_code(), body)

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

    def answer(self, status: int, body: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (status, _PHRASES.get(status, b""), len(body), body))

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()

    def close(self) -> None:
        self.transport.close()


async def serve(host: str, port: int, legacy_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(loop, ("127.0.0.1", legacy_port)), host, port)
    print(f"bare forwarder on {host}:{port} -> legacy 127.0.0.1:{legacy_port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--legacy-port", type=int, required=True, help="the legacy system's port on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.legacy_port))


if __name__ == "__main__":
    main()
