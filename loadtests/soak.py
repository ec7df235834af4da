"""Soak test (run by hand, not in CI): steady load for a set time; router memory and latency over time.

    python loadtests/soak.py --models models --seconds 600 --rate 200 [--port-offset 300]

Starts its own local stack (model server, legacy system, router; no Prometheus needed) on
the ports of docs/architecture.md plus the offset, drives the demo's simulated users (with outcome reports)
at a steady rate, and every `--every` seconds records the router's resident memory, the clients'
p50/p99 latency over that interval, and client errors. Bounded: it stops by itself after
`--seconds`. Writes `loadtests/results/soak.csv` and `soak.png`, and fails (exit 1) if any client
saw an error or the router's memory grew more than `--max-growth-mb` from the first interval to
the last (a leak, not warm-up).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from experiments.config import EXAMPLE_CONFIG, dump_config, load_config
from experiments.local.demo import DemoSettings, demo_config
from experiments.local.simulated_users import SimulatedUsers
from experiments.local.stack import Ports, start_stack
from serving.training import dataset


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to hold the load (default 600)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--every", type=float, default=10.0, help="sampling interval in seconds (default 10)")
    parser.add_argument("--port-offset", type=int, default=300)
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("loadtests/results"))
    args = parser.parse_args()

    base = Ports()
    ports = Ports(**{k: v + args.port_offset for k, v in vars(base).items()})
    run_dir = Path(tempfile.mkdtemp(prefix="modelramp-soak-"))
    settings = DemoSettings(models=args.models, out=run_dir, ports=ports)
    config = demo_config(load_config(EXAMPLE_CONFIG), settings, ports, "127.0.0.1")
    config_path = run_dir / "experiment.yaml"
    config_path.write_text(dump_config(config))
    stack = start_stack(args.models, dataset.MODEL_NAME, config_path, run_dir, ports=ports, with_prometheus=False)
    users = SimulatedUsers(stack.router_url, config.model_name, dataset.read_split(args.models / "data", "live"), args.rate)
    rows = []
    try:
        router_pid = stack.children["router"].proc.pid
        users.start()
        started = time.monotonic()
        seen = 0
        while time.monotonic() - started < args.seconds:
            time.sleep(args.every)  # the sampling interval of a by-hand soak, not synchronisation
            s = users.stats
            fresh = s.requests - seen
            seen = s.requests
            window = np.array(s.latencies_ms[-fresh:]) if fresh else np.array([np.nan])
            row = {"seconds": round(time.monotonic() - started, 1), "router_rss_mb": round(rss_mb(router_pid), 1),
                   "requests": s.requests, "errors": s.client_errors, "skipped": s.skipped,
                   "p50_ms": round(float(np.nanpercentile(window, 50)), 2), "p99_ms": round(float(np.nanpercentile(window, 99)), 2)}
            rows.append(row)
            print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    finally:
        users.stop()
        stack.stop()

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "soak.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(8, 5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    t = [r["seconds"] for r in rows]
    top.plot(t, [r["router_rss_mb"] for r in rows])
    top.set_ylabel("router RSS (MB)")
    bottom.plot(t, [r["p50_ms"] for r in rows], label="p50")
    bottom.plot(t, [r["p99_ms"] for r in rows], label="p99")
    bottom.set_ylabel("client latency (ms)")
    bottom.set_xlabel("seconds")
    bottom.legend()
    fig.suptitle(f"soak: {args.rate:g} requests/s for {args.seconds:g} s")
    fig.savefig(args.out / "soak.png", dpi=100)

    growth = rows[-1]["router_rss_mb"] - rows[0]["router_rss_mb"]
    errors = rows[-1]["errors"]
    print(f"router RSS {rows[0]['router_rss_mb']} -> {rows[-1]['router_rss_mb']} MB (growth {growth:+.1f}, limit "
          f"{args.max_growth_mb}); client errors {errors}; saved {args.out / 'soak.csv'} and soak.png")
    return 0 if errors == 0 and growth <= args.max_growth_mb else 1


if __name__ == "__main__":
    sys.exit(main())
