"""Benchmark: the router's predict path stage by stage, back to back and after an idle gap.

    python loadtests/bench_router_sections.py [--requests 3000] [--json out.json]

`bench_router_idle.py` shows that a request costs the router several times more CPU when the
process was asleep before it (500 req/s) than back to back. This splits the REST predict path
into its stages, each timed on its own with the functions the router runs (the legacy call goes
over loopback to a minimal responder on the same event loop, so that stage includes the
responder), and compares two ways of doing the per-request bookkeeping, alternated request by
request so that the machine's state hits both alike:

- `router`: what the router does (CPython's SHA-256 for the assignment hash and the request-id
  HMAC, `router._sha256`; request counters kept as plain numbers, `router.metrics.RequestCounts`);
- `openssl_prometheus`: hashlib's OpenSSL SHA-256 and HMAC, and prometheus_client's Counter and
  Histogram, as the router did before.

Compare the columns of one run, not runs.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from bench_router_idle import in_process_router
from prometheus_client import CollectorRegistry, Counter, Histogram
from results_file import save

import router.assignment
from router._sha256 import sha256 as cpython_sha256
from router.backends import ColumnOutputs, PredictRequest
from router.metrics import DURATION_BUCKETS
from router.rest import json_codec
from router.signature import rows_fit, validate_request
from router.signing import Signer
from serving.tfserving.rest_format import format_columns
from tests.router.stack import ROW

STAGES = ("decode", "assign", "validate", "legacy_call", "request_id", "count", "encode")
VARIANTS = ("router", "openssl_prometheus")
GAPS_S = {"back_to_back": 0.0, "idle_gap_2ms": 0.002}


class _Counts(Protocol):
    def record(self, experiment: str, arm: str, protocol: str, code: str, seconds: float, /) -> None: ...


class _PrometheusClientCounts:
    """The request metrics as prometheus_client objects (label children kept, as the router did)."""

    def __init__(self, key: tuple[str, str, str, str]):
        registry = CollectorRegistry()
        self.counter = Counter("requests_total", "", ["experiment", "arm", "protocol", "code"], registry=registry).labels(*key)
        self.histogram = Histogram("duration_seconds", "", ["experiment", "arm", "protocol"], buckets=DURATION_BUCKETS,
                                   registry=registry).labels(*key[:3])

    def record(self, *key_and_seconds) -> None:
        self.counter.inc()
        self.histogram.observe(key_and_seconds[-1])


class _OpenSslHmac:
    """A pre-keyed `hmac.HMAC` on OpenSSL's SHA-256, copied per message: the router's request-id HMAC before."""

    def __init__(self, key: bytes) -> None:
        self._mac = hmac.new(key, digestmod="sha256")

    def digest(self, message: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(message)
        return mac.digest()


async def run(requests: int) -> dict:
    server, router_ = await in_process_router(model_weight=0.01)
    signature = router_.signature
    assert signature is not None  # in_process_router waits for the model's metadata
    body = json.dumps({"instances": [ROW]}).encode()
    legacy = router_.state.backends["legacy"]
    key = b"bench-key"
    openssl_signer = Signer(key)
    openssl_signer._mac = _OpenSslHmac(key)  # type: ignore[assignment]  # the same interface, as the router did before
    setups: dict[str, tuple[Callable[..., Any], Signer, _Counts]] = {
        "router": (cpython_sha256, Signer(key), router_.metrics.requests),
        "openssl_prometheus": (hashlib.sha256, openssl_signer, _PrometheusClientCounts(("bench", "legacy", "http", "200"))),
    }
    rng = random.Random(0)
    clock = time.perf_counter  # the thread runs through each stage; only the legacy call waits (for the responder, on this loop)

    async def one(i: int, variant: str, spent: dict[str, float]) -> None:
        hash_constructor, signer, counts = setups[variant]
        vars(router.assignment)["sha256"] = hash_constructor  # what unit_position hashes with (a private name)
        t0 = clock()
        document = json_codec.loads(body)
        if type(document) is not dict or not rows_fit(document["instances"], signature):  # as RestDecoder checks
            raise RuntimeError("the benchmark row does not fit the signature")
        t1 = clock()
        arm = router_.state.assign(f"unit-{i}", rng)
        t2 = clock()
        request = PredictRequest(rows=document["instances"], signature_name="serving_default")
        call = validate_request(request, signature, 100)
        t3 = clock()
        prediction = await legacy.predict(call, 1.0)
        t4 = clock()
        signer.issue("bench", arm)
        t5 = clock()
        counts.record("bench", "legacy", "http", "200", t5 - t0)
        t6 = clock()
        outputs = prediction.outputs
        assert isinstance(outputs, ColumnOutputs)  # a legacy answer, as router.rest.predict.encode checks
        json_codec.dumps(format_columns(outputs.columns, True))
        t7 = clock()
        for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7)), strict=True):
            spent[stage] += b - a

    results: dict = {}
    try:
        warm = dict.fromkeys(STAGES, 0.0)
        for i in range(300):
            await one(i, VARIANTS[i % 2], warm)
        for gap_name, gap in GAPS_S.items():
            spent = {v: dict.fromkeys(STAGES, 0.0) for v in VARIANTS}
            for i in range(2 * requests):
                if gap:
                    time.sleep(gap)  # the whole thread sleeps, as an idle event loop does in epoll_wait
                variant = VARIANTS[i % 2]
                await one(i, variant, spent[variant])
            results[gap_name] = {v: {s: spent[v][s] / requests * 1e6 for s in STAGES} for v in VARIANTS}
            for v in VARIANTS:
                row = results[gap_name][v]
                print(f"{gap_name:>13} {v:>19}: " + ", ".join(f"{s} {row[s]:.1f}" for s in STAGES)
                      + f"  (us per request; total {sum(row.values()):.1f})", flush=True)
    finally:
        vars(router.assignment)["sha256"] = cpython_sha256
        await router_.close()
        server.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per variant and pacing (default 3000)")
    parser.add_argument("--json", type=Path, default=Path("loadtests/results/router_sections.json"))
    args = parser.parse_args()
    import uvloop  # noqa: PLC0415 - the router's event loop

    results = uvloop.run(run(args.requests))
    save(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
