"""Benchmark: what the router adds, measured against the legacy system directly, in one run.

    python loadtests/bench_router.py --models models [--rps 500] [--seconds 20] [--json out.json]
    python loadtests/bench_router.py --models models --baseline-rev 5e0b210 [--json out.json]
    python loadtests/bench_router.py --models models --baseline-rev c22270d^ --after-rev c22270d   # one commit's share

Starts `modelramp legacy`, `modelramp serve-model` and one `modelramp router` (model weight 1%
unless `--model-weight` says otherwise, so nearly every request is forwarded to the legacy
system, the production case at stage 1; model arm over gRPC unless `--model-transport rest`) on
free loopback ports, then drives the SAME open-loop load (constant arrival rate, one new
request every 1/rps seconds whatever the answers do, so slow answers cannot hide as fewer
requests) with the same rows at the legacy system and through the router, in alternating
rounds so that other load on the machine hits both paths alike:

- added latency at p50, p90, p99 (router minus direct, same percentile), over the requests the
  router's legacy arm answered: the 1% the model answers are reported apart, since their
  latency is the model's inference, not the router's overhead;
- router CPU-seconds per 1,000 requests (from the router process's own CPU counters) and RSS,
  beside the same figure for a bare forwarder (`bare_forwarder.py`: bytes in, bytes out, no
  checks) in the same rounds, callbacks only and in the router's shape of tasks, futures and
  coroutine levels (`--shape awaiting`): what any Python forwarder pays per request on this
  machine, and what that shape adds to it;
- the same two CPU figures at the rates of `--cpu-rps` (default 1,000 req/s, the load of the
  Envoy anchor), where a request less often finds the process asleep;
- throughput of one router process at saturation (closed loop, `--saturate` clients).

Before and after, `--baseline-rev REV` (any git revision): the script checks REV out into a
temporary `git worktree` (removed at the end, also on error) and starts a second router from
it beside this tree's, with the same interpreter and virtualenv but REV's own code (cwd and
PYTHONPATH are the checkout, which come before the editable install). Both routers load the
same experiment file (at 5e0b210 the schema accepts it as it is: name, salt, model_name and two
arms; each revision applies its own defaults for the rest) and the same flags (--config,
--host, --http-port, --grpc-port; no --outcome-ledger, which older revisions do not know: each
gets $MODELRAMP_OUTCOME_LEDGER beside its log, which a revision without a ledger ignores), and
front the same legacy system and model server. Every round then measures direct, this tree's
router, the baseline's router and the bare forwarder in turn (the two routers swap places every
round), and the saturation phase alternates the routers in `--rounds` parts: noise on a shared
machine then lands on both revisions alike, where two separate runs would compare two different
machines. Every figure is reported for both routers with the ratio after/before (this tree over
REV); "this tree" is the working tree as the routers start, so the result names its commit and
any tracked files changed but not committed.

Goals: added p50 <= 0.5 ms, added p99 <= 2 ms at 500 rps, <= 0.3 CPU-s per 1,000
forwarded requests (about 3,300 req/s per core), RSS < 150 MB. On a shared 2-core machine the
load generator, the legacy system and the router compete for the cores: compare the rows of
one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import aiohttp
import psutil
import yaml
from results_file import save

from experiments.local.stack import Child
from tests.router.stack import ROW
from tests.support.processes import REPO, Process, free_port, port_open, wait_until

GOALS = {"added_p50_ms": 0.5, "added_p99_ms": 2.0, "cpu_s_per_1000": 0.3, "rss_mb": 150.0}
SIGNING_KEY = {"MODELRAMP_SIGNING_KEY": "bench"}
# Figures compared after/before with --baseline-rev (the latencies through each router as well).
COMPARED = ("added_p50_ms", "added_p90_ms", "added_p99_ms", "cpu_s_per_1000", "cpu_user_s_per_1000", "cpu_system_s_per_1000",
            "rss_mb", "router_all_arms_p99_ms", "router_saturation_rps", "cpu_s_per_1000_at_saturation")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank); NaN for no values (the legacy arm's answers at `--model-weight 1`)."""
    if not values:
        return math.nan
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

        n, elapsed = await paced(rps, int(rps * seconds), one)
    return {"requests": n, "errors": errors, "achieved_rps": n / elapsed}


async def paced(rps: float, calls: int, one: Callable[[int], Coroutine[Any, Any, None]]) -> tuple[int, float]:
    """Start `one(i)` at i / rps seconds for i < calls, never waiting for answers (an open loop); (calls, seconds taken)."""
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    for i in range(calls):
        delay = start + i / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return calls, time.perf_counter() - start


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


def ready(url: str) -> bool:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=1) as r:
        return bool(r.status == 200)  # urlopen's result is Any in typeshed


def router_args(config: Path) -> tuple[list[str], str, int]:
    """The `router` subcommand's arguments on two free ports (every revision knows these flags); (args, predict URL, HTTP port)."""
    http_port, grpc_port = free_port(), free_port()
    args = ["router", "--config", str(config), "--host", "127.0.0.1", "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    return args, f"http://127.0.0.1:{http_port}/v1/models/churn:predict", http_port


def start_stack(models: Path, workdir: Path, model_weight: float = 0.01,
                model_transport: str = "grpc") -> tuple[list[Process], str, str, int]:
    """Legacy system, model server and one router; its model arm over TF Serving's gRPC (`tfserving_grpc`) or REST API."""
    legacy_port, model_port, rest_port = (free_port() for _ in range(3))
    model_backend = ({"kind": "tfserving_grpc", "target": f"127.0.0.1:{model_port}", "model_name": "churn"} if model_transport == "grpc"
                     else {"kind": "tfserving_rest", "url": f"http://127.0.0.1:{rest_port}", "model_name": "churn"})
    config = {"name": "bench", "salt": "bench", "model_name": "churn", "arms": {
        "legacy": {"weight": 1 - model_weight, "backend": {"kind": "legacy_http", "url": f"http://127.0.0.1:{legacy_port}"}},
        "model": {"weight": model_weight, "backend": model_backend}}}
    (workdir / "bench.yaml").write_text(yaml.safe_dump(config))
    legacy = Process(["legacy", "--host", "127.0.0.1", "--port", str(legacy_port)], workdir / "legacy.log")
    model = Process(["serve-model", "--host", "127.0.0.1", "--port", str(model_port), "--rest_api_port", str(rest_port),
                     "--model_name", "churn", "--model_base_path", str(models.resolve() / "churn")], workdir / "model.log")
    args, router_url, http_port = router_args(workdir / "bench.yaml")
    router = Process(args, workdir / "router.log", env=SIGNING_KEY)
    procs = [router, legacy, model]
    wait_until(lambda: ready(f"http://127.0.0.1:{legacy_port}/healthz"), 60, "legacy ready", legacy.proc)
    wait_until(lambda: ready(f"http://127.0.0.1:{http_port}/readyz"), 120, "router ready (model signature known)", router.proc)
    return procs, f"http://127.0.0.1:{legacy_port}/v1/predict", router_url, router.proc.pid


@contextlib.contextmanager
def checkout(rev: str) -> Iterator[tuple[Path, str]]:
    """(a detached `git worktree` of `rev` in a temporary folder, its commit); removed on exit, also on error."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="bench-router-baseline-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), commit], cwd=REPO, check=True, capture_output=True)
    try:
        yield folder, commit
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, check=False, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False, capture_output=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()


def tree_state() -> tuple[str, list[str]]:
    """(this tree's commit, its tracked files changed but not committed): what "after" ran, in a shared tree."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout

    return git("rev-parse", "HEAD").strip(), [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]


def start_baseline_router(tree: Path, workdir: Path, role: str = "baseline") -> tuple[Child, str]:
    """A router run from the checkout `tree` (its code, this interpreter) on the stack's experiment file; (it, its predict URL)."""
    args, url, http_port = router_args(workdir / "bench.yaml")
    log = workdir / f"{role}-router.log"
    env = {**SIGNING_KEY, "PYTHONPATH": str(tree), "MODELRAMP_OUTCOME_LEDGER": f"sqlite:///{log.with_suffix('.outcomes.db')}"}
    router = Child(f"{role} router", args, env, log_path=log, cwd=tree)
    return once(router, lambda: ready(f"http://127.0.0.1:{http_port}/readyz"), 120, f"{role} router ready (see {log})"), url


def once(child: Child, predicate: Callable[[], bool], timeout: float, what: str) -> Child:
    """`child` once `predicate` holds; if it never does (or the child exits), the child is stopped and the error raised."""
    try:
        wait_until(predicate, timeout, what, child.proc)
    except BaseException:
        child.stop()
        raise
    return child


FORWARDERS = {"bare_forwarder": "callbacks", "awaiting_forwarder": "awaiting"}  # result key -> bare_forwarder.py --shape


def start_forwarder(direct_url: str, workdir: Path, shape: str = "callbacks") -> tuple[subprocess.Popen, str]:
    """bare_forwarder.py (of `shape`) in front of the same legacy system; (process, its predict URL)."""
    port = free_port()
    legacy_port = direct_url.split(":")[2].split("/")[0]
    with open(workdir / f"forwarder-{shape}.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_forwarder.py")), "--legacy-port", legacy_port,
                                 "--port", str(port), "--shape", shape], stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: port_open(port), 30, "bare forwarder listening", proc)
    return proc, f"http://127.0.0.1:{port}/v1/models/churn:predict"


async def round_with_cpu(url: str, proc: psutil.Process, body: bytes, rps: float, seconds: float,
                         latencies: dict[str, list[float]] | None = None) -> tuple[dict, float, float]:
    """One open-loop round against `url`: (its summary, user and kernel CPU-seconds `proc` spent)."""
    before = proc.cpu_times()
    part = await open_loop(url, body, rps, seconds, True, latencies)
    after = proc.cpu_times()
    return part, after.user - before.user, after.system - before.system


@dataclass
class Measured:
    """One router under load (this tree's or the baseline's) and what its rounds added up to."""

    name: str  # "router" (this tree) or "baseline"
    url: str
    proc: psutil.Process
    latencies: dict[str, list[float]] = field(default_factory=dict)
    parts: list[dict] = field(default_factory=list)
    cpu_user: float = 0.0
    cpu_system: float = 0.0
    saturation_s: float = 0.0
    saturation_requests: int = 0
    saturation_cpu: float = 0.0
    rss_mb: float = 0.0
    round_p50_ms: list[float] = field(default_factory=list)  # the legacy arm's p50 in each round: how steady the rounds were

    async def measure_round(self, body: bytes, rps: float, seconds: float) -> None:
        latencies: dict[str, list[float]] = {}
        part, user, system = await round_with_cpu(self.url, self.proc, body, rps, seconds, latencies)
        for arm, values in latencies.items():
            self.latencies.setdefault(arm, []).extend(values)
        if latencies.get("legacy"):
            self.round_p50_ms.append(percentile(latencies["legacy"], 0.5) * 1000)
        self.parts.append(part)
        self.cpu_user += user
        self.cpu_system += system
        self.rss_mb = max(self.rss_mb, self.proc.memory_info().rss / 2**20)

    async def saturate(self, body: bytes, clients: int, seconds: float) -> None:
        before, start = self.proc.cpu_times(), time.perf_counter()
        _, answered = await closed_loop(self.url, body, clients, seconds)
        after = self.proc.cpu_times()
        self.saturation_s += time.perf_counter() - start
        self.saturation_requests += answered
        self.saturation_cpu += after.user + after.system - before.user - before.system
        self.rss_mb = max(self.rss_mb, self.proc.memory_info().rss / 2**20)

    def figures(self, direct: dict) -> dict:
        """This router's figures (the keys of the result), against the direct path's summary."""
        routed = summary(self.latencies.get("legacy", []), self.parts)
        every = [x for lat in self.latencies.values() for x in lat]
        model_arm = self.latencies.get("model", [])
        requests = routed["requests"]
        saturated = self.saturation_requests > 0
        return {
            "router": routed,
            **{f"added_p{q}_ms": routed[f"p{q}_ms"] - direct[f"p{q}_ms"] for q in (50, 90, 99)},
            "cpu_s_per_1000": (self.cpu_user + self.cpu_system) / requests * 1000, "rss_mb": self.rss_mb,
            "cpu_user_s_per_1000": self.cpu_user / requests * 1000, "cpu_system_s_per_1000": self.cpu_system / requests * 1000,
            "router_all_arms_p99_ms": percentile(every, 0.99) * 1000, "round_p50_ms": self.round_p50_ms,
            "model_arm": {"requests": len(model_arm), **({"p50_ms": percentile(model_arm, 0.5) * 1000,
                                                          "p99_ms": percentile(model_arm, 0.99) * 1000} if model_arm else {})},
            # At full load epoll hands over many events per wake-up: the cost per request falls.
            "router_saturation_rps": self.saturation_requests / self.saturation_s if saturated else None,
            "cpu_s_per_1000_at_saturation": self.saturation_cpu / self.saturation_requests * 1000 if saturated else None,
        }


def ratios(after: dict, before: dict, cpu_at: dict[str, dict[str, float]]) -> dict:
    """after / before for each compared figure; None unless both are positive (an added latency may
    come out negative on a noisy machine: the difference is then the figure to read)."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b is not None and a > 0 and b > 0 else None

    out = {f"router_p{q}_ms": ratio(after["router"][f"p{q}_ms"], before["router"][f"p{q}_ms"]) for q in (50, 90, 99)}
    out.update({key: ratio(after[key], before[key]) for key in COMPARED})
    out.update({f"cpu_s_per_1000_at_{rate}_rps": ratio(row["router"], row["baseline"]) for rate, row in cpu_at.items()})
    return out


async def bench(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-router-"))
    with contextlib.ExitStack() as stack:
        tree, commit = stack.enter_context(checkout(args.baseline_rev)) if args.baseline_rev else (None, None)
        after_tree, after_commit = stack.enter_context(checkout(args.after_rev)) if args.after_rev else (None, None)
        after = tree_state() if after_tree is None else (after_commit, [])  # as the routers start: they import their code then
        procs, direct_url, router_url, router_pid = start_stack(args.models, workdir, args.model_weight, args.model_transport)
        for p in procs:
            stack.callback(p.stop)
        if after_tree is not None:  # "after" is that revision's router; this tree's, started with the stack, stays idle
            after_router, router_url = start_baseline_router(after_tree, workdir, "after")
            stack.callback(after_router.stop)
            router_pid = after_router.proc.pid
        forwarders: dict[str, tuple[str, psutil.Process]] = {}
        for name, shape in FORWARDERS.items():
            forwarder, forwarder_url = start_forwarder(direct_url, workdir, shape)
            stack.callback(forwarder.wait, 10)
            stack.callback(forwarder.terminate)
            forwarders[name] = forwarder_url, psutil.Process(forwarder.pid)
        routers = [Measured("router", router_url, psutil.Process(router_pid))]
        if tree is not None:
            baseline, baseline_url = start_baseline_router(tree, workdir)
            stack.callback(baseline.stop)  # before the checkout is removed (callbacks run last first)
            routers.append(Measured("baseline", baseline_url, psutil.Process(baseline.proc.pid)))
        result = await measure(args, direct_url, routers, forwarders)
    if tree is not None:
        result["baseline_rev"], result["baseline_commit"] = args.baseline_rev, commit
        result["after_commit"], result["after_uncommitted"] = after
        result["after_rev"] = args.after_rev
    return result


async def measure(args: argparse.Namespace, direct_url: str, routers: list[Measured],
                  forwarders: dict[str, tuple[str, psutil.Process]]) -> dict:
    """Every round, every path; `forwarders`: name -> (predict URL, process) of each bare forwarder."""
    body = json.dumps({"instances": [ROW]}).encode()  # the same row; the legacy API and TF Serving's share this body shape
    await open_loop(direct_url, body, args.rps, 3, False)  # warm-up every path: connections, caches
    for r in routers:
        await open_loop(r.url, body, args.rps, 3, True)
    for forwarder_url, _ in forwarders.values():
        await open_loop(forwarder_url, body, args.rps, 3, True)
    # Alternating rounds: other load on a shared machine then hits every path alike; with a
    # baseline the two routers swap places every round, so neither always follows the direct path.
    direct_lat: dict[str, list[float]] = {}
    direct_parts = []
    forwarder_cpu = dict.fromkeys(forwarders, 0.0)
    forwarded = dict.fromkeys(forwarders, 0)
    forwarder_errors = dict.fromkeys(forwarders, 0)
    round_seconds = args.seconds / args.rounds

    def in_turn(k: int) -> list[Measured]:
        """The routers in round `k`'s order: rotated by one each round."""
        return routers[k % len(routers):] + routers[:k % len(routers)]

    for k in range(args.rounds):
        direct_parts.append(await open_loop(direct_url, body, args.rps, round_seconds, False, direct_lat))
        for r in in_turn(k):
            await r.measure_round(body, args.rps, round_seconds)
        for name, (forwarder_url, forwarder_proc) in forwarders.items():
            part, user, system = await round_with_cpu(forwarder_url, forwarder_proc, body, args.rps, round_seconds)
            forwarder_cpu[name] += user + system
            forwarded[name] += part["requests"]
            forwarder_errors[name] += part["errors"]
    # CPU only, at the other rates: routers and forwarder rounds alternate as above.
    by_rate: dict[str, dict[str, float]] = {}
    for rate in args.cpu_rps:
        spent: dict[str, float] = {}
        sent: dict[str, int] = {}
        for k in range(args.rounds):
            for name, url, proc in [*((r.name, r.url, r.proc) for r in in_turn(k)), *((f, url, proc) for f, (url, proc) in forwarders.items())]:
                part, user, system = await round_with_cpu(url, proc, body, rate, round_seconds)
                spent[name] = spent.get(name, 0.0) + user + system
                sent[name] = sent.get(name, 0) + part["requests"]
        by_rate[f"{rate:g}"] = {name: spent[name] / sent[name] * 1000 for name in spent}
    if args.saturate:
        # One stretch for a single router; with a baseline, the two alternate in --rounds parts.
        parts = args.rounds if len(routers) > 1 else 1
        for k in range(parts):
            for r in in_turn(k):
                await r.saturate(body, args.saturate, min(args.seconds, 10) / parts)
    # What the router adds to the legacy system's answers: the 1% the model answers carry the
    # model's own inference and would make the router's p99 the model's latency.
    direct = summary(direct_lat.get("direct", []), direct_parts)
    figures = {r.name: r.figures(direct) for r in routers}
    result = {
        "rps": args.rps, "seconds": args.seconds, "direct": direct, **figures["router"],
        **{f"{name}_cpu_s_per_1000": forwarder_cpu[name] / forwarded[name] * 1000 for name in forwarders},
        **{f"{name}_errors": forwarder_errors[name] for name in forwarders},
        "cpu_s_per_1000_by_rps": by_rate, "saturation_clients": args.saturate,
    }
    result["goals_met"] = {k: result[k] <= v for k, v in GOALS.items()}
    # The CPU goal read as capacity ("about 3,300 requests/s per core"), and at each other rate.
    if result["cpu_s_per_1000_at_saturation"] is not None:
        result["goals_met"]["cpu_s_per_1000_at_saturation"] = result["cpu_s_per_1000_at_saturation"] <= GOALS["cpu_s_per_1000"]
    for rate, row in by_rate.items():
        result["goals_met"][f"cpu_s_per_1000_at_{rate}_rps"] = row["router"] <= GOALS["cpu_s_per_1000"]
    if "baseline" in figures:
        result["baseline"] = figures["baseline"]
        result["after_over_before"] = ratios(figures["router"], figures["baseline"], by_rate)
    return result


def print_before_after(result: dict) -> None:
    """Both routers' figures side by side: the baseline revision (before), this tree (after), after/before."""
    after, before, ratio = result, result["baseline"], result["after_over_before"]

    def row(label: str, a: float | None, b: float | None, r: float | None) -> None:
        difference = a - b if a is not None and b is not None else None
        cells = [f"{x:14.3f}" if x is not None else f"{'-':>14s}" for x in (b, a, r, difference)]
        print(f"{label:32s}{''.join(cells)}")

    uncommitted = ", ".join(result["after_uncommitted"]) or "none"
    named = (f"{result['after_rev']} ({result['after_commit'][:10]})" if result.get("after_rev")
             else f"this tree ({result['after_commit'][:10]}; uncommitted changes: {uncommitted})")
    print(f"\nbefore = {result['baseline_rev']} ({result['baseline_commit'][:10]}), after = {named}, in the same rounds")
    print(f"{'':32s}{'before':>14s}{'after':>14s}{'after/before':>14s}{'after-before':>14s}")
    for q in (50, 90, 99):
        row(f"router p{q} ms", after["router"][f"p{q}_ms"], before["router"][f"p{q}_ms"], ratio[f"router_p{q}_ms"])
    for q in (50, 90, 99):
        row(f"added p{q} ms", after[f"added_p{q}_ms"], before[f"added_p{q}_ms"], ratio[f"added_p{q}_ms"])
    row("all arms p99 ms", after["router_all_arms_p99_ms"], before["router_all_arms_p99_ms"], ratio["router_all_arms_p99_ms"])
    row("CPU-s per 1,000 requests", after["cpu_s_per_1000"], before["cpu_s_per_1000"], ratio["cpu_s_per_1000"])
    row("  user", after["cpu_user_s_per_1000"], before["cpu_user_s_per_1000"], ratio["cpu_user_s_per_1000"])
    row("  kernel", after["cpu_system_s_per_1000"], before["cpu_system_s_per_1000"], ratio["cpu_system_s_per_1000"])
    for rate, cpu in result["cpu_s_per_1000_by_rps"].items():
        row(f"CPU-s per 1,000 at {rate} req/s", cpu["router"], cpu["baseline"], ratio[f"cpu_s_per_1000_at_{rate}_rps"])
    row("RSS MB", after["rss_mb"], before["rss_mb"], ratio["rss_mb"])
    row("saturation req/s", after["router_saturation_rps"], before["router_saturation_rps"], ratio["router_saturation_rps"])
    row("CPU-s per 1,000 at saturation", after["cpu_s_per_1000_at_saturation"], before["cpu_s_per_1000_at_saturation"],
        ratio["cpu_s_per_1000_at_saturation"])
    print(f"{'p50 ms in each round':32s}before {', '.join(f'{x:.3f}' for x in before['round_p50_ms'])}; "
          f"after {', '.join(f'{x:.3f}' for x in after['round_p50_ms'])}")
    print(f"errors: before {before['router']['errors']}, after {after['router']['errors']}; model arm answered "
          f"{before['model_arm']['requests']} before, {after['model_arm']['requests']} after")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="exported models (modelramp train --all-versions)")
    parser.add_argument("--rps", type=float, default=500.0, help="open-loop arrival rate (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per path, split into rounds (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating direct/router rounds (default 4)")
    parser.add_argument("--model-transport", choices=("grpc", "rest"), default="grpc",
                        help="the model arm over TF Serving's gRPC (tfserving_grpc, default) or REST API (tfserving_rest)")
    parser.add_argument("--model-weight", type=float, default=0.01,
                        help="the model arm's share (default 0.01, stage 1; the CPU figures cover both arms' requests)")
    parser.add_argument("--cpu-rps", type=lambda v: [float(x) for x in v.split(",") if x], default=[1000.0],
                        help="other rates (comma-separated) at which to measure CPU per request as well (default 1000; '' for none)")
    parser.add_argument("--saturate", type=int, default=32, help="closed-loop clients for the throughput phase; 0 skips it")
    parser.add_argument("--after-rev", default=None, metavar="REV",
                        help="with --baseline-rev: 'after' is a router from a worktree of REV instead of this tree (to bisect)")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="also run a router from git revision REV (a temporary worktree) in the same rounds: before/after")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    if args.after_rev and not args.baseline_rev:
        parser.error("--after-rev compares against --baseline-rev: give both")
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
          f"bare forwarders in the same rounds: callbacks only {result['bare_forwarder_cpu_s_per_1000']:.3f} "
          f"({result['bare_forwarder_errors']} errors), the router's shape {result['awaiting_forwarder_cpu_s_per_1000']:.3f} "
          f"({result['awaiting_forwarder_errors']} errors)")
    for rate, row in result["cpu_s_per_1000_by_rps"].items():
        print(f"at {rate} req/s: router {row['router']:.3f} CPU-s per 1,000 requests, bare forwarders: callbacks only "
              f"{row['bare_forwarder']:.3f}, the router's shape {row['awaiting_forwarder']:.3f}")
    if result["router_saturation_rps"]:
        print(f"one router process at saturation ({args.saturate} clients, generator and legacy on the same cores): "
              f"{result['router_saturation_rps']:.0f} req/s, {result['cpu_s_per_1000_at_saturation']:.3f} CPU-s per 1,000 requests")
    print("goals met:", result["goals_met"])
    if "baseline" in result:
        print_before_after(result)
    if args.json:
        save(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
