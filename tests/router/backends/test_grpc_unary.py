"""The router's own unary gRPC client against real gRPC servers (grpcio's, gRPC core's HTTP/2) on loopback.

Each behaviour here is one the grpc.aio channel it replaced gave the model arm: round robin over
a target's addresses, flow control for messages larger than HTTP/2's default windows and
frames, deadlines that reach the server (it sees the call cancelled), gRPC status codes and
percent-encoded messages, a server's stream limit, a graceful shutdown (GOAWAY) and a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from pydantic import ValidationError

from router.backends.grpc_unary import UnaryGrpcClient
from router.config import TfServingGrpcSpec
from router.grpc_target import parse_target
from serving.tfserving import errors
from tests.support.processes import free_port

ECHO, SLOW, FAIL, BIG, PEER = "/test.Svc/Echo", "/test.Svc/Slow", "/test.Svc/Fail", "/test.Svc/Big", "/test.Svc/Peer"


@dataclass
class Server:
    port: int
    server: grpc.Server
    calls: list[str] = field(default_factory=list)  # the methods it answered
    metadata: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # lets SLOW calls finish
    cancelled: threading.Event = field(default_factory=threading.Event)  # a SLOW call saw the client give up
    peers: set[str] = field(default_factory=set)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_server(port: int | None = None, options: tuple[tuple[str, int], ...] = (), *, peer_barrier: threading.Barrier | None = None) -> Server:
    """A grpcio server with raw-bytes methods (no serializers): what arrives is what the client sent."""
    port = port or free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    state = Server(port, server)

    def record(method: str, context: grpc.ServicerContext) -> None:
        state.calls.append(method)
        state.metadata.append(dict(context.invocation_metadata()))

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        record(ECHO, context)
        return request[::-1]

    def slow(request: bytes, context: grpc.ServicerContext) -> bytes:
        record(SLOW, context)
        context.add_callback(state.cancelled.set)  # when the call ends: at once if the client gives up, else after `release`
        state.release.wait(10)
        return b"late"

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        record(FAIL, context)
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())

    def big(request: bytes, context: grpc.ServicerContext) -> bytes:
        record(BIG, context)
        return bytes(range(256)) * (int(request.decode()) // 256)

    def peer(request: bytes, context: grpc.ServicerContext) -> bytes:
        record(PEER, context)
        state.peers.add(context.peer())
        if peer_barrier is not None:
            peer_barrier.wait(10)  # every call in at once: only if the client does not queue them behind the limit
        return b"ok"

    handlers = {name.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(fn)
                for name, fn in ((ECHO, echo), (SLOW, slow), (FAIL, fail), (BIG, big), (PEER, peer))}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Svc", handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return state


@pytest.fixture
def servers() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: object, **kwargs: object) -> Server:
        server = start_server(*args, **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.release.set()
        server.server.stop(0)


def run(coroutine_fn: Callable[[], object]) -> object:
    return asyncio.run(coroutine_fn())  # type: ignore[arg-type]


def test_a_call_carries_its_message_and_metadata(servers):
    server = servers()

    async def go() -> bytes:
        client = UnaryGrpcClient(server.target)
        try:
            return await client.call(ECHO, b"hello", 2.0, [("x-request-id", "req-1"), ("traceparent", "00-abc-def-01")])
        finally:
            client.close()

    assert run(go) == b"olleh"
    assert server.metadata[0]["x-request-id"] == "req-1" and server.metadata[0]["traceparent"] == "00-abc-def-01"


def test_messages_larger_than_the_default_windows_and_frames_go_both_ways(servers):
    server = servers()
    request = bytes(range(256)) * 4096  # 1 MiB out: 16 times HTTP/2's initial window, 64 frames of the default size
    answer_size = 3 * 1024 * 1024  # 3 MiB back

    async def go() -> tuple[bytes, bytes]:
        client = UnaryGrpcClient(server.target)
        try:
            echoed = await client.call(ECHO, request, 10.0)
            big = await client.call(BIG, str(answer_size).encode(), 10.0)
            return echoed, big
        finally:
            client.close()

    echoed, big = run(go)  # type: ignore[misc]
    assert echoed == request[::-1]
    assert big == bytes(range(256)) * (answer_size // 256)


def test_an_answer_over_the_message_limit_is_refused_not_buffered(servers):
    server = servers()

    async def go() -> None:
        client = UnaryGrpcClient(server.target, max_message_bytes=10_000)
        try:
            with pytest.raises(errors.UserFacingError, match="larger than 10000 bytes"):
                await client.call(BIG, b"100000", 5.0)
            assert await client.call(ECHO, b"ab", 2.0) == b"ba"  # the connection serves on
        finally:
            client.close()

    run(go)


def test_grpc_status_and_its_percent_encoded_message_become_the_matching_error(servers):
    server = servers()
    message = "no model 'churn' \u2014 100% sure"  # a non-ASCII character and a percent sign, both percent-encoded on the wire

    async def go() -> None:
        client = UnaryGrpcClient(server.target)
        try:
            with pytest.raises(errors.NotFound) as caught:
                await client.call(FAIL, message.encode(), 2.0)
            assert str(caught.value) == message
        finally:
            client.close()

    run(go)


def test_a_deadline_fails_the_call_in_time_and_the_server_sees_it_cancelled(servers):
    server = servers()

    async def go() -> float:
        client = UnaryGrpcClient(server.target)
        try:
            await client.call(ECHO, b"warm", 2.0)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(errors.DeadlineExceeded):
                await client.call(SLOW, b"", 0.2)
            waited = loop.time() - start
            # The connection is kept for the next call: the server is slow, not gone (it answers the PING).
            assert await client.call(ECHO, b"after", 2.0) == b"retfa"
            return waited
        finally:
            client.close()

    waited = run(go)
    assert 0.19 <= waited < 5.0  # type: ignore[operator]
    assert server.cancelled.wait(5), "the server never learned that the client gave up (RST_STREAM / grpc-timeout)"
    server.release.set()


def test_calls_go_round_robin_over_every_address_of_the_target(servers):
    a, b = servers(), servers()

    async def go() -> None:
        client = UnaryGrpcClient(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}")
        try:
            for i in range(40):
                assert await client.call(ECHO, b"%d" % i, 2.0) == (b"%d" % i)[::-1]
        finally:
            client.close()

    run(go)
    assert len(a.calls) == len(b.calls) == 20


def test_a_servers_stream_limit_is_kept_by_opening_another_connection(servers):
    calls = 8
    server = servers(options=(("grpc.max_concurrent_streams", 2),), peer_barrier=threading.Barrier(calls))

    async def go() -> list[bytes]:
        client = UnaryGrpcClient(server.target)
        try:
            await client.call(ECHO, b"warm", 2.0)  # the server's SETTINGS (its limit) arrive with the first answer
            return list(await asyncio.gather(*(client.call(PEER, b"", 10.0) for _ in range(calls))))
        finally:
            client.close()

    assert run(go) == [b"ok"] * calls  # all 8 were in the server at once (its barrier), 2 per connection
    assert len(server.peers) >= calls // 2


def test_a_graceful_stop_finishes_the_call_in_flight_and_the_next_call_reaches_the_restarted_server(servers):
    first = servers()

    async def go() -> tuple[bytes, bytes]:
        client = UnaryGrpcClient(first.target)
        try:
            await client.call(ECHO, b"warm", 2.0)
            in_flight = asyncio.ensure_future(client.call(SLOW, b"", 10.0))
            while SLOW not in first.calls:
                await asyncio.sleep(0.01)  # polling the server's record of the call, not a fixed wait
            stopping = first.server.stop(grace=10)  # GOAWAY: no new calls on this connection; the one in flight may finish
            first.release.set()
            late = await in_flight
            await asyncio.get_running_loop().run_in_executor(None, stopping.wait)
            second = start_server(first.port)
            try:
                return late, await client.call(ECHO, b"again", 5.0)
            finally:
                second.server.stop(0)
        finally:
            client.close()

    assert run(go) == (b"late", b"niaga")


def test_an_unreachable_target_fails_fast_as_unavailable():
    port = free_port()

    async def go() -> None:
        client = UnaryGrpcClient(f"127.0.0.1:{port}")
        try:
            with pytest.raises(errors.Unavailable, match="cannot connect"):
                await client.call(ECHO, b"", 2.0)
        finally:
            client.close()

    run(go)


def test_a_server_that_does_not_speak_http2_is_an_error_not_a_hang():
    async def go() -> None:
        async def http1_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(http1_answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UnaryGrpcClient(f"127.0.0.1:{port}", retries=0)
        try:
            with pytest.raises(errors.Unavailable, match="HTTP/2"):
                await client.call(ECHO, b"", 2.0)
        finally:
            client.close()
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    run(go)


@pytest.mark.parametrize("target, authority, hosts", [
    ("127.0.0.1:8500", "127.0.0.1:8500", [("127.0.0.1", 8500)]),
    ("dns:///tfs-headless:8500", "tfs-headless:8500", [("tfs-headless", 8500)]),
    ("ipv4:10.0.0.1:8500,10.0.0.2:8501", "10.0.0.1:8500", [("10.0.0.1", 8500), ("10.0.0.2", 8501)]),
    ("ipv6:[::1]:8500", "[::1]:8500", [("::1", 8500)]),
])
def test_targets_as_grpc_names_them(target, authority, hosts):
    assert parse_target(target) == (authority, hosts)


@pytest.mark.parametrize("target", ["unix:/run/tfs.sock", "http://tfs:8500", "tfs", "tfs:http", "dns://8.8.8.8/tfs:8500", ":8500"])
def test_the_experiment_file_refuses_a_target_the_client_cannot_dial(target):
    with pytest.raises(ValidationError, match="host:port"):
        TfServingGrpcSpec(target=target, model_name="churn")
