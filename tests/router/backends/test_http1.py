"""The hot-path HTTP/1.1 client against in-test asyncio servers: reuse, stale connections, deadlines, refusals, TLS."""

from __future__ import annotations

import asyncio

import pytest

from router.backends.http1 import Http1Pool
from tests.support.processes import free_port


async def serve(close_after_each: bool = False, delay: float = 0.0):
    connections = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next((line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), b"0"))
                body = await reader.readexactly(length)
                await asyncio.sleep(delay)
                answer = b'{"echo": %d}' % len(body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
                if close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away
        finally:
            writer.close()

    server = await asyncio.start_server(lambda r, w: handle(r, w), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


async def stop(server, connections) -> None:
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # let the handlers' transports finish closing before the loop ends (not synchronisation of the test)


def test_reuses_connections_and_recovers_from_a_closed_one():
    async def go():
        server, port, connections = await serve()
        pool = Http1Pool(f"http://127.0.0.1:{port}")
        for i in range(5):
            assert await pool.request("POST", "/v1/predict", b"x" * i) == (200, b'{"echo": %d}' % i)
        assert len(connections) == 1, "one kept-alive connection"
        connections[0].close()  # the server drops the idle connection
        assert (await pool.request("POST", "/v1/predict", b"abc"))[0] == 200
        assert len(connections) == 2
        pool.close()
        await stop(server, connections)

    asyncio.run(go())


def test_a_pool_that_keeps_headers_hands_each_request_its_own_answer_headers():
    async def go():
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    unit = next(line.split(b": ")[1] for line in head.split(b"\r\n") if line.startswith(b"X-Unit-Id"))
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Modelramp-Arm: arm-%s\r\nContent-Length: 2\r\n\r\nok" % unit)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Http1Pool(f"http://127.0.0.1:{port}", keep_headers=True)
        answers = [{} for _ in range(20)]
        results = await asyncio.gather(*(pool.request("POST", "/x", b"", 5.0, b"X-Unit-Id: %d\r\n" % i, answer_headers=a)
                                         for i, a in enumerate(answers)))
        assert all(r == (200, b"ok") for r in results)
        # Twenty concurrent requests over reused connections: each got the answer to its own request.
        assert [a["x-modelramp-arm"] for a in answers] == [f"arm-{i}" for i in range(20)]
        with pytest.raises(ValueError, match="keep_headers"):
            await Http1Pool(f"http://127.0.0.1:{port}").request("POST", "/x", answer_headers={})
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(go())


def test_server_closing_after_each_answer():
    async def go():
        server, port, connections = await serve(close_after_each=True)
        pool = Http1Pool(f"http://127.0.0.1:{port}")
        for _ in range(3):
            assert (await pool.request("GET", "/healthz"))[0] == 200
        pool.close()
        await stop(server, connections)

    asyncio.run(go())


def test_deadline_and_refused():
    async def go():
        server, port, connections = await serve(delay=1.0)
        with pytest.raises(asyncio.TimeoutError):
            await Http1Pool(f"http://127.0.0.1:{port}").request("POST", "/", b"", timeout=0.05)
        await stop(server, connections)
        with pytest.raises(OSError):
            await Http1Pool(f"http://127.0.0.1:{free_port()}").request("POST", "/", b"", timeout=1)
        for unusable in ("ftp://example.invalid", "http:///no-host", "example.invalid:80"):
            with pytest.raises(ValueError):
                Http1Pool(unusable)

    asyncio.run(go())


def test_a_deadline_is_consumed_and_an_outside_cancel_is_not():
    async def go():
        server, port, connections = await serve(delay=1.0)
        pool = Http1Pool(f"http://127.0.0.1:{port}")
        with pytest.raises(asyncio.TimeoutError):
            await pool.request("POST", "/", b"", timeout=0.05)
        await asyncio.sleep(0)  # the timed-out task goes on: its own cancellation was used up by the deadline
        call = asyncio.ensure_future(pool.request("POST", "/", b"", timeout=5))
        while len(connections) < 2:  # until the call is waiting on the server (its own connection)
            await asyncio.sleep(0.001)
        call.cancel()  # a caller giving up is a cancellation, not a timeout
        with pytest.raises(asyncio.CancelledError):
            await call
        await stop(server, connections)

    asyncio.run(go())


def test_at_most_max_connections_in_use_and_a_waiter_that_times_out_takes_no_slot():
    async def main() -> None:
        release, both_arrived = asyncio.Event(), asyncio.Event()
        in_server, peak = 0, 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal in_server, peak
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    in_server += 1
                    peak = max(peak, in_server)
                    if in_server == 2:
                        both_arrived.set()
                    await release.wait()
                    in_server -= 1
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = Http1Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", max_connections=2)
        held = [asyncio.create_task(pool.request("GET", "/", timeout=10)) for _ in range(2)]
        await asyncio.wait_for(both_arrived.wait(), 10)
        with pytest.raises(asyncio.TimeoutError):
            await pool.request("GET", "/", timeout=0.05)  # both connections busy: it waits, then its deadline passes
        queued = [asyncio.create_task(pool.request("GET", "/", timeout=10)) for _ in range(4)]
        release.set()
        answers = await asyncio.gather(*held, *queued)
        assert answers == [(200, b"{}")] * 6
        assert peak == 2  # never more than max_connections at the server
        # No slot leaked (not even by the waiter that timed out): two requests are at the server at once again.
        release.clear()
        both_arrived.clear()
        again = [asyncio.create_task(pool.request("GET", "/", timeout=10)) for _ in range(2)]
        await asyncio.wait_for(both_arrived.wait(), 5)
        release.set()
        assert await asyncio.gather(*again) == [(200, b"{}")] * 2
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_legacy_backend_passes_on_forwarded_headers():
    """What a front asked to forward (X-Request-Id, traceparent) is in the legacy call's request head, and only then."""
    from router.backends import PredictCall, forwarding
    from router.backends.legacy_http import LegacyHttpBackend
    from router.config import LegacyHttpSpec

    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                answer = b'{"predictions": [{"probability": 0.5}]}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def go() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = LegacyHttpBackend(LegacyHttpSpec(kind="legacy_http", url=f"http://127.0.0.1:{port}"))
        call = PredictCall(None, rows=[{"x": 1.0}])
        with forwarding((("x-request-id", "abc-1"), ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"))):
            await backend.predict(call, 2.0)
        await backend.predict(call, 2.0)
        await backend.close()
        server.close()
        await server.wait_closed()

    asyncio.run(go())
    assert b"\r\nx-request-id: abc-1\r\n" in heads[0] and b"\r\ntraceparent: 00-" in heads[0]
    assert b"x-request-id" not in heads[1] and b"traceparent" not in heads[1]


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (subjectAltName) and its key, made by the openssl command."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def test_https_with_a_trusted_certificate_and_refused_without(tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_side)
        port = server.sockets[0].getsockname()[1]
        trusted = Http1Pool(f"https://127.0.0.1:{port}", ssl_context=ssl.create_default_context(cafile=cert))
        assert await trusted.request("GET", "/x", timeout=5.0) == (200, b"ok")
        assert await trusted.request("GET", "/y", timeout=5.0) == (200, b"ok")  # kept alive over TLS
        untrusted = Http1Pool(f"https://127.0.0.1:{port}")  # the system's trust store does not know this certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.request("GET", "/x", timeout=5.0)
        trusted.close()
        untrusted.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
