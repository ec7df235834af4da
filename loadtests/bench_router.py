"""Benchmark: what the router adds, measured against the legacy system directly, in one run.

    python loadtests/bench_router.py --models models [--rps 500] [--seconds 20] [--json out.json]

Starts `modelramp legacy`, `modelramp serve-model` and one `modelramp router` (model weight 1%
unless `--model-weight` says otherwise, so nearly every request is forwarded to the legacy
system, the production case at stage 1) on
free loopback ports, then drives the SAME open-loop load (constant arrival rate, one new
request every 1/rps seconds whatever the answers do, so slow answers cannot hide as fewer
requests) with the same rows at the legacy system and through the router, in alternating
rounds so that other load on the machine hits both paths alike:

- added latency at p50, p90, p99 (router minus direct, same percentile), over the requests the
  router's legacy arm answered: the 1% the model answers are reported apart, since their
  latency is the model's inference, not the router's overhead;
- router CPU-seconds per 1,000 requests (from the router process's own CPU counters) and RSS,
  beside the same figure for a bare forwarder (`bare_forwarder.py`: bytes in, bytes out, no
  checks) in the same rounds: what any Python forwarder pays per request on this machine;
- the same two CPU figures at the rates of `--cpu-rps` (default 1,000 req/s, the load of the
  Envoy anchor), where a request less often finds the process asleep;
- throughput of one router process at saturation (closed loop, `--saturate` clients).

Goals: added p50 <= 0.5 ms, added p99 <= 2 ms at 500 rps, <= 0.3 CPU-s per 1,000
forwarded requests (about 3,300 req/s per core), RSS < 150 MB. On a shared 2-core machine the
load generator, the legacy system and the router compete for the cores: compare the rows of
one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import aiohttp
import psutil
import yaml
from results_file import save

from tests.router.stack import ROW
from tests.support.processes import Process, free_port, port_open, wait_until

GOALS = {"added_p50_ms": 0.5, "added_p99_ms": 2.0, "cpu_s_per_1000": 0.3, "rss_mb": 150.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_loop(url: str, body: bytes, rps: float, seconds: float, unit_header: bool,
                    latencies: dict[str, list[float]] | None = None) -> dict:
    """Send `rps` requests per second for `seconds`; latency of each, by the arm that answered
    (the router's X-Modelramp-Arm header; "direct" without one), appended to `latencies`; errors counted."""
    latencies = {} if latencies is None else latencies
    errors = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(i: int) -> None:
            nonlocal errors
            headers = {"Content-Type": "application/json"}
            if unit_header:
                headers["X-Unit-Id"] = f"bench-{i}"
            start = time.perf_counter()
            arm = "direct"
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                    arm = response.headers.get("X-Modelramp-Arm", "direct")
            except aiohttp.ClientError:
                ok = False
            if ok:
                latencies.setdefault(arm, []).append(time.perf_counter() - start)
            else:
                errors += 1

        tasks = []
        start = time.perf_counter()
        n = int(rps * seconds)
        for i in range(n):
            delay = start + i / rps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"requests": n, "errors": errors, "achieved_rps": n / elapsed}


def summary(latencies: list[float], parts: list[dict]) -> dict:
    """Percentiles over every round's latencies, requests and errors summed."""
    return {"requests": sum(p["requests"] for p in parts), "errors": sum(p["errors"] for p in parts),
            "achieved_rps": min(p["achieved_rps"] for p in parts),
            **{f"p{int(q * 100)}_ms": percentile(latencies, q) * 1000 for q in (0.5, 0.9, 0.99)}}


async def closed_loop(url: str, body: bytes, clients: int, seconds: float) -> tuple[float, int]:
    """(requests per second, requests) with `clients` always waiting for an answer (saturation)."""
    done = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def client(c: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                async with session.post(url, data=body, headers={"Content-Type": "application/json", "X-Unit-Id": f"s{c}-{i}"}) as r:
                    await r.read()
                done += 1
                i += 1

        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
    return done / (time.perf_counter() - start), done


def start_stack(models: Path, workdir: Path, model_weight: float = 0.01) -> tuple[list[Process], str, str, int]:
    legacy_port, model_port, rest_port, http_port, grpc_port = (free_port() for _ in range(5))
    config = {"name": "bench", "salt": "bench", "model_name": "churn", "arms": {
        "legacy": {"weight": 1 - model_weight, "backend": {"kind": "legacy_http", "url": f"http://127.0.0.1:{legacy_port}"}},
        "model": {"weight": model_weight, "backend": {"kind": "tfserving_grpc", "target": f"127.0.0.1:{model_port}", "model_name": "churn"}}}}
    (workdir / "bench.yaml").write_text(yaml.safe_dump(config))
    legacy = Process(["legacy", "--host", "127.0.0.1", "--port", str(legacy_port)], workdir / "legacy.log")
    model = Process(["serve-model", "--host", "127.0.0.1", "--port", str(model_port), "--rest_api_port", str(rest_port),
                     "--model_name", "churn", "--model_base_path", str(models.resolve() / "churn")], workdir / "model.log")
    router = Process(["router", "--config", str(workdir / "bench.yaml"), "--host", "127.0.0.1",
                      "--http-port", str(http_port), "--grpc-port", str(grpc_port)], workdir / "router.log",
                     env={"MODELRAMP_SIGNING_KEY": "bench"})
    procs = [router, legacy, model]
    import urllib.request  # noqa: PLC0415

    def ok(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)  # urlopen's result is Any in typeshed

    wait_until(lambda: ok(f"http://127.0.0.1:{legacy_port}/healthz"), 60, "legacy ready", legacy.proc)
    wait_until(lambda: ok(f"http://127.0.0.1:{http_port}/readyz"), 120, "router ready (model signature known)", router.proc)
    return procs, f"http://127.0.0.1:{legacy_port}/v1/predict", f"http://127.0.0.1:{http_port}/v1/models/churn:predict", router.proc.pid


def start_forwarder(direct_url: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    """bare_forwarder.py in front of the same legacy system; (process, its predict URL)."""
    port = free_port()
    legacy_port = direct_url.split(":")[2].split("/")[0]
    with open(workdir / "forwarder.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_forwarder.py")), "--legacy-port", legacy_port,
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), 30, "bare forwarder listening", proc)
    return proc, f"http://127.0.0.1:{port}/v1/models/churn:predict"


async def round_with_cpu(url: str, proc: psutil.Process, body: bytes, rps: float, seconds: float,
                         latencies: dict[str, list[float]] | None = None) -> tuple[dict, float, float]:
    """One open-loop round against `url`: (its summary, user and kernel CPU-seconds `proc` spent)."""
    before = proc.cpu_times()
    part = await open_loop(url, body, rps, seconds, True, latencies)
    after = proc.cpu_times()
    return part, after.user - before.user, after.system - before.system


async def bench(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-router-"))
    procs, direct_url, router_url, router_pid = start_stack(args.models, workdir, args.model_weight)
    forwarder, forwarder_url = start_forwarder(direct_url, workdir)
    body = json.dumps({"instances": [ROW]}).encode()  # the same row; the legacy API and TF Serving's share this body shape
    router_proc, forwarder_proc = psutil.Process(router_pid), psutil.Process(forwarder.pid)
    try:
        await open_loop(direct_url, body, args.rps, 3, False)  # warm-up every path: connections, caches
        await open_loop(router_url, body, args.rps, 3, True)
        await open_loop(forwarder_url, body, args.rps, 3, True)
        # Alternating rounds: other load on a shared machine then hits every path alike.
        direct_lat: dict[str, list[float]] = {}
        routed_lat: dict[str, list[float]] = {}
        direct_parts, routed_parts = [], []
        cpu_user = cpu_system = forwarder_cpu = 0.0
        forwarded = forwarder_errors = 0
        round_seconds = args.seconds / args.rounds
        for _ in range(args.rounds):
            direct_parts.append(await open_loop(direct_url, body, args.rps, round_seconds, False, direct_lat))
            part, user, system = await round_with_cpu(router_url, router_proc, body, args.rps, round_seconds, routed_lat)
            routed_parts.append(part)
            cpu_user += user
            cpu_system += system
            part, user, system = await round_with_cpu(forwarder_url, forwarder_proc, body, args.rps, round_seconds)
            forwarder_cpu += user + system
            forwarded += part["requests"]
            forwarder_errors += part["errors"]
        # CPU only, at the other rates: router and forwarder rounds alternate as above.
        by_rate = {}
        for rate in args.cpu_rps:
            spent = {"router": 0.0, "bare_forwarder": 0.0}
            sent = {"router": 0, "bare_forwarder": 0}
            for _ in range(args.rounds):
                for name, url, proc in (("router", router_url, router_proc), ("bare_forwarder", forwarder_url, forwarder_proc)):
                    part, user, system = await round_with_cpu(url, proc, body, rate, round_seconds)
                    spent[name] += user + system
                    sent[name] += part["requests"]
            by_rate[f"{rate:g}"] = {name: spent[name] / sent[name] * 1000 for name in spent}
        # What the router adds to the legacy system's answers: the 1% the model answers carry the
        # model's own inference and would make the router's p99 the model's latency.
        direct, routed = summary(direct_lat.get("direct", []), direct_parts), summary(routed_lat.get("legacy", []), routed_parts)
        every = [x for lat in routed_lat.values() for x in lat]
        model_arm = routed_lat.get("model", [])
        cpu_seconds = cpu_user + cpu_system
        rss_mb = router_proc.memory_info().rss / 2**20
        saturation = saturation_cpu = None
        if args.saturate:
            before = router_proc.cpu_times()
            saturation, answered = await closed_loop(router_url, body, args.saturate, min(args.seconds, 10))
            after = router_proc.cpu_times()
            # At full load epoll hands over many events per wake-up: the cost per request falls.
            saturation_cpu = (after.user + after.system - before.user - before.system) / answered * 1000
        rss_after_saturation = router_proc.memory_info().rss / 2**20
    finally:
        forwarder.terminate()
        forwarder.wait(10)
        for p in procs:
            p.stop()
    result = {
        "rps": args.rps, "seconds": args.seconds, "direct": direct, "router": routed,
        "added_p50_ms": routed["p50_ms"] - direct["p50_ms"], "added_p90_ms": routed["p90_ms"] - direct["p90_ms"],
        "added_p99_ms": routed["p99_ms"] - direct["p99_ms"],
        "cpu_s_per_1000": cpu_seconds / routed["requests"] * 1000, "rss_mb": max(rss_mb, rss_after_saturation),
        "bare_forwarder_cpu_s_per_1000": forwarder_cpu / forwarded * 1000, "bare_forwarder_errors": forwarder_errors,
        "cpu_s_per_1000_by_rps": by_rate,
        "cpu_user_s_per_1000": cpu_user / routed["requests"] * 1000,
        "router_all_arms_p99_ms": percentile(every, 0.99) * 1000,
        "model_arm": {"requests": len(model_arm), **({"p50_ms": percentile(model_arm, 0.5) * 1000,
                                                      "p99_ms": percentile(model_arm, 0.99) * 1000} if model_arm else {})},
        "cpu_system_s_per_1000": cpu_system / routed["requests"] * 1000,
        "router_saturation_rps": saturation, "saturation_clients": args.saturate,
        "cpu_s_per_1000_at_saturation": saturation_cpu,
    }
    result["goals_met"] = {k: result[k] <= v for k, v in GOALS.items()}
    # The CPU goal read as capacity ("about 3,300 requests/s per core"), and at each other rate.
    if saturation_cpu is not None:
        result["goals_met"]["cpu_s_per_1000_at_saturation"] = saturation_cpu <= GOALS["cpu_s_per_1000"]
    for rate, row in by_rate.items():
        result["goals_met"][f"cpu_s_per_1000_at_{rate}_rps"] = row["router"] <= GOALS["cpu_s_per_1000"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="exported models (modelramp train --all-versions)")
    parser.add_argument("--rps", type=float, default=500.0, help="open-loop arrival rate (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per path, split into rounds (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating direct/router rounds (default 4)")
    parser.add_argument("--model-weight", type=float, default=0.01,
                        help="the model arm's share (default 0.01, stage 1; the CPU figures cover both arms' requests)")
    parser.add_argument("--cpu-rps", type=lambda v: [float(x) for x in v.split(",") if x], default=[1000.0],
                        help="other rates (comma-separated) at which to measure CPU per request as well (default 1000; '' for none)")
    parser.add_argument("--saturate", type=int, default=32, help="closed-loop clients for the throughput phase; 0 skips it")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    d, r = result["direct"], result["router"]
    print(f"load: {args.rps:g} req/s open loop for {args.seconds:g}s per path in {args.rounds} alternating rounds, "
          "loopback, one row per request")
    print(f"{'':10s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'errors':>7s}")
    print(f"{'direct':10s} {d['p50_ms']:8.3f} {d['p90_ms']:8.3f} {d['p99_ms']:8.3f} {d['errors']:7d}")
    print(f"{'router':10s} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {r['p99_ms']:8.3f} {r['errors']:7d}")
    print(f"{'added':10s} {result['added_p50_ms']:8.3f} {result['added_p90_ms']:8.3f} {result['added_p99_ms']:8.3f}")
    m = result["model_arm"]
    if m["requests"]:
        print(f"(router rows: requests the legacy arm answered; the model arm answered {m['requests']}: p50 {m['p50_ms']:.3f} ms, "
              f"p99 {m['p99_ms']:.3f} ms; all arms together p99 {result['router_all_arms_p99_ms']:.3f} ms)")
    print(f"router CPU: {result['cpu_s_per_1000']:.3f} CPU-s per 1,000 requests (user {result['cpu_user_s_per_1000']:.3f}, "
          f"kernel {result['cpu_system_s_per_1000']:.3f}); RSS {result['rss_mb']:.0f} MB; "
          f"a bare forwarder in the same rounds: {result['bare_forwarder_cpu_s_per_1000']:.3f} "
          f"({result['bare_forwarder_errors']} errors)")
    for rate, row in result["cpu_s_per_1000_by_rps"].items():
        print(f"at {rate} req/s: router {row['router']:.3f} CPU-s per 1,000 requests, bare forwarder {row['bare_forwarder']:.3f}")
    if result["router_saturation_rps"]:
        print(f"one router process at saturation ({args.saturate} clients, generator and legacy on the same cores): "
              f"{result['router_saturation_rps']:.0f} req/s, {result['cpu_s_per_1000_at_saturation']:.3f} CPU-s per 1,000 requests")
    print("goals met:", result["goals_met"])
    if args.json:
        save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
