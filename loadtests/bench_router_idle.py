"""Benchmark: the router's CPU per request back to back, and when it idles between requests.

    python loadtests/bench_router_idle.py [--requests 2000] [--json out.json]

`bench_router.py` finds the router's CPU per request higher at 500 req/s than at saturation.
This separates the router's own work from what the machine charges for waking an idle process:
one process runs the router's REST predict path (`router.rest.predict.answer_predict`: decode, assign,
the legacy call over loopback through the real HTTP/1.1 client, sign, count, encode) against a
minimal HTTP responder on the same event loop that stands in for the legacy system, and
measures the thread's CPU time per request:

- back to back (the loop never sleeps: caches warm, no wake-ups);
- with the thread asleep between requests for the gap a request sees at 500 and 1,000 req/s.

The same is measured for a tiny fixed workload (one small JSON round trip), which shows what a
wake-up alone costs on this machine. Compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from results_file import save

from experiments.config import parse_config
from router.backends import ModelMetadata
from router.core import Router
from router.rest.predict import answer_predict
from router.signature import Signature, TensorSpec
from serving.tfserving.tensors import DT_FLOAT, DT_STRING
from tests.router.stack import ROW

LEGACY_ANSWER = b'{"predictions":[{"churn":false,"probability":0.0,"reasons":[]}]}'
GAPS_S = {"back_to_back": 0.0, "idle_gaps_500_rps": 0.002, "idle_gaps_1000_rps": 0.001}


class LegacyResponder(asyncio.Protocol):
    """Answers every request on the connection with one fixed 200 (the harness, not under test)."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(LEGACY_ANSWER), LEGACY_ANSWER))


async def measure(call, requests: int, gap: float) -> float:
    """Mean thread CPU microseconds per `await call(i)`, sleeping `gap` seconds (thread asleep) before each."""
    spent = 0.0
    for i in range(requests):
        if gap:
            time.sleep(gap)  # the whole thread sleeps, as an idle event loop does in epoll_wait
        start = time.thread_time()
        await call(i)
        spent += time.thread_time() - start
    return spent / requests * 1e6


async def in_process_router(model_weight: float) -> tuple[asyncio.AbstractServer, Router]:
    """A Router whose legacy arm is a `LegacyResponder` on this loop; the model arm is never called.

    The model's signature is set by hand (the churn model's inputs, from the benchmark row) so
    that requests are validated as in production without a model server.
    """
    server = await asyncio.get_running_loop().create_server(LegacyResponder, "127.0.0.1", 0)
    config = parse_config({"name": "bench", "salt": "bench", "model_name": "churn", "arms": {
        "legacy": {"weight": 1 - model_weight, "backend": {"kind": "legacy_http", "url": f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"}},
        "model": {"weight": model_weight, "backend": {"kind": "tfserving_grpc", "target": "127.0.0.1:1", "model_name": "churn"}}}})
    router = Router(config)
    inputs = {k: TensorSpec(DT_STRING if isinstance(v, str) else DT_FLOAT, (-1,)) for k, v in ROW.items()}
    router.metadata = ModelMetadata(Signature("serving_default", inputs, {"probability": TensorSpec(DT_FLOAT, (-1,))}, 2))
    return server, router


async def run(requests: int) -> dict:
    server, router = await in_process_router(model_weight=0.0)
    body = json.dumps({"instances": [ROW]}).encode()

    async def predict(i: int) -> None:
        status, _, _ = await answer_predict(router, "churn", f"unit-{i}", body)
        if status != 200:
            raise RuntimeError(f"predict answered {status}")

    small = {"instances": [{"a": 1.0, "b": "x"}]}

    async def json_round_trip(i: int) -> None:
        json.loads(json.dumps(small))

    results: dict = {}
    try:
        await measure(predict, 300, 0.0)  # warm-up: connection, caches, code paths
        for name, gap in GAPS_S.items():
            results[name] = {"router_cpu_us_per_request": await measure(predict, requests, gap),
                             "json_round_trip_cpu_us": await measure(json_round_trip, requests, gap)}
            print(f"{name:>20}: router predict path {results[name]['router_cpu_us_per_request']:6.1f} us CPU/request, "
                  f"tiny JSON round trip {results[name]['json_round_trip_cpu_us']:6.1f} us", flush=True)
    finally:
        await router.close()
        server.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per row (default 2000)")
    parser.add_argument("--json", type=Path, default=Path("loadtests/results/router_idle.json"))
    args = parser.parse_args()
    try:
        import uvloop  # noqa: PLC0415

        results = uvloop.run(run(args.requests))
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        results = asyncio.run(run(args.requests))
    save(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
