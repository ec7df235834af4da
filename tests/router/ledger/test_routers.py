"""Every outcome counted exactly once across router replicas and restarts: real router processes on one ledger.

Two routers share a signing key and one PostgreSQL ledger (Debian's binaries, started by the
tests); a client posts the same 10,000 outcomes to both, in random order and from several
threads at once, then again after both restart: `modelramp_outcomes_total` summed over replicas
and lives is 10,000 exactly and the ledger holds 10,000 rows. The same for SQLite with one
router restarted twice. With PostgreSQL stopped mid-load every report gets 503 and none is
counted; after it returns the retried reports are counted once each.

The routers' backends are not running: outcome intake needs none, so the routers are waited for
on /healthz and the outcome ids are minted with the shared key, as the routers would sign them.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.ledger import open_ledger
from router.signing import Signer
from tests.router.ledger.pgserver import RestartablePostgres
from tests.router.stack import ROW, SIGNING_KEY, RouterProcess, experiment, start_router
from tests.support.processes import free_port, wait_until

N = 10_000
BATCH = 25
Item = dict[str, object]


def outcomes(n: int, seed: int) -> tuple[list[Item], Counter[tuple[str, int, bool]]]:
    """n signed outcomes (random arm, bucket and result) and what they should count to, per (arm, bucket, success)."""
    rng, signer = random.Random(seed), Signer(SIGNING_KEY.encode())
    signer.follow(lambda: ("churn-it", "it-salt"))  # a replica of the routers' experiment, with their key and salt
    items, expected = [], Counter[tuple[str, int, bool]]()
    for _ in range(n):
        arm, bucket, success = rng.choice(("legacy", "model")), rng.randrange(64), rng.random() < 0.7
        items.append({"request_id": signer.issue("churn-it", arm, bucket=bucket), "success": success})
        expected[(arm, bucket, success)] += 1
    return items, expected


def doc() -> dict:
    # Backends on ports nobody listens on: predictions would fail, outcomes do not need them.
    return experiment(f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", 0.5)


def start(tmp_path: Path, ledger: str) -> RouterProcess:
    return start_router(tmp_path, doc(), ledger=ledger, ready_path="/healthz")


def post_everywhere(routers: list[RouterProcess], items: list[Item], seed: int, threads: int = 6) -> list[httpx.Response]:
    """Every item to every router, in batches of a shuffled order, from `threads` clients at once."""
    rng = random.Random(seed)
    jobs = []
    for router in routers:
        order = items[:]
        rng.shuffle(order)
        jobs += [(router.url, order[i:i + BATCH]) for i in range(0, len(order), BATCH)]
    rng.shuffle(jobs)
    local = threading.local()
    clients: list[httpx.Client] = []

    def post(job: tuple[str, list[Item]]) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30)
            clients.append(local.client)
        url, batch = job
        return local.client.post(f"{url}/v1/outcomes", json=batch)

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(post, jobs))
    finally:
        for client in clients:
            client.close()


def counted(routers: Iterable[RouterProcess]) -> float:
    return sum(r.metric("modelramp_outcomes_total") for r in routers)


def check_ledger(url: str, expected: Counter[tuple[str, int, bool]]) -> None:
    """The ledger's exact counts, per (arm, bucket, result), are what was posted, once."""
    ledger = open_ledger(url)
    try:
        got: Counter[tuple[str, int, bool]] = Counter()
        for c in ledger.counts("churn-it").cells:
            got[(c.arm, c.bucket, True)] += c.successes
            got[(c.arm, c.bucket, False)] += c.failures
        assert +got == +expected
        assert ledger.rows() == sum(expected.values())
    finally:
        ledger.close()


def stop_all(routers: Iterable[RouterProcess]) -> None:
    for r in routers:
        r.process.stop()


def test_two_routers_one_postgres_ledger_count_each_outcome_once(tmp_path: Path, pg: RestartablePostgres, pg_url: str) -> None:
    items, expected = outcomes(N, seed=1)
    lives: list[float] = []
    for life in range(2):  # the second life: both routers restarted (a rollout)
        routers = [start(tmp_path, pg_url) for _ in range(2)]
        try:
            answers = post_everywhere(routers, items, seed=life)
            assert {a.status_code for a in answers} == {200}, next(a.text for a in answers if a.status_code != 200)
            accepted = sum(a.json()["accepted"] for a in answers)
            duplicates = sum(a.json()["duplicates"] for a in answers)
            lives.append(counted(routers))
            assert accepted == lives[-1] and accepted + duplicates == 2 * N
            assert sum(r.metric("modelramp_outcome_lag_seconds_count") for r in routers) == lives[-1]
        finally:
            stop_all(routers)
    assert lives == [N, 0], "10,000 counted once over two replicas; after the restart every one is a duplicate"
    assert pg.count(pg_url, "SELECT COUNT(*) FROM modelramp_outcome_ids") == N
    check_ledger(pg_url, expected)


def test_one_router_on_sqlite_restarted_twice_counts_each_outcome_once(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'outcomes.db').resolve()}"
    items, expected = outcomes(N, seed=2)
    lives = []
    for life in range(3):
        router = start(tmp_path, url)
        try:
            # Each outcome twice per life (a client retrying), the two copies apart in a shuffled order.
            answers = post_everywhere([router, router], items, seed=10 + life, threads=4)
            assert {a.status_code for a in answers} == {200}
            lives.append(router.metric("modelramp_outcomes_total"))
            assert router.metric("modelramp_outcomes_rejected_total", reason="duplicate") == 2 * N - lives[-1]
        finally:
            router.process.stop()
    assert lives == [N, 0, 0]
    check_ledger(url, expected)


def test_postgres_stopped_mid_load_every_report_503_none_counted_then_retried_once(
        tmp_path: Path, pg: RestartablePostgres, pg_url: str) -> None:
    items, expected = outcomes(N, seed=3)
    batches = [items[i:i + BATCH] for i in range(0, N, BATCH)]
    routers = [start(tmp_path, pg_url) for _ in range(2)]
    try:
        clients = [httpx.Client(base_url=r.url, timeout=30) for r in routers]
        status: dict[int, int] = {}
        retry_after: set[str] = set()
        stopped = threading.Event()
        during: list[int] = []  # statuses of reports sent after the stop had completed

        def load() -> None:
            for n, batch in enumerate(batches):
                was_stopped = stopped.is_set()
                r = clients[n % 2].post("/v1/outcomes", json=batch)
                status[n] = r.status_code
                if r.status_code == 503:
                    retry_after.add(r.headers.get("Retry-After", ""))
                if was_stopped:
                    during.append(r.status_code)
                if n == len(batches) // 3:
                    stop_db()

        def stop_db() -> None:  # mid-load, from the loading thread: the next reports meet a database that is gone
            pg.stop()
            stopped.set()

        before_stop = threading.Thread(target=load)
        before_stop.start()
        before_stop.join()
        assert during and set(during) == {503}, "while the ledger is down, every report gets 503"
        assert "" not in retry_after and all(int(v) >= 1 for v in retry_after)
        ok = [n for n, s in status.items() if s == 200]
        assert set(status.values()) <= {200, 503}
        counted_ok = sum(len(batches[n]) for n in ok)
        assert counted(routers) == counted_ok, "a 503 counted nothing"
        assert sum(r.metric("modelramp_outcome_ledger_available") for r in routers) == 0
        assert all(httpx.get(f"{r.url}/healthz").status_code == 200 for r in routers), "the routers stay up"

        pg.start()
        wait_until(lambda: sum(r.metric("modelramp_outcome_ledger_available") for r in routers) == 2, timeout=60,
                   what="both routers' ledgers available again")
        for n in sorted(set(status) - set(ok)):  # the client retries what got 503, each once, to either router
            r = clients[(n + 1) % 2].post("/v1/outcomes", json=batches[n])
            assert r.status_code == 200 and r.json() == {"accepted": len(batches[n]), "duplicates": 0}, r.text
        assert counted(routers) == N
        for c in clients:
            c.close()
    finally:
        if pg.proc is None:
            pg.start()
        stop_all(routers)
    assert pg.count(pg_url, "SELECT COUNT(*) FROM modelramp_outcome_ids") == N
    check_ledger(pg_url, expected)


@pytest.mark.parametrize("url", ["mysql://nowhere/db", "sqlite:///:memory:"])
def test_a_bad_ledger_url_is_a_one_line_error(tmp_path: Path, url: str) -> None:
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(doc()))
    result = subprocess.run([sys.executable, "-m", "experiments.cli", "router", "--config", str(config), "--host", "127.0.0.1",
                             "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--outcome-ledger", url],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "ledger" in result.stderr.strip().splitlines()[-1]


def test_analyze_reads_outcomes_from_the_ledger_and_says_when_the_routers_counts_differ(tmp_path: Path, legacy_server: Any) -> None:
    """Across a router restart: the routers' counters start again, the ledger keeps every outcome, and `analyze` says so.

    A one-off look after the restart cannot fold the exposures back (a running recorder, the ramp
    controller, does), so it says it analyses the routers' own counts this time. The model arm's
    backend is down, so its units are answered by the legacy fallback: both arms have exposures
    without a model server.
    """
    url = f"sqlite:///{(tmp_path / 'outcomes.db').resolve()}"
    doc = experiment(legacy_server.url, f"127.0.0.1:{free_port()}", 0.5)
    config = tmp_path / "analyze.yaml"
    config.write_text(yaml.safe_dump(doc))

    def predict_and_report(router: RouterProcess, units: range) -> None:
        with httpx.Client(base_url=router.url, timeout=30) as client:
            ids = []
            for unit in units:
                r = client.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": f"u{unit}"})
                assert r.status_code == 200, r.text
                ids.append({"request_id": r.headers["X-Modelramp-Outcome-Id"], "success": unit % 3 != 0})
            assert client.post("/v1/outcomes", json=ids).json()["accepted"] == len(ids)

    def analyze(router: RouterProcess, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "experiments.cli", "analyze", "--config", str(config), "--metrics-url", router.url,
                               "--outcome-ledger", url, "--json", *extra], capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).resolve().parents[3])

    router = start_router(tmp_path, doc, ledger=url, ready_path="/healthz")
    try:
        predict_and_report(router, range(120))
        first = analyze(router)
        assert first.returncode == 0, first.stderr
        assert "outcome counts agree" in first.stderr
        assert "decision" in json.loads(first.stdout)
    finally:
        router.process.stop()
    router = start_router(tmp_path, doc, ledger=url, ready_path="/healthz")  # restarted: its counters start again at zero
    try:
        predict_and_report(router, range(1000, 1030))
        one_off = analyze(router)
    finally:
        router.process.stop()
    assert one_off.returncode == 0, one_off.stderr
    assert "outcome counts differ" in one_off.stderr and "uses the routers' own outcome counts" in one_off.stderr
