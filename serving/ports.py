"""Is a TCP port free? Asked before a server binds it, without importing any server library (or TensorFlow).

Free means: nothing listens on it and our server may bind it. The probe sets SO_REUSEADDR, as
every listener of ours does (uvicorn's for `modelramp legacy`, asyncio's for the model server's
REST front, gRPC core's for its gRPC front): without it the connections a crashed server leaves
in TIME_WAIT (up to a minute on Linux) made the port look taken, so a supervisor's restart on the
same port failed. A port some process listens on still refuses the bind, SO_REUSEADDR or not.
"""

from __future__ import annotations

import socket


def check_port_free(host: str, port: int) -> None:
    """Fail early with a clear message instead of a bind error deep inside a server library."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise OSError(f"port {port} on {host} is already in use") from None
