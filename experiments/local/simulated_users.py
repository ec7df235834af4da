"""Simulated production clients for the demo: steady traffic through the router, outcomes later.

Each request scores one customer drawn at random from the live split (data no model was trained
or tuned on) for one of many client units (stable ids sent as `X-Unit-Id`), exactly as a TF
Serving REST client would. After a delay, like a real client learning whether the customer
churned, it reports the outcome (`success` = the prediction was right) through `/v1/outcomes`
with the signed request id, in batches. Requests are paced to a fixed rate; if the router cannot
keep up, requests are skipped and counted rather than queued without bound.

Units are customers: each of the `units` ids (100,000 by default) is one customer, one row of
the live split drawn once, and every request picks a customer and scores its row. A customer
scored again gets the same prediction and so the same outcome, as a real customer churns or not
once: requests of one unit are correlated, which is what the analyzer's analysis buckets
(router/buckets.py) account for. That many units keep the realised share of units per arm within
a few percent of the configured weight, so the sample ratio check measures the router, not the
luck of a small unit draw; repeated ids exercise stickiness.

The clients speak through the router's own keep-alive HTTP/1.1 client (router/backends/http1.py),
which costs a fifth of aiohttp's CPU per request: at the demo's 300 requests per second the load
generator shares two cores with the system under test.

They run in a process of their own, as a real client fleet would, sending the parent a snapshot of
what they saw four times a second. In a thread of the demo's process they shared its interpreter
lock with the ramp controller, the display and the report: beside two busy processes a demo once
counted 4 client timeouts (5 s without an answer) and 3,068 skipped requests while the router's own
histogram held every one of its 110,482 answers under 250 ms. The clients' event-loop lag (how late
a 50 ms timer fires) is measured and reported beside their errors, so a slow machine shows as such.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import random
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import pandas as pd

from router.backends.http1 import Http1Pool
from serving.training import dataset

OUTCOME_BATCH = 200
CLIENT_TIMEOUT = 5.0  # seconds per request, as a patient production client would wait
SNAPSHOT_SECONDS = 0.25  # how often the clients' process tells the parent what it saw
LAG_PROBE_SECONDS = 0.05
RECENT_LATENCIES = 5000  # latencies sent with each snapshot (the display's p99 is over these)


@dataclass
class ArmTally:
    requests: int = 0
    correct: int = 0
    reported: int = 0


@dataclass
class UserStats:
    """What the clients saw; read by the display while the traffic runs."""

    requests: int = 0
    client_errors: int = 0
    skipped: int = 0
    outcome_errors: int = 0
    last_error: str = ""
    arms: dict[str, ArmTally] = field(default_factory=lambda: {"legacy": ArmTally(), "model": ArmTally()})
    latencies_ms: list[float] = field(default_factory=list)
    #: The longest delay of the clients' own event loop (a 50 ms timer firing late): the machine's latency.
    max_loop_lag_ms: float = 0.0

    def p99_ms(self) -> float | None:
        recent = sorted(self.latencies_ms[-5000:])
        return recent[int(0.99 * (len(recent) - 1))] if recent else None


class SimulatedUsers:
    """Sends `rate` requests per second to the router's REST predict endpoint, from a child process, until stopped."""

    def __init__(self, router_url: str, model_name: str, live: pd.DataFrame, rate: float, *, units: int = 100_000,
                 outcome_delay: tuple[float, float] = (0.2, 1.0), max_in_flight: int = 64, seed: int = 0):
        rng = random.Random(seed)
        # Bodies are serialised once: the load generator shares two cores with the system under test.
        bodies = [json.dumps({"instances": [row]}).encode() for row in dataset.to_instances(live)]
        self._load = _Load(router_url=router_url, predict_path=f"/v1/models/{model_name}:predict", rate=rate,
                           units=units, outcome_delay=outcome_delay, max_in_flight=max_in_flight, bodies=bodies,
                           labels=live[dataset.LABEL].astype(bool).tolist(),
                           customer_rows=[rng.randrange(len(bodies)) for _ in range(units)],  # unit i is row customer_rows[i]
                           rng=rng)
        self.stats = UserStats()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._receiver: threading.Thread | None = None
        self._stop: Event | None = None

    def start(self) -> None:
        # spawn, not fork: the parent has threads (and may hold TensorFlow), which a forked child must not inherit.
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_clients_main, args=(self._load, self._stop, send),
                                        name="simulated-users", daemon=True)
        self._process.start()
        send.close()  # the child's end: the parent's recv() ends with EOF when the child exits
        self._receiver = threading.Thread(target=self._receive, args=(receive,), name="simulated-users-stats", daemon=True)
        self._receiver.start()

    def _receive(self, conn: Connection) -> None:
        with conn:
            while True:
                try:
                    snapshot = conn.recv()
                except (EOFError, OSError):
                    return
                for name, value in vars(snapshot).items():  # in place: the display holds this UserStats
                    setattr(self.stats, name, value)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sending, report every outcome still due, and wait for the last snapshot."""
        if self._stop is None or self._process is None:
            return
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5.0)
        if self._receiver is not None:
            self._receiver.join(timeout)


@dataclass
class _Load:
    """What the clients' process needs, picklable."""

    router_url: str
    predict_path: str
    rate: float
    units: int
    outcome_delay: tuple[float, float]
    max_in_flight: int
    bodies: list[bytes]
    labels: list[bool]
    customer_rows: list[int]
    rng: random.Random


def _clients_main(load: _Load, stop: Event, conn: Connection) -> None:
    """The clients' process: run them until `stop`, sending snapshots of their stats on `conn`."""
    with conn:
        asyncio.run(_Clients(load, stop, conn).run())


class _Clients:
    def __init__(self, load: _Load, stop: Event, conn: Connection) -> None:
        self.load, self._stop, self._conn = load, stop, conn
        self.rate, self.units, self.rng = load.rate, load.units, load.rng
        self.bodies, self.labels, self.customer_rows = load.bodies, load.labels, load.customer_rows
        self.predict_path, self.outcome_delay = load.predict_path, load.outcome_delay
        self.stats = UserStats()

    def _send(self) -> None:
        snapshot = UserStats(**{**vars(self.stats), "latencies_ms": self.stats.latencies_ms[-RECENT_LATENCIES:],
                                "arms": {arm: ArmTally(**vars(t)) for arm, t in self.stats.arms.items()}})
        self._conn.send(snapshot)

    async def _publish(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            self._send()

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_SECONDS)
            lag_ms = (loop.time() - before - LAG_PROBE_SECONDS) * 1000
            if lag_ms > self.stats.max_loop_lag_ms:
                self.stats.max_loop_lag_ms = lag_ms

    async def run(self) -> None:
        background = [asyncio.create_task(self._publish()), asyncio.create_task(self._watch_lag())]
        try:
            await self._run()
        finally:
            for task in background:
                task.cancel()
            self._send()  # the last word: everything counted, outcomes reported

    async def _run(self) -> None:
        pending: list[tuple[float, str, bool, str]] = []  # (due time, request id, success, arm)
        slots = asyncio.Semaphore(self.load.max_in_flight)
        http = Http1Pool(self.load.router_url, self.load.max_in_flight + 4, keep_headers=True)
        try:
            reporter = asyncio.create_task(self._report_outcomes(http, pending))
            tasks: set[asyncio.Task] = set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                next_at += 1.0 / self.rate
                delay = next_at - time.monotonic()
                if delay < -1.0:  # more than a second behind: drop the backlog instead of bursting
                    self.stats.skipped += int(-delay * self.rate)
                    next_at = time.monotonic()
                await asyncio.sleep(max(delay, 0.0))
                if slots.locked():
                    self.stats.skipped += 1
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._one(http, pending, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks, return_exceptions=True)
            for i in range(len(pending)):  # report everything still due: nothing is lost at the end
                pending[i] = (0.0, *pending[i][1:])
            await self._flush(http, pending)
            reporter.cancel()
        finally:
            http.close()

    async def _one(self, http: Http1Pool, pending: list, slots: asyncio.Semaphore) -> None:
        customer = self.rng.randrange(self.units)
        row, unit = self.customer_rows[customer], f"unit-{customer}"
        started = time.perf_counter()
        answer: dict[str, str] = {}
        try:
            status, body = await http.request("POST", self.predict_path, self.bodies[row], CLIENT_TIMEOUT,
                                              b"X-Unit-Id: %s\r\n" % unit.encode(), answer_headers=answer)
            if status != 200:
                self.stats.client_errors += 1
                self.stats.last_error = f"HTTP {status}: {body[:200]!r}"
                return
            arm, request_id = answer["x-modelramp-arm"], answer["x-modelramp-outcome-id"]
            probability = json.loads(body)["predictions"][0]
        except (OSError, asyncio.TimeoutError, KeyError, ValueError) as err:  # ConnectionError is an OSError
            self.stats.client_errors += 1
            self.stats.last_error = f"{type(err).__name__}: {err}"
            return
        finally:
            slots.release()
        self.stats.latencies_ms.append((time.perf_counter() - started) * 1000)
        if len(self.stats.latencies_ms) > 20_000:
            del self.stats.latencies_ms[:10_000]
        correct = (probability >= 0.5) == self.labels[row]
        self.stats.requests += 1
        tally = self.stats.arms.setdefault(arm, ArmTally())
        tally.requests += 1
        tally.correct += correct
        pending.append((time.monotonic() + self.rng.uniform(*self.outcome_delay), request_id, correct, arm))

    async def _report_outcomes(self, http: Http1Pool, pending: list) -> None:
        while True:
            await asyncio.sleep(0.25)  # batch interval: outcomes go in groups, as a real client batches them
            await self._flush(http, pending)

    async def _flush(self, http: Http1Pool, pending: list) -> None:
        now = time.monotonic()
        due = [p for p in pending if p[0] <= now]
        if not due:
            return
        pending[:] = [p for p in pending if p[0] > now]
        for start in range(0, len(due), OUTCOME_BATCH):
            chunk = due[start:start + OUTCOME_BATCH]
            body = [{"request_id": rid, "success": bool(ok)} for _, rid, ok, _ in chunk]
            try:
                status, answer = await http.request("POST", "/v1/outcomes", json.dumps(body).encode(), CLIENT_TIMEOUT)
                if status != 200:
                    self.stats.outcome_errors += len(chunk)
                    self.stats.last_error = f"outcomes HTTP {status}: {answer[:200]!r}"
                    continue
            except (OSError, asyncio.TimeoutError) as err:
                self.stats.outcome_errors += len(chunk)
                self.stats.last_error = f"outcomes: {type(err).__name__}: {err}"
                continue
            for _, _, _, arm in chunk:
                self.stats.arms.setdefault(arm, ArmTally()).reported += 1
