"""Benchmark: what one gRPC call costs on loopback with each of gRPC core's TCP stacks.

    python loadtests/bench_grpc_stack.py [--calls 3000] [--json out.json]

Two no-op `grpc.aio` servers (on uvloop, as `serve-model` and the router run) echo a 400-byte
message, one on gRPC's default EventEngine stack and one with GRPC_EXPERIMENTS switching back to
the previous (iomgr) stack; a blocking Python client in this process calls them in alternating
rounds, beside a bare TCP echo (the floor of the machine). Reported per stack: round-trip p50/p99
and the server process's CPU per call. `serving/tfserving/grpc_stack.py` makes the choice from this.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from results_file import save

from serving.tfserving.grpc_stack import IOMGR_EXPERIMENTS

if TYPE_CHECKING:
    import grpc  # imported where it runs, after GRPC_EXPERIMENTS is in the environment

PAYLOAD = b"x" * 400
STACKS = {"event_engine": "", "iomgr": IOMGR_EXPERIMENTS}


def serve(kind: str, port: int) -> None:
    """Child process: a no-op server of `kind` on `port`, until killed."""
    if kind == "tcp":
        listener = socket.create_server(("127.0.0.1", port))
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(65536):
            conn.sendall(data)
        return
    import grpc  # noqa: PLC0415 - after GRPC_EXPERIMENTS is in the environment
    import uvloop  # noqa: PLC0415

    async def echo(request, context):
        return request

    async def main():
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler("bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)})
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    uvloop.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_call(stub: grpc.UnaryUnaryMultiCallable[bytes, bytes]) -> Callable[[], bytes]:
    return lambda: stub(PAYLOAD, timeout=5)


def start(kind: str, experiments: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "GRPC_EXPERIMENTS": experiments}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    if kind != "tcp" and proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{kind} server did not start")
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per stack (default 3000)")
    parser.add_argument("--json", type=Path, default=Path("loadtests/results/grpc_stack.json"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0

    import grpc  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    procs: dict[str, subprocess.Popen] = {}
    try:
        tcp_proc, tcp_port = start("tcp", "")
        procs["tcp"] = tcp_proc
        for _ in range(100):  # the echo server may still be binding
            try:
                conn = socket.create_connection(("127.0.0.1", tcp_port))
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"the TCP echo server did not listen on port {tcp_port} within 5 s")
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def tcp_call() -> None:
            conn.sendall(PAYLOAD)
            got = 0
            while got < len(PAYLOAD):
                got += len(conn.recv(65536))

        calls: dict[str, Callable[[], object]] = {"tcp_floor": tcp_call}
        for name, experiments in STACKS.items():
            proc, port = start("grpc", experiments)
            procs[name] = proc
            calls[name] = echo_call(grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/bench.Echo/Call"))
        for call in calls.values():
            for _ in range(200):
                call()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        cpu = dict.fromkeys(calls, 0.0)
        rounds = 10
        for r in range(rounds):
            for name, call in calls.items():
                pid = procs["tcp" if name == "tcp_floor" else name].pid
                before = cpu_seconds(pid)
                out = samples[name]
                for _ in range(args.calls // rounds):
                    t0 = time.perf_counter()
                    call()
                    out.append(time.perf_counter() - t0)
                cpu[name] += cpu_seconds(pid) - before
            print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()

    results: dict[str, dict[str, float]] = {}
    for name, lat in samples.items():
        ms = np.array(lat) * 1000
        results[name] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "server_cpu_ms_per_call": cpu[name] / len(lat) * 1000, "n": len(lat)}
        row = results[name]
        print(f"{name:>13}: p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  server CPU {row['server_cpu_ms_per_call']:.3f} ms/call")
    save(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
