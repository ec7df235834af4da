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
from pathlib import Path

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
        from tests.router.ledger.pgserver import RestartablePostgres, _bindir  # noqa: PLC0415 - only without --postgres-url
    except ImportError as err:
        return None, f"cannot start PostgreSQL: {err}"
    bindir = _bindir()
    if bindir is None:
        return None, "PostgreSQL binaries not installed (apt-get install postgresql) and no --postgres-url"
    server = RestartablePostgres(bindir)
    server.start()
    return server.create_database(), server


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    parser.add_argument("--submitters", type=_ints, default=[1, 8], help="concurrent submitters, comma-separated (default 1,8)")
    parser.add_argument("--batch-sizes", type=_ints, default=[1, 100], help="outcomes per report, comma-separated (default 1,100)")
    parser.add_argument("--postgres-url", default=None, help="an existing database (default: start a throwaway one)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "ledger.json")
    args = parser.parse_args()

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
