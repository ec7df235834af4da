"""The router's own HTTP/1.1 server on loopback, driven with raw bytes: framing, keep-alive, limits, errors."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from router.core import Router
from router.rest.app import create_app
from router.rest.server import HttpServer
from router.signing import Signer
from tests.router.fakes import fake_factory, make_config
from tests.support.processes import free_port

BODY = json.dumps({"instances": [{"state": "KS", "total_day_minutes": 100.0}]}).encode()


def predict(body: bytes = BODY, *, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    return (b"POST /v1/models/churn:predict " + version + b"\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Unit-Id: u1\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(b": ", 1) for line in lines[1:] if line)
    headers = {k.lower(): v for k, v in headers.items()}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get(b"content-length", b"0"))), 5)
    return status, headers, body



async def closed_by_the_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def still_serving(port: int) -> None:
    """A new connection's predict is answered: the server goes on serving others."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(predict())
    assert (await read_response(reader))[0] == 200
    writer.close()

def run(test, max_body_bytes: int = 4096):
    """Run `test(port, server)` against a server over a router with in-test backends."""
    async def go():
        router = Router(make_config(0.0, router={"max_body_bytes": max_body_bytes}), signer=Signer(b"k"),
                        backend_factory=fake_factory, rng=random.Random(1))
        await router.refresh_metadata()
        server = HttpServer(router, create_app(router, None), "127.0.0.1", free_port())
        await server.start()
        try:
            await test(server.port, server)
        finally:
            await server.stop(grace=1)
            await router.close()

    asyncio.run(go())


def test_predict_and_other_routes_on_one_kept_alive_connection():
    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(predict())
        status, headers, body = await read_response(reader)
        assert status == 200 and headers[b"x-modelramp-arm"] == b"legacy"
        assert json.loads(body) == {"predictions": [1.0]}
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # the FastAPI route, same connection
        status, _, body = await read_response(reader)
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        writer.write(b"GET /v1/experiments/nope HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 404 and "unknown experiment" in json.loads(body)["error"]
        writer.close()

    run(test)


def test_pipelined_requests_are_answered_in_order():
    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(predict() + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + predict(b"{not json"))
        answers = [await read_response(reader) for _ in range(3)]
        assert [a[0] for a in answers] == [200, 200, 400]
        assert json.loads(answers[1][2]) == {"status": "ok"}
        assert "malformed JSON" in json.loads(answers[2][2])["error"]
        writer.close()

    run(test)


def test_body_over_the_limit_is_413_unread_and_closed():
    async def test(port, server):
        big = b'{"instances": [' + b" " * 5000 + b"]}"
        for request in (predict(big), b"POST /v1/outcomes HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(big) + big):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, body = await read_response(reader)
            assert status == 413 and "larger than the limit of 4096 bytes" in json.loads(body)["error"]
            assert headers[b"connection"] == b"close"
            await closed_by_the_server(reader, writer)
        await still_serving(port)

    run(test)


def test_expect_100_continue_and_http_1_0_close():
    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/models/churn:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(BODY))
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(BODY)
        assert (await read_response(reader))[0] == 200
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(predict(version=b"HTTP/1.0"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        await closed_by_the_server(reader, writer)

    run(test)


@pytest.mark.parametrize("garbage", [b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"])
def test_malformed_request_is_400_and_closed(garbage):
    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        status, headers, body = await read_response(reader)
        assert status == 400 and headers[b"connection"] == b"close" and "malformed HTTP request" in json.loads(body)["error"]
        await closed_by_the_server(reader, writer)
        await still_serving(port)

    run(test)


def test_stop_lets_a_request_in_flight_finish():
    async def test(port, server):
        gate = asyncio.Event()
        server.router.state.backends["legacy"].gate = gate  # the legacy answer waits for the gate
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(predict())
        while not any(c.busy for c in server.connections):
            await asyncio.sleep(0.001)
        stopping = asyncio.ensure_future(server.stop(grace=5))
        await asyncio.sleep(0)
        gate.set()
        assert (await read_response(reader))[0] == 200
        await stopping
        await closed_by_the_server(reader, writer)

    run(test)


def test_a_failing_request_is_500_and_the_connection_goes_on(monkeypatch):
    import router.rest.server as http_server

    async def broken(*args):
        raise RuntimeError("a bug")

    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with monkeypatch.context() as m:
            m.setattr(http_server, "answer_predict", broken)
            writer.write(predict())
            status, _, body = await read_response(reader)
        assert status == 500 and json.loads(body) == {"error": "internal error in the router"}
        writer.write(predict())
        assert (await read_response(reader))[0] == 200
        writer.close()

    run(test)


def test_a_client_that_does_not_read_is_not_read_from():
    async def test(port, server):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(predict())
        assert (await read_response(reader))[0] == 200
        (conn,) = server.connections
        conn.pause_writing()  # as the transport does when the client's window is full
        writer.write(predict())
        while conn.queue or not conn.busy:  # the request was taken and answered, and waits for the drain
            await asyncio.sleep(0.001)
        assert conn.busy and not conn.transport.is_reading()
        conn.resume_writing()
        assert (await read_response(reader))[0] == 200
        while conn.busy:
            await asyncio.sleep(0.001)
        assert conn.transport.is_reading()
        writer.close()

    run(test)
