"""Is a TCP port free? Asked before a server binds it, without importing any server library (or TensorFlow)."""

from __future__ import annotations

import socket


def check_port_free(host: str, port: int) -> None:
    """Fail early with a clear message instead of a bind error deep inside a server library."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise OSError(f"port {port} on {host} is already in use") from None
