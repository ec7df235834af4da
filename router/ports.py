"""Checking ports before listening, so a port in use is one clear error instead of a traceback."""

from __future__ import annotations

import socket

from serving.tfserving.errors import FailedPrecondition


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on `port` and we may bind it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def require_free(ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Raise FailedPrecondition naming every port (by role) that is already in use."""
    taken = [f"{role} port {port}" for role, port in ports.items() if not port_free(port, host)]
    if taken:
        raise FailedPrecondition(f"already in use: {', '.join(taken)}; stop what uses it or choose another port")
