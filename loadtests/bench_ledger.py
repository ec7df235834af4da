"""Benchmark: outcomes per second one ledger instance (one router replica) inserts into SQLite and PostgreSQL.

    python loadtests/bench_ledger.py [--seconds 3] [--submitters 1,8] [--batch-sizes 1,100] [--postgres-url URL] [--json FILE]

For each database, batch size (outcomes per report) and number of concurrent submitters (reports
in flight at once, as concurrent clients), submitters call `record()` with fresh outcomes for
`--seconds` and we measure inserted outcomes per second, the latency of `record()` (what an outcome
report waits for before its 200), the router process's CPU per outcome (the writer thread
included), and the event loop's lag (a 1 ms ticker's overshoot, p99) against an idle baseline:
the loop is what answers predictions, and the ledger is meant to leave it alone.

PostgreSQL: `--postgres-url`, else a throwaway server from Debian's binaries (as the tests start
it), else those rows are skipped. SQLite writes a file in a temporary folder with synchronous=FULL,
so its figures are mostly this disk's fsync rate. The default run takes about 40 s. Results are
printed and written to `loadtests/results/ledger.json` (or `--json`).

    python loadtests/bench_ledger.py --predict [--outcome-rate 2000] [--rps 200] [--rounds 4] [--models models]

With `--predict`, the question is the other one: does outcome load touch the predict path? It
starts the real stack of `loadtests/bench_router.py` (legacy system, model server, one router on
its SQLite ledger) and measures the router's added latency (router minus the legacy system
called directly, open loop, as bench_router does) in alternating rounds without and with a
second process posting `--outcome-rate` outcomes per second to the same router, in reports of
`--outcome-batch`. Results go to `loadtests/results/ledger_predict.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import platform
import statistics
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

from results_file import save

from router.ledger import Outcome, OutcomeLedger, open_ledger


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 1 ms timer fires: any blocking call on the loop shows here."""
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - started - 0.001)


async def measure(ledger: OutcomeLedger, batch_size: int, submitters: int, seconds: float, keys: itertools.count) -> dict:
    latencies: list[float] = []
    lags: list[float] = []
    inserted = 0
    stop = asyncio.Event()
    deadline = time.perf_counter() + seconds

    async def submitter() -> None:
        nonlocal inserted
        while time.perf_counter() < deadline:
            now = time.time()
            batch = [Outcome(next(keys).to_bytes(16, "big"), "bench", "model" if k % 2 else "legacy", k % 128, k % 3 == 0, now)
                     for k in range(batch_size)]
            started = time.perf_counter()
            flags = await ledger.record(batch)
            latencies.append(time.perf_counter() - started)
            inserted += sum(flags)

    ticker = asyncio.ensure_future(_loop_lag(stop, lags))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(submitters)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await ticker
    return {
        "batch_size": batch_size, "submitters": submitters, "outcomes_per_second": inserted / wall,
        "reports_per_second": len(latencies) / wall, "record_p50_ms": _p(latencies, 0.5) * 1e3,
        "record_p99_ms": _p(latencies, 0.99) * 1e3, "cpu_us_per_outcome": cpu / max(inserted, 1) * 1e6,
        "loop_lag_p99_ms": _p(lags, 0.99) * 1e3,
    }


async def idle_lag(seconds: float) -> float:
    lags: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(_loop_lag(stop, lags))
    await asyncio.sleep(seconds)
    stop.set()
    await ticker
    return _p(lags, 0.99) * 1e3


def run_database(name: str, url: str, args: argparse.Namespace, keys: itertools.count) -> list[dict]:
    rows = []
    for batch_size in args.batch_sizes:
        for submitters in args.submitters:
            ledger = open_ledger(url)
            try:
                row = asyncio.run(measure(ledger, batch_size, submitters, args.seconds, keys))
            finally:
                ledger.close()
            rows.append({"database": name, **row})
            print(f"  {name:<10} batch {batch_size:>4}  submitters {submitters:>3}: {row['outcomes_per_second']:>9,.0f} outcomes/s",
                  flush=True)
    return rows


def _postgres(args: argparse.Namespace):
    """(url, server to remove afterwards or None), or (None, reason) when no PostgreSQL is at hand."""
    if args.postgres_url:
        return args.postgres_url, None
    try:
        from tests.router.ledger.pgserver import RestartablePostgres  # noqa: PLC0415 - only without --postgres-url
        from tests.support.postgres import postgres_bindir  # noqa: PLC0415
    except ImportError as err:
        return None, f"cannot start PostgreSQL: {err}"
    bindir = postgres_bindir()
    if bindir is None:
        return None, "PostgreSQL binaries not installed (apt-get install postgresql) and no --postgres-url"
    server = RestartablePostgres(bindir)
    server.start()
    return server.create_database(), server


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def post_outcomes(url: str, rate: float, batch: int, stop: EventType, counts: Any) -> None:
    """Child process: post fresh signed outcomes to `url` at `rate` per second until `stop` is set; counts[0..2] = accepted, reports, errors."""
    import httpx  # noqa: PLC0415 - the child's own imports

    from router.signing import Signer  # noqa: PLC0415

    signer = Signer(b"bench")  # bench_router's routers use MODELRAMP_SIGNING_KEY=bench
    signer.follow(lambda: ("bench", "bench"))  # and its experiment file's name and salt: ids are bound to both
    interval = batch / rate
    next_at = time.perf_counter()
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            body = [{"request_id": signer.issue("bench", "model" if k % 2 else "legacy", bucket=k % 64), "success": k % 3 == 0}
                    for k in range(batch)]
            try:
                r = client.post(url, json=body)
                ok = r.status_code == 200
                if ok:
                    counts[0] += r.json()["accepted"]
            except httpx.HTTPError:
                ok = False
            counts[1 if ok else 2] += 1
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                stop.wait(delay)  # pacing the open loop, not synchronisation


def _added(router: dict[str, list[float]], direct: dict[str, list[float]]) -> tuple[float, float]:
    """The router's added latency at p50 and p99 in ms: its answers' quantile minus the direct calls'."""
    router_all = [v for values in router.values() for v in values]
    direct_all = [v for values in direct.values() for v in values]
    return (_p(router_all, 0.5) - _p(direct_all, 0.5)) * 1e3, (_p(router_all, 0.99) - _p(direct_all, 0.99)) * 1e3


def _spread(values: list[float]) -> tuple[float, float, float]:
    return (statistics.median(values), min(values), max(values)) if values else (float("nan"),) * 3


def _paired(per_round: dict[str, list[tuple[float, float]]]) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]]]:
    """Per quantile (p50, p99): (median, min, max) of with-minus-without in the same round, and of
    without-minus-the-next-without, the difference that no outcome load made: what "unchanged" is measured against."""
    without, loaded = per_round["without"], per_round["with"]
    effect = [_spread([w[i] - wo[i] for w, wo in zip(loaded, without, strict=False)]) for i in (0, 1)]
    noise = [_spread([b[i] - a[i] for a, b in itertools.pairwise(without)]) for i in (0, 1)]
    return effect, noise


def predict_bench(args: argparse.Namespace) -> int:
    """Router's added predict latency without and with outcome load, alternating rounds on one stack."""
    import json  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415

    import psutil  # noqa: PLC0415
    from bench_router import open_loop, start_stack  # noqa: PLC0415 - the sibling benchmark's stack and load generator

    from tests.router.stack import ROW  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="bench-ledger-predict-"))
    procs, direct_url, router_url, router_pid = start_stack(args.models, workdir, 0.01)
    outcomes_url = router_url.split("/v1/")[0] + "/v1/outcomes"
    body = json.dumps({"instances": [ROW]}).encode()
    router = psutil.Process(router_pid)
    lat: dict[str, dict[str, list[float]]] = {"without": {}, "with": {}}
    direct: dict[str, dict[str, list[float]]] = {"without": {}, "with": {}}
    cpu: dict[str, float] = {"without": 0.0, "with": 0.0}
    posted = {"accepted": 0, "reports": 0, "errors": 0, "seconds": 0.0}
    per_round: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}  # (added p50, added p99) in ms
    try:
        asyncio.run(open_loop(router_url, body, args.rps, 2.0, True))  # warm-up: connections, caches, the model
        for _ in range(args.rounds):
            for load in ("without", "with"):
                poster = None
                stop, counts = multiprocessing.Event(), multiprocessing.Array("q", 3)
                if load == "with":
                    poster = multiprocessing.Process(target=post_outcomes, args=(outcomes_url, args.outcome_rate, args.outcome_batch,
                                                                                 stop, counts))
                    poster.start()
                started = time.perf_counter()
                before = router.cpu_times()
                round_direct: dict[str, list[float]] = {}
                round_router: dict[str, list[float]] = {}
                asyncio.run(open_loop(direct_url, body, args.rps, args.seconds, False, round_direct))
                asyncio.run(open_loop(router_url, body, args.rps, args.seconds, True, round_router))
                after = router.cpu_times()
                for into, got in ((direct[load], round_direct), (lat[load], round_router)):
                    for arm, values in got.items():
                        into.setdefault(arm, []).extend(values)
                per_round[load].append(_added(round_router, round_direct))
                cpu[load] += after.user - before.user + after.system - before.system
                if poster is not None:
                    stop.set()
                    poster.join(30)
                    posted["seconds"] += time.perf_counter() - started
                    posted["accepted"] += counts[0]
                    posted["reports"] += counts[1]
                    posted["errors"] += counts[2]
    finally:
        for p in procs:
            p.stop()

    added = {load: _added(lat[load], direct[load]) for load in ("without", "with")}
    rows = {load: {"added_p50_ms": added[load][0], "added_p99_ms": added[load][1],
                   "router_p50_ms": _p([v for vs in lat[load].values() for v in vs], 0.5) * 1e3,
                   "router_p99_ms": _p([v for vs in lat[load].values() for v in vs], 0.99) * 1e3,
                   "requests": sum(len(v) for v in lat[load].values()), "router_cpu_s": cpu[load]} for load in ("without", "with")}
    rate = posted["accepted"] / posted["seconds"] if posted["seconds"] else 0.0
    print(f"\npredict at {args.rps:g}/s, {args.rounds} rounds of {args.seconds:g}s each way; outcome load {args.outcome_rate:g}/s "
          f"in reports of {args.outcome_batch} (achieved {rate:,.0f} outcomes/s into the router's SQLite ledger, "
          f"{posted['errors']} failed reports)")
    print(f"{'outcome load':<13} {'added p50 ms':>12} {'added p99 ms':>12} {'router p50':>10} {'router p99':>10} {'requests':>9} "
          f"{'router CPU s':>12}")
    for load, r in rows.items():
        print(f"{load:<13} {r['added_p50_ms']:>12.3f} {r['added_p99_ms']:>12.3f} {r['router_p50_ms']:>10.3f} {r['router_p99_ms']:>10.3f} "
              f"{r['requests']:>9} {r['router_cpu_s']:>12.2f}")
    effect, noise = _paired(per_round)
    for i, name in enumerate(("p50", "p99")):
        print(f"added {name}, with minus without, round by round: median {effect[i][0]:+.3f} ms (range {effect[i][1]:+.3f} to "
              f"{effect[i][2]:+.3f}); one round without minus the next without (the noise): median {noise[i][0]:+.3f} ms "
              f"(range {noise[i][1]:+.3f} to {noise[i][2]:+.3f})")
    save(args.json.with_name("ledger_predict.json") if args.json.name == "ledger.json" else args.json,
         {"python": platform.python_version(), "rps": args.rps, "seconds": args.seconds, "rounds": args.rounds,
          "outcome_rate_target": args.outcome_rate, "outcome_batch": args.outcome_batch, "outcomes_per_second": rate,
          "outcome_report_errors": posted["errors"], "rows": rows, "per_round_added_ms": per_round,
          "paired_effect_ms": {"p50": effect[0], "p99": effect[1]}, "noise_ms": {"p50": noise[0], "p99": noise[1]}})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--submitters", type=_ints, default=[1, 8], help="concurrent submitters, comma-separated (default 1,8)")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 100], help="outcomes per report, comma-separated (default 1,100)")
    parser.add_argument("--postgres-url", default=None, help="an existing database (default: start a throwaway one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "ledger.json")
    parser.add_argument("--predict", action="store_true", help="the predict path's added latency without and with outcome load")
    parser.add_argument("--rps", type=float, default=200.0, help="with --predict: predict requests per second (default 200)")
    parser.add_argument("--rounds", type=int, default=4, help="with --predict: rounds each way, alternating (default 4)")
    parser.add_argument("--outcome-rate", type=float, default=2000.0, help="with --predict: outcomes per second posted (default 2000)")
    parser.add_argument("--outcome-batch", type=int, default=20, help="with --predict: outcomes per report (default 20)")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models",
                        help="with --predict: the trained models folder (default models/)")
    args = parser.parse_args()
    if args.predict:
        return predict_bench(args)

    keys = itertools.count(int(time.time() * 1e6) << 40)  # fresh signatures on every run, even against one database
    baseline = asyncio.run(idle_lag(min(args.seconds, 2.0)))
    print(f"event loop lag p99 with no load: {baseline:.3f} ms")
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="modelramp-bench-ledger-") as folder:
        rows += run_database("sqlite", f"sqlite:///{folder}/outcomes.db", args, keys)
    if not args.no_postgres:
        url, server = _postgres(args)
        if url is None:
            notes.append(str(server))
            print(f"  postgresql skipped: {server}")
        else:
            try:
                rows += run_database("postgresql", url, args, keys)
            finally:
                if server is not None:
                    server.remove()

    header = (f"{'database':<10} {'batch':>5} {'subm.':>5} {'outcomes/s':>11} {'reports/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'CPU us/outc.':>12} {'loop lag p99 ms':>15}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['database']:<10} {r['batch_size']:>5} {r['submitters']:>5} {r['outcomes_per_second']:>11,.0f} "
              f"{r['reports_per_second']:>10,.0f} {r['record_p50_ms']:>7.2f} {r['record_p99_ms']:>7.2f} "
              f"{r['cpu_us_per_outcome']:>12.1f} {r['loop_lag_p99_ms']:>15.3f}")
    for note in notes:
        print(note)
    save(args.json, {"python": platform.python_version(), "seconds": args.seconds, "idle_loop_lag_p99_ms": baseline,
                     "median_outcomes_per_second": statistics.median([r["outcomes_per_second"] for r in rows]) if rows else None,
                     "rows": rows, "notes": notes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
