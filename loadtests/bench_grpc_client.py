"""Benchmark: a client's CPU per model call at a fixed rate, grpc.aio beside the router's own clients, in one run.

    python loadtests/bench_grpc_client.py --models models [--rps 500] [--seconds 24] [--rounds 6] [--json out.json]

Starts one `modelramp serve-model` and, round after round, one client process per kind, each
sending the same one-row predict at `--rps` (open loop) for `--seconds / --rounds` seconds:

- `grpc_aio`: grpc.aio's unary call (`serving.tfserving.grpc_client.AsyncPredictionClient`, what
  the router's `tfserving_grpc` backend used before `router.backends.grpc_unary`);
- `grpc_unary`: `router.backends.grpc_unary.UnaryGrpcClient`, the same PredictRequest serialized
  per call and the PredictResponse parsed;
- `rest_http1`: the model server's REST predict through `router.backends.http1.Http1Pool` (what the
  `tfserving_rest` backend and the legacy arm use), the body and answer as JSON bytes;
- `idle_wakes`: no call at all, the same timer wake-ups: what the event loop costs at this rate.

Each client reports its own process's CPU-seconds (user + kernel) per call over the measured
part, and its p50 and p99; the table gives each kind's medians over rounds and its CPU beside
`rest_http1`'s. Every kind uses uvloop, as the router does. Compare the rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from bench_router import paced, ready
from results_file import save

from serving.tfserving.errors import UserFacingError
from tests.router.stack import ROW
from tests.support.processes import Process, free_port, port_open, wait_until

KINDS = ("grpc_aio", "grpc_unary", "rest_http1", "idle_wakes")
WARMUP_CALLS = 200


def predict_request() -> object:
    import numpy as np  # noqa: PLC0415 - the client processes only

    from serving.tfserving.grpc_client import build_predict_request  # noqa: PLC0415

    inputs = {name: np.array([value], dtype=object if isinstance(value, str) else np.float32) for name, value in ROW.items()}
    return build_predict_request("churn", inputs)


def make_call(kind: str, grpc_port: int, rest_port: int):
    from serving.tfserving import protos  # noqa: PLC0415

    request = predict_request()
    if kind == "grpc_aio":
        from serving.tfserving.grpc_client import AsyncPredictionClient  # noqa: PLC0415

        aio = AsyncPredictionClient(f"127.0.0.1:{grpc_port}", retries=0)

        async def call() -> object:
            return await aio.predict_raw(request, timeout=1.0)
    elif kind == "grpc_unary":
        from router.backends.grpc_unary import UnaryGrpcClient  # noqa: PLC0415

        unary = UnaryGrpcClient(f"127.0.0.1:{grpc_port}", retries=0)

        async def call() -> object:
            data = await unary.call(protos.PREDICT_METHOD, request.SerializeToString(), 1.0)  # type: ignore[attr-defined]
            return protos.PredictResponse.FromString(data)
    elif kind == "rest_http1":
        from router.backends.http1 import Http1Pool  # noqa: PLC0415

        pool = Http1Pool(f"http://127.0.0.1:{rest_port}")
        body = json.dumps({"instances": [ROW]}).encode()

        async def call() -> object:
            status, answer = await pool.request("POST", "/v1/models/churn:predict", body, 1.0)
            if status != 200:
                raise RuntimeError(f"REST predict answered {status}: {answer[:200]!r}")
            return json.loads(answer)
    else:
        async def call() -> object:
            return None
    return call


async def client(kind: str, grpc_port: int, rest_port: int, rps: float, seconds: float) -> dict:
    call = make_call(kind, grpc_port, rest_port)
    for _ in range(WARMUP_CALLS):
        await call()
    latencies: list[float] = []
    errors = 0

    async def timed() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            await call()
        except (UserFacingError, RuntimeError, OSError, asyncio.TimeoutError):
            errors += 1
            return
        latencies.append(time.perf_counter() - start)

    cpu = time.process_time()
    calls, _ = await paced(rps, max(1, int(rps * seconds)), lambda _: timed())
    spent = time.process_time() - cpu
    ordered = sorted(latencies) or [float("nan")]
    return {"calls": calls, "errors": errors, "cpu_us_per_call": spent / calls * 1e6,
            "p50_ms": ordered[len(ordered) // 2] * 1000, "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000}


def run_client(kind: str, grpc_port: int, rest_port: int, rps: float, seconds: float) -> dict:
    done = subprocess.run([sys.executable, __file__, "--client", kind, "--grpc-port", str(grpc_port), "--rest-port", str(rest_port),
                           "--rps", str(rps), "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds * 4 + 120)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} client failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def bench(args: argparse.Namespace) -> dict:
    grpc_port, rest_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-grpc-client-") as tmp:
        model = Process(["serve-model", "--host", "127.0.0.1", "--port", str(grpc_port), "--rest_api_port", str(rest_port),
                         "--model_name", "churn", "--model_base_path", str(Path(args.models).resolve() / "churn")], Path(tmp) / "model.log")
        try:
            wait_until(lambda: port_open(grpc_port) and ready(f"http://127.0.0.1:{rest_port}/v1/models/churn/metadata"), 120,
                       "model server ready (model loaded)", model.proc)
            rounds: dict[str, list[dict]] = {kind: [] for kind in KINDS}
            per_round = args.seconds / args.rounds
            for r in range(args.rounds):
                order = KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]  # rotated: no kind always follows another
                for kind in order:
                    rounds[kind].append(run_client(kind, grpc_port, rest_port, args.rps, per_round))
                print(f"round {r + 1}/{args.rounds}: " + "; ".join(
                    f"{kind} {rounds[kind][-1]['cpu_us_per_call']:.0f} us" for kind in KINDS), flush=True)
        finally:
            model.stop()
    figures = {kind: {key: statistics.median(row[key] for row in rows) for key in ("cpu_us_per_call", "p50_ms", "p99_ms")}
               | {"errors": sum(row["errors"] for row in rows), "calls": sum(row["calls"] for row in rows)}
               for kind, rows in rounds.items()}
    reference = figures["rest_http1"]["cpu_us_per_call"]
    for row in figures.values():
        row["cpu_ratio_to_rest_http1"] = row["cpu_us_per_call"] / reference
    return {"rps": args.rps, "seconds": args.seconds, "rounds_per_kind": args.rounds, "figures": figures, "rounds": rounds}


def table(result: dict) -> str:
    lines = [f"{result['rps']:g} calls/s, one-row predict, {result['seconds']:g} s per client in {result['rounds_per_kind']} rounds; "
             "medians over rounds",
             "| client | CPU per call | ratio to rest_http1 | p50 | p99 | errors |", "| --- | --- | --- | --- | --- | --- |"]
    for kind, row in result["figures"].items():
        lines.append(f"| {kind} | {row['cpu_us_per_call']:.0f} us | {row['cpu_ratio_to_rest_http1']:.2f}x | "
                     f"{row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | {row['errors']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models", help="exported models (modelramp train --all-versions)")
    parser.add_argument("--rps", type=float, default=500.0, help="calls per second, open loop (default 500)")
    parser.add_argument("--seconds", type=float, default=24.0, help="measured seconds per client, split into rounds (default 24)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, the clients taking turns in each (default 6)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--client", choices=KINDS, help=argparse.SUPPRESS)  # one client process (run by the benchmark itself)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rest-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        import uvloop  # noqa: PLC0415 - the router's event loop

        print(json.dumps(uvloop.run(client(args.client, args.grpc_port, args.rest_port, args.rps, args.seconds))))
        return 0
    if args.rounds < 1 or args.seconds <= 0 or args.rps <= 0:
        parser.error("--rounds, --seconds and --rps must be positive")
    result = bench(args)
    print(table(result))
    if args.json:
        save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
