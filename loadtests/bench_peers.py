"""Benchmark: the router's cost at each stage beside nginx and HAProxy, in one run.

    python loadtests/bench_peers.py --models models [--shares 1,50,100] [--rps 500] [--seconds 40] [--rounds 8] [--json out.json]
    python loadtests/bench_peers.py --models models --router-image "$(scripts/build_images.sh names | head -1)" ...

Starts `modelramp legacy` and `modelramp serve-model` (with `bench_router.start_stack`), then, for
each model share in `--shares` (percent), five paths on free loopback ports, each splitting REST
predict requests (TF Serving's row format, one live row) between the model server's REST predict
and the legacy system's `/v1/predict`:

- `direct`: no proxy; the load generator itself sends the share's requests to the model server's
  REST predict and the rest to the legacy system (two open loops at the two rates), the baseline
  every "added" figure is measured against;
- `nginx` (Debian's package, one process: `master_process off`): `split_clients` on
  `$request_id` (random per request), keep-alive upstreams;
- `haproxy` (Debian's package, one process, one thread): `rand()` picks the backend,
  `http-reuse always`;
- `router (gRPC)`: one `modelramp router`, model arm `tfserving_grpc` without `rest_port`: every
  model-arm call over gRPC (the router's own HTTP/2 client);
- `router (REST rows)`: one `modelramp router`, model arm `tfserving_grpc` with `rest_port`, as the
  Helm chart and the manifests deploy it: the REST clients' rows go to the model server's REST API
  through the router's own keep-alive HTTP/1.1 client (gRPC clients, which this load has none of,
  would stay on gRPC).

The same open-loop load (`bench_router.open_loop`: constant arrival rate, `--rps`) goes through
each path for `--seconds` per path and share, split into `--rounds` rounds, the paths taking
turns (their order rotated every round), so that other load on the shared machine hits every path
alike. Each round gives, per path, p50 and p99 over every answer (both arms: what a client sees)
and the CPU-seconds the proxy's processes spent (user + kernel, from /proc via psutil, every
process of the proxy). Reported per share and path: added p50 and p99 (the path's minus the
direct path's in the same round, median over rounds), CPU-seconds per 1,000 requests (median over
rounds) and its ratio to nginx's at the same share. The JSON also carries the figures pooled over
all rounds and each arm's latencies apart.

nginx and HAProxy run with their own configuration files in a temporary folder, in the
foreground, never as system services and never on port 80. Compare the rows of one run, not runs.
It exits 1, after printing and saving its figures, if any request on any path failed.

The routers run from this checkout's virtual environment, or with `--router-image` from the router
image (`scripts/build_images.sh` builds it; `buildah run`, the host's loopback): the interpreter a
deployment runs is the image's, Debian's python3.11, and a virtual environment's may be slower (a
pyenv build, for one, is made without profile-guided optimisation). The output names the
interpreter the routers ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmark modules

import psutil
import yaml
from bench_router import SIGNING_KEY, once, open_loop, percentile, ready, router_args, start_stack
from results_file import save

from experiments.local.stack import Child
from scripts.containers import Container, buildah
from tests.router.stack import ROW
from tests.support.processes import Process, free_port, port_open, wait_until

MODEL_PATH = "/v1/models/churn:predict"
LEGACY_PATH = "/v1/predict"
ROUTERS = {"router (gRPC)": "grpc", "router (REST rows)": "rest_rows"}  # path -> the model arm's transport
PEERS = ("nginx", "haproxy", *ROUTERS)


def binary(name: str) -> str:
    """The full path of `name` (Debian installs nginx and haproxy in /usr/sbin, not always on a user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise SystemExit(f"`{name}` not found (Debian: apt-get install {name})")
    return found


def version(path: str, flag: str) -> str:
    """The first line a binary prints for `flag` (nginx writes it to stderr)."""
    out = subprocess.run([path, flag], capture_output=True, text=True, timeout=10, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0]


@dataclass
class Upstreams:
    """The two systems every path splits between."""

    legacy_port: int
    rest_port: int  # the model server's REST API
    config: dict  # the experiment file start_stack wrote (its router's), the template of ours

    @property
    def legacy_url(self) -> str:
        return f"http://127.0.0.1:{self.legacy_port}{LEGACY_PATH}"

    @property
    def model_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}{MODEL_PATH}"


def nginx_conf(folder: Path, port: int, up: Upstreams, share: float) -> str:
    if share >= 100:
        split = "* model;"
    elif share <= 0:
        split = "* legacy;"
    else:
        split = f"{share:g}% model; * legacy;"
    return f"""
master_process off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    keepalive_requests 1000000;
    upstream model {{ server 127.0.0.1:{up.rest_port}; keepalive 64; keepalive_requests 1000000; }}
    upstream legacy {{ server 127.0.0.1:{up.legacy_port}; keepalive 64; keepalive_requests 1000000; }}
    split_clients "$request_id" $arm {{ {split} }}
    map $arm $upstream_path {{ model {MODEL_PATH}; legacy {LEGACY_PATH}; }}
    server {{
        listen 127.0.0.1:{port};
        location = {MODEL_PATH} {{
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://$arm$upstream_path;
            add_header X-Modelramp-Arm $arm always;
        }}
    }}
}}
"""


def haproxy_cfg(port: int, up: Upstreams, share: float) -> str:
    return f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:{port}
    use_backend model if {{ rand(10000) lt {round(share * 100)} }}
    default_backend legacy
backend model
    http-response set-header X-Modelramp-Arm model
    server model 127.0.0.1:{up.rest_port}
backend legacy
    http-request set-path {LEGACY_PATH}
    http-response set-header X-Modelramp-Arm legacy
    server legacy 127.0.0.1:{up.legacy_port}
"""


def start_proxy(name: str, folder: Path, up: Upstreams, share: float) -> tuple[Child, str]:
    """nginx or haproxy in the foreground on its own configuration in `folder`; (it, its predict URL)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()  # the OS's pick, from its ephemeral range: never 80, whatever a system nginx may hold
    if name == "nginx":
        conf = folder / "nginx.conf"
        conf.write_text(nginx_conf(folder, port, up, share))
        args = ["-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log"), "-g", "daemon off;"]
    else:
        conf = folder / "haproxy.cfg"
        conf.write_text(haproxy_cfg(port, up, share))
        args = ["-f", str(conf), "-db"]
    child = Child(name, args, log_path=folder / f"{name}.log", executable=binary(name))
    return once(child, lambda: port_open(port), 30, f"{name} listening (see {folder})"), f"http://127.0.0.1:{port}{MODEL_PATH}"


def start_router(kind: str, folder: Path, up: Upstreams, share: float, image: str | None = None) -> tuple[Child | Container, str]:
    """A `modelramp router` at `share` percent with its model arm's REST rows over `kind` (a ROUTERS value); (it, its predict URL).

    `image`: the router runs from that image, its folder mounted at /bench (else from this checkout).
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(up.config))
    config["arms"]["legacy"]["weight"] = 1 - share / 100
    config["arms"]["model"]["weight"] = share / 100
    if kind == "rest_rows":
        config["arms"]["model"]["backend"]["rest_port"] = up.rest_port
    (folder / "bench.yaml").write_text(yaml.safe_dump(config))
    router: Child | Container
    if image is None:
        args, url, http_port = router_args(folder / "bench.yaml")
        router = Process(args, folder / "router.log", env=SIGNING_KEY)
    else:
        folder.chmod(0o755)  # the image's user reads the experiment file
        (folder / "bench.yaml").chmod(0o644)
        args, url, http_port = router_args(Path("/bench/bench.yaml"))
        router = Container(image, [*args, "--outcome-ledger", "sqlite:////tmp/outcomes.db"], folder / "router.log",
                           {folder: "/bench"}, env=SIGNING_KEY)
    try:
        wait_until(lambda: ready(f"http://127.0.0.1:{http_port}/readyz"), 120, f"router ({kind}) ready (see {folder})", router.proc)
    except BaseException:
        router.stop()
        raise
    return router, url


def router_runtime(image: str | None) -> str:
    """The interpreter the routers run on: this one's version, or `python3 -VV` in the image."""
    if image is None:
        return f"{sys.executable}: Python {sys.version.splitlines()[0]}"
    name = buildah("from", "--quiet", image)
    try:
        found = buildah("run", name, "--", "python3", "-VV", check=False)
    finally:
        buildah("rm", name, check=False)
    return f"router image {image}: {found or 'python3 -VV said nothing'}"


def pct(values: list[float], q: float) -> float:
    """`percentile` in milliseconds, NaN for no values (a path whose every request failed)."""
    return percentile(values, q) * 1000 if values else float("nan")


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def machine_busy(before: dict[str, float], after: dict[str, float]) -> float:
    """The share of every core's time spent busy between two `psutil.cpu_times()._asdict()` (by anything: other work too)."""
    spent = {k: after[k] - before[k] for k in after}
    total = sum(spent.values()) - spent.get("guest", 0.0) - spent.get("guest_nice", 0.0)  # guest time is counted in user already
    idle = spent.get("idle", 0.0) + spent.get("iowait", 0.0)
    return 1 - idle / total if total > 0 else 0.0


@dataclass
class Route:
    """One way to the two systems, and what its rounds measured."""

    name: str
    targets: list[tuple[str, float, str | None]]  # (URL, share of the rate, the arm it reaches: None = the X-Modelramp-Arm header says)
    procs: list[psutil.Process]  # the proxy's processes, whose CPU counts (none for direct)
    unit_header: bool
    rounds: list[dict] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # every round's, by arm

    async def measure_round(self, body: bytes, rps: float, seconds: float) -> dict:
        found: list[dict[str, list[float]]] = [{} for _ in self.targets]
        before, machine = cpu_seconds(self.procs), psutil.cpu_times()._asdict()
        parts = await asyncio.gather(*(open_loop(url, body, rps * share, seconds, self.unit_header, found[i])
                                       for i, (url, share, _) in enumerate(self.targets) if rps * share * seconds >= 1))
        cpu = cpu_seconds(self.procs) - before
        busy = machine_busy(machine, psutil.cpu_times()._asdict())
        by_arm: dict[str, list[float]] = {}
        for (_, _, arm), lat in zip(self.targets, found, strict=True):
            for key, values in lat.items():
                by_arm.setdefault(arm or key, []).extend(values)
        every = [x for values in by_arm.values() for x in values]
        requests = sum(p["requests"] for p in parts)
        row = {"requests": requests, "errors": sum(p["errors"] for p in parts), "cpu_s": cpu,
               "cpu_s_per_1000": cpu / requests * 1000 if requests else 0.0,
               "p50_ms": pct(every, 0.5), "p99_ms": pct(every, 0.99),
               "answered_by": {arm: len(values) for arm, values in by_arm.items()}, "machine_busy": busy}
        self.rounds.append(row)
        for arm, values in by_arm.items():
            self.latencies.setdefault(arm, []).extend(values)
        return row

    def figures(self, direct: Route) -> dict:
        """Medians over rounds of the per-round figures (added: minus the direct path's in the same round), and pooled ones."""
        def median(values: list[float]) -> float:
            return statistics.median(values) if values else float("nan")

        every = [x for values in self.latencies.values() for x in values]
        direct_every = [x for values in direct.latencies.values() for x in values]
        requests = sum(r["requests"] for r in self.rounds)
        out = {
            "requests": requests, "errors": sum(r["errors"] for r in self.rounds),
            "model_share_answered": len(self.latencies.get("model", [])) / max(1, len(every)),
            "added_p50_ms": median([r["p50_ms"] - d["p50_ms"] for r, d in zip(self.rounds, direct.rounds, strict=True)]),
            "added_p99_ms": median([r["p99_ms"] - d["p99_ms"] for r, d in zip(self.rounds, direct.rounds, strict=True)]),
            "cpu_s_per_1000": median([r["cpu_s_per_1000"] for r in self.rounds]) if self.procs else None,
            "pooled": {"p50_ms": pct(every, 0.5), "p99_ms": pct(every, 0.99),
                       "added_p50_ms": pct(every, 0.5) - pct(direct_every, 0.5),
                       "added_p99_ms": pct(every, 0.99) - pct(direct_every, 0.99),
                       "cpu_s_per_1000": sum(r["cpu_s"] for r in self.rounds) / requests * 1000 if self.procs and requests else None},
            "by_arm": {arm: {"requests": len(v), "p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99)}
                       for arm, v in self.latencies.items() if v},
            "machine_busy": median([r["machine_busy"] for r in self.rounds]),
            "rounds": self.rounds,
        }
        return out


@contextlib.contextmanager
def backends(models: Path, workdir: Path) -> Iterator[Upstreams]:
    """The legacy system and the model server (bench_router's stack), stopped on exit."""
    procs, direct_url, _, _ = start_stack(models, workdir)
    try:
        router, _, model = procs
        router.stop()  # the stack's own router: ours are started per share, with the share's weights and each model-arm kind
        rest_port = int(model.args[model.args.index("--rest_api_port") + 1])
        wait_until(lambda: ready(f"http://127.0.0.1:{rest_port}/v1/models/churn"), 60, "model server REST ready", model.proc)
        legacy_port = int(direct_url.split(":")[2].split("/")[0])
        yield Upstreams(legacy_port, rest_port, yaml.safe_load((workdir / "bench.yaml").read_text()))
    finally:
        for p in procs:
            p.stop()


async def measure_share(args: argparse.Namespace, up: Upstreams, share: float, workdir: Path) -> dict:
    body = json.dumps({"instances": [ROW]}).encode()  # the legacy API and TF Serving's REST predict share this body shape
    with contextlib.ExitStack() as stack:
        folder = workdir / f"share-{share:g}"
        paths = [Route("direct", [(up.model_url, share / 100, "model"), (up.legacy_url, 1 - share / 100, "legacy")], [], False)]
        for name in PEERS:
            if name in ROUTERS:
                child, url = start_router(ROUTERS[name], folder / ROUTERS[name], up, share, args.router_image)
            else:
                child, url = start_proxy(name, folder / name, up, share)
            stack.callback(child.stop)
            main = psutil.Process(child.proc.pid)
            paths.append(Route(name, [(url, 1.0, None)], [main, *main.children(recursive=True)], True))
        print(f"[{share:g}%] nginx, haproxy and two routers started ({time.strftime('%H:%M:%S')}); "
              f"warm-up, then {args.rounds} rounds of {args.seconds / args.rounds:g} s per path", flush=True)
        for p in paths:  # warm-up: connections, caches; not counted
            await asyncio.gather(*(open_loop(url, body, args.rps * s, args.warmup, p.unit_header)
                                   for url, s, _ in p.targets if args.rps * s * args.warmup >= 1))
        round_seconds = args.seconds / args.rounds
        for k in range(args.rounds):
            order = paths[k % len(paths):] + paths[:k % len(paths)]
            rows = {p.name: await p.measure_round(body, args.rps, round_seconds) for p in order}
            d = rows["direct"]
            cells = [f"direct p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f}"]
            cells += [f"{n} {rows[n]['p50_ms'] - d['p50_ms']:+.2f}/{rows[n]['p99_ms'] - d['p99_ms']:+.2f} ms "
                      f"{rows[n]['cpu_s_per_1000']:.3f} CPU-s/1k" + (f" {rows[n]['errors']} errors" if rows[n]["errors"] else "")
                      for n in PEERS]
            busy = statistics.median(r["machine_busy"] for r in rows.values())
            print(f"[{share:g}%] round {k + 1}/{args.rounds} ({time.strftime('%H:%M:%S')}, machine {busy:.0%} busy): {'; '.join(cells)}",
                  flush=True)
    direct = paths[0]
    result = {p.name: p.figures(direct) for p in paths}
    nginx_cpu = result["nginx"]["cpu_s_per_1000"]
    for name in PEERS:
        cpu = result[name]["cpu_s_per_1000"]
        result[name]["cpu_ratio_to_nginx"] = cpu / nginx_cpu if cpu and nginx_cpu else None
    return result


async def bench(args: argparse.Namespace) -> dict:
    versions = {"nginx": version(binary("nginx"), "-v"), "haproxy": version(binary("haproxy"), "-v"),
                "router": router_runtime(args.router_image)}
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    by_share = {}
    with backends(args.models, workdir) as up:
        for share in args.shares:
            by_share[f"{share:g}"] = await measure_share(args, up, share, workdir)
    return {"rps": args.rps, "seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup, "versions": versions,
            "paths": list(PEERS), "shares": by_share}


def table(result: dict) -> str:
    lines = ["| path | model share | added p50 | added p99 | CPU-s per 1,000 requests | CPU ratio to nginx |",
             "| --- | --- | --- | --- | --- | --- |"]
    for share, paths in result["shares"].items():
        for name in PEERS:
            f = paths[name]
            ratio = f"{f['cpu_ratio_to_nginx']:.2f}×" if f["cpu_ratio_to_nginx"] else "-"
            lines.append(f"| {name} | {share}% | {f['added_p50_ms']:+.2f} ms | {f['added_p99_ms']:+.2f} ms | "
                         f"{f['cpu_s_per_1000']:.3f} | {ratio} |")
    return "\n".join(lines)


def shares(value: str) -> list[float]:
    out = [float(x) for x in value.split(",") if x]
    if not out or any(not 0 <= s <= 100 for s in out):
        raise argparse.ArgumentTypeError("shares are percentages 0..100, comma-separated")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("models"), help="exported models (modelramp train --all-versions)")
    parser.add_argument("--shares", type=shares, default=[1.0, 50.0, 100.0], help="model shares in percent, comma-separated (default 1,50,100)")
    parser.add_argument("--rps", type=float, default=500.0, help="open-loop arrival rate (default 500)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured time per path and share, split into rounds (default 40)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per share, the paths taking turns in each (default 8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per path before each share's rounds (default 2)")
    parser.add_argument("--router-image", default=None, metavar="IMAGE",
                        help="run the routers from this router image (scripts/build_images.sh), not from this checkout")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    print(f"\nload: {args.rps:g} req/s open loop, {args.seconds:g} s per path and share in {args.rounds} rounds, paths in turn; "
          f"one row per request, loopback; {result['versions']['nginx']}, {result['versions']['haproxy']}; "
          f"routers on {result['versions']['router']}")
    print("added: minus the direct path (the client splitting by itself) in the same round, median over rounds; "
          "CPU: the proxy's own processes, median over rounds")
    print(table(result))
    failed = False
    for share, paths in result["shares"].items():
        errors = {n: paths[n]["errors"] for n in ("direct", *PEERS) if paths[n]["errors"]}
        failed = failed or bool(errors)
        answered = ", ".join(f"{n} {paths[n]['model_share_answered'] * 100:.1f}%" for n in ("direct", *PEERS))
        print(f"{share}%: model arm answered: {answered}; errors: {errors or 'none'}")
    if args.json:
        save(args.json, result)
    if failed:  # figures over failed requests compare unlike work: a script or CI reading only the status must see it
        print("bench_peers: some requests failed (see the errors above); the figures do not compare like with like", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
