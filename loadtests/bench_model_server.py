"""Benchmark: the model server's Predict latency and throughput, beside the in-process call.

    python loadtests/bench_model_server.py --models models [--requests 2000] [--json out.json]

Measured in one run on loopback, one row per request: the SavedModel signature called in this
process, two ways (the limit: `in_process_session`, the serving signature as a session callable,
which is how TF Serving and `serve-model` run it, and `in_process_tf2`, the TF2 signature function
`tf.saved_model.load(...).signatures[...]`), and `modelramp serve-model` over gRPC and REST with
one client, in alternating rounds so that other load on a shared machine hits all alike; then 8
concurrent clients (threads with blocking clients) per protocol for throughput. Goal: gRPC round
trip within 1 ms of the in-process call at p50, measured against the faster in-process way.
Compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import httpx
import numpy as np
from results_file import save

from serving.tfserving.grpc_client import PredictionClient, build_predict_request
from serving.training import dataset
from tests.conftest import start_model_server

GOAL_GRPC_P50_OVERHEAD_MS = 1.0


def percentiles(samples_s: list[float]) -> dict:
    ms = np.array(samples_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "n": len(ms)}


def interleaved(calls: dict, requests: int, rounds: int = 10) -> dict[str, dict]:
    """One client per call, taking turns in `rounds` blocks; latency percentiles per call."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(20):
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            out = samples[name]
            for _ in range(requests // rounds):
                t0 = time.perf_counter()
                call()
                out.append(time.perf_counter() - t0)
    return {name: {**percentiles(lat), "rps": len(lat) / sum(lat), "clients": 1} for name, lat in samples.items()}


def run_clients(make_call, clients: int, requests: int) -> dict:
    """`clients` threads share `requests` calls; returns latency percentiles and requests/s."""
    per_client = requests // clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    calls = [make_call() for _ in range(clients)]
    for call in calls:  # warm up connections and code paths
        for _ in range(20):
            call()

    def worker(i: int) -> None:
        call, out = calls[i], latencies[i]
        for _ in range(per_client):
            t0 = time.perf_counter()
            call()
            out.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = [x for lat in latencies for x in lat]
    return {**percentiles(flat), "rps": len(flat) / elapsed, "clients": clients}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tf-threads", type=int, default=0,
                        help="TensorFlow intra- and inter-op threads, in the server and in-process (default 0, "
                             "serve-model's and TF Serving's: TensorFlow chooses)")
    parser.add_argument("--json", type=Path, default=Path("loadtests/results/model_server.json"))
    args = parser.parse_args()
    if not (args.models / "churn" / "2" / "saved_model.pb").exists():
        parser.error(f"no trained model under {args.models}; run `modelramp train --out {args.models} --all-versions`")

    import tensorflow as tf  # noqa: PLC0415

    from serving.model_server.servable import Servable, session_config  # noqa: PLC0415

    # The same TensorFlow threading in this process as in the server, so the limit is a fair one.
    tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)

    row = dataset.read_split(args.models / "data", "live").head(1)
    columns = dataset.to_columns(row)
    instance = dataset.to_instances(row)
    version_dir = args.models / "churn" / "2"
    # The limit: this process holds the row as numpy arrays and calls the signature directly,
    # unchecked: a session callable as the server does, and the TF2 signature function.
    servable = Servable("churn", 2, version_dir, session_config(args.tf_threads, args.tf_threads))
    names = sorted(columns)
    session_call = servable.session_callable("serving_default", tuple(servable.signatures["serving_default"].outputs))
    feeds = [columns[n] for n in names]
    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    in_process = {
        "in_process_session": lambda: session_call(*feeds),
        "in_process_tf2": lambda: signature(**{k: tf.constant(v.astype(bytes) if v.dtype == object else v) for k, v in columns.items()}),
    }
    results: dict = {}

    with tempfile.TemporaryDirectory() as tmp:
        server = start_model_server(args.models, Path(tmp), "--tensorflow_intra_op_parallelism", str(args.tf_threads),
                                    "--tensorflow_inter_op_parallelism", str(args.tf_threads))
        try:
            request = build_predict_request("churn", columns)

            def grpc_call():
                client = PredictionClient(server.grpc_target, timeout=5)
                return lambda: client.predict_raw(request)

            def rest_call():
                http = httpx.Client(base_url=server.rest_url, timeout=5)
                body = json.dumps({"instances": instance}).encode()
                return lambda: http.post("/v1/models/churn:predict", content=body).raise_for_status()

            results.update(interleaved({**in_process, "grpc_1_clients": grpc_call(), "rest_1_clients": rest_call()}, args.requests))
            for key, r in results.items():
                print(f"{key:>16}: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  {r['rps']:.0f} req/s", flush=True)
            for name, make in (("grpc", grpc_call), ("rest", rest_call)):
                key = f"{name}_8_clients"
                results[key] = run_clients(make, 8, args.requests)
                r = results[key]
                print(f"{key:>16}: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  {r['rps']:.0f} req/s", flush=True)
        finally:
            server.process.stop()

    limit = min(results[key]["p50_ms"] for key in in_process)
    overhead = results["grpc_1_clients"]["p50_ms"] - limit
    results["grpc_p50_overhead_ms"] = overhead
    results["goal_met"] = overhead <= GOAL_GRPC_P50_OVERHEAD_MS
    print(f"gRPC p50 round trip minus the faster in-process p50: {overhead:.3f} ms (goal <= {GOAL_GRPC_P50_OVERHEAD_MS} ms): "
          f"{'met' if results['goal_met'] else 'NOT met'}")
    save(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
