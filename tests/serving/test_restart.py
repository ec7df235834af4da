"""A crashed server restarts on its port at once: `modelramp legacy` and `serve-model` (REST and gRPC)
after kill -9 with clients connected, while the port still has connections in TIME_WAIT."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import httpx

from serving.tfserving import protos
from tests.conftest import start_legacy, start_model_server
from tests.support.processes import Process, port_open, wait_until

TIME_WAIT = "06"  # the state's number in /proc/net/tcp


def time_wait(port: int) -> int:
    """How many sockets on local port `port` are in TIME_WAIT (IPv4 and IPv6)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == TIME_WAIT:
                n += 1
    return n


HTTP1 = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
HTTP2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # preface, empty SETTINGS
SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"  # the server's: it has read our SETTINGS


def connected(port: int, greeting: bytes, until: bytes) -> socket.socket:
    """A client connection the server accepted and answered up to `until`, having read all we sent.

    A socket closed with bytes it never read sends a reset, not a FIN: the server's end must
    have read the greeting for a kill to leave it in TIME_WAIT.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(greeting)
    seen = b""
    while until not in seen:
        chunk = s.recv(65536)
        assert chunk, f"the server closed before answering {until!r}: {seen!r}"
        seen += chunk
    return s


def close_after_server(s: socket.socket) -> None:
    """Read to the end (the server's FIN), then close: the server's end, closed first, stays in TIME_WAIT.

    Closing with unread bytes would send a reset instead, which ends the server's end at once.
    """
    while s.recv(65536):
        pass
    s.close()


def model_status(target: str):
    """GetModelStatus for churn over a channel of its own (an established gRPC connection while it is open)."""
    with grpc.insecure_channel(target) as channel:
        request = protos.GetModelStatusRequest()
        request.model_spec.name = "churn"
        call = channel.unary_unary(protos.GET_MODEL_STATUS_METHOD, request_serializer=protos.GetModelStatusRequest.SerializeToString,
                                   response_deserializer=protos.GetModelStatusResponse.FromString)
        return call(request, timeout=10)


def test_legacy_restarts_on_its_port_after_kill_9(tmp_path):
    legacy = start_legacy(tmp_path)
    port = legacy.http_port
    client = connected(port, HTTP1, b'"ok"')
    legacy.process.kill()  # kill -9: the kernel closes the server's end first
    legacy.process.stop()  # closes its log
    close_after_server(client)
    assert time_wait(port) >= 1, "the test needs a connection in TIME_WAIT on the port"
    again = Process(["legacy", "--port", str(port)], tmp_path / "legacy-again.log")
    try:
        wait_until(lambda: port_open(port) and httpx.get(f"{legacy.url}/healthz", timeout=2).status_code == 200,
                   timeout=30, what="legacy system back on its port", proc=again.proc)
    except Exception:
        print(again.log())
        raise
    finally:
        again.stop()


def test_model_server_restarts_on_its_ports_after_kill_9(models_dir, tmp_path):
    server = start_model_server(models_dir, tmp_path, both_versions=False)
    ports = (server.grpc_port, server.rest_port)
    assert model_status(server.grpc_target).model_version_status
    clients = [connected(server.rest_port, HTTP1, b"\r\n\r\n"), connected(server.grpc_port, HTTP2, SETTINGS_ACK)]
    server.process.kill()
    server.process.stop()  # closes its log
    for client in clients:
        close_after_server(client)
    assert time_wait(server.rest_port) >= 1 and time_wait(server.grpc_port) >= 1, "the test needs TIME_WAIT on both ports"
    again = start_model_server(models_dir, tmp_path, both_versions=False, ports=ports)
    try:
        assert model_status(server.grpc_target).model_version_status
    finally:
        again.process.stop()
