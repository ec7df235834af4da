"""gRPC target names, as gRPC spells them, -> the authority to send and the (host, port) pairs to resolve.

`host:port` and `dns:///host:port` (every address the name resolves to: a Kubernetes headless
Service has one per pod), `ipv4:addr:port[,addr:port...]` and `ipv6:[addr]:port[,...]` (static
lists). The experiment file's validation (router/config.py) and the gRPC backend's client
(router/backends/grpc_unary.py) read a target the same way.
"""

from __future__ import annotations

FORMS = "host:port, dns:///host:port, ipv4:addr:port[,addr:port...] or ipv6:[addr]:port[,...]"


def parse_target(target: str) -> tuple[str, list[tuple[str, int]]]:
    """(authority, [(host, port), ...]); ValueError naming the accepted forms for anything else."""
    if target.startswith(("ipv4:", "ipv6:")):
        hosts = [_host_port(part, target) for part in target[5:].split(",")]
        host, port = hosts[0]
        return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), hosts
    name = target[len("dns:///"):] if target.startswith("dns:///") else target
    if "/" in name or name.startswith(("unix:", "dns:")):
        raise ValueError(f"gRPC target {target!r} is not one of {FORMS}")
    host_port = _host_port(name, target)
    return name, [host_port]


def _host_port(text: str, target: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"gRPC target {target!r}: {text!r} is not host:port (the forms: {FORMS})")
    return host.strip("[]"), int(port)
