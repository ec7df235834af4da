"""Backend faults on real processes: what clients see when the model server or the legacy system fails, and how the router recovers.

Each test starts its own backends (so it can kill, stop and restart them) and a router on
loopback, drives client traffic, and synchronises only on the router's state (its metrics and
`/v1/experiments`), never on sleeps. The README's "When a backend fails" section states these
outcomes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from router.assignment import Assigner
from tests.conftest import start_legacy, start_model_server
from tests.router.stack import ROW, experiment, start_router
from tests.support.processes import wait_until

PREDICT = "/v1/models/churn:predict"


@dataclass
class Answer:
    arm: str  # the assigned arm, worked out from the unit id (errors carry no X-Modelramp-Arm)
    status: int
    seconds: float
    body: dict
    retry_after: str | None = None
    at: float = field(default_factory=time.monotonic)


class Clients:
    """`n` client threads sending predict requests back to back; every answer is kept."""

    def __init__(self, router, doc: dict, n: int = 3, timeout: float = 5.0):
        self.router, self.n, self.timeout = router, n, timeout
        self.assign = Assigner(doc["salt"], {arm: spec["weight"] for arm, spec in doc["arms"].items()})
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.router.url, timeout=self.timeout) as client:
            i = 0
            while not self._stop.is_set():
                unit = f"c{n}-{i}"
                start = time.perf_counter()
                r = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": unit})
                self.answers.append(Answer(self.assign(unit, None), r.status_code, time.perf_counter() - start, r.json(),
                                           r.headers.get("Retry-After")))
                i += 1

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def since(self, moment: float, arm: str | None = None) -> list[Answer]:
        return [a for a in list(self.answers) if a.at >= moment and (arm is None or a.arm == arm)]

    def count(self, moment: float, arm: str) -> int:
        return len(self.since(moment, arm))


def p99(answers: list[Answer]) -> float:
    seconds = sorted(a.seconds for a in answers)
    return seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]


def experiment_state(router) -> dict:
    return httpx.get(f"{router.url}/v1/experiments/churn-it", timeout=5).json()


def breaker_state(router, arm: str = "model") -> str:
    return experiment_state(router)["circuit_breaker" if arm == "model" else "legacy_circuit_breaker"]["state"]


@dataclass
class Hang:
    """When a backend was stopped, its arm's breaker opened, the backend resumed, and the breaker closed (time.monotonic)."""

    hung: float
    opened: float
    resumed: float
    closed: float


def hang_then_resume(router, clients: Clients, pid: int, arm: str, while_open: Callable[[], None] = lambda: None) -> Hang:
    """SIGSTOP the backend (connections accepted, nothing answered) until `arm`'s breaker is open and 100
    of its requests were held off (`while_open` runs once it opened), then SIGCONT it and wait until the
    breaker's probes close it again. The backend is resumed whatever fails."""
    wait_until(lambda: clients.count(0, arm) >= 30, timeout=60, what=f"{arm}-arm traffic")
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = time.monotonic()
        wait_until(lambda: router.metric("modelramp_circuit_open", arm=arm) == 1, timeout=60, what=f"the {arm} arm's breaker open")
        opened = time.monotonic()
        while_open()
        wait_until(lambda: clients.count(opened, arm) >= 100, timeout=60, what=f"{arm}-arm requests with the breaker open")
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(lambda: breaker_state(router, arm) == "closed", timeout=60, what=f"the {arm} breaker closed by its probes")
    return Hang(hung, opened, resumed, time.monotonic())


def router_for(tmp_path, doc: dict, *backends):
    """start_router; if the router does not start, this test's own backends are stopped (they would outlive it)."""
    try:
        return start_router(tmp_path, doc)
    except BaseException:
        for backend in backends:
            backend.process.stop()
        raise


@pytest.mark.slow
def test_breaker_recloses_after_the_model_server_comes_back(models_dir, legacy_server, tmp_path):
    own = start_model_server(models_dir, tmp_path)
    ports = (own.grpc_port, own.rest_port)
    breaker = {"min_requests": 10, "max_error_rate": 0.2, "window_seconds": 30, "open_seconds": 1, "max_open_seconds": 2,
               "half_open_probes": 3}
    doc = experiment(legacy_server.url, own.grpc_target, 0.5, fallback={"policy": "legacy", "circuit_breaker": breaker})
    router = router_for(tmp_path, doc, own)
    try:
        with Clients(router, doc) as clients:
            wait_until(lambda: router.metric("modelramp_requests_total", arm="model") >= 30, timeout=60, what="model-arm traffic")
            own.process.kill()
            wait_until(lambda: router.metric("modelramp_circuit_open", arm="model") == 1, timeout=60, what="the model arm's breaker open")
            assert breaker_state(router) in ("open", "half_open")
            # Still down: a half-open probe fails and the breaker reopens for twice as long (1 s, then 2 s).
            wait_until(lambda: experiment_state(router)["circuit_breaker"]["open_seconds"] == 2, timeout=30,
                       what="a failed half-open probe reopening the breaker")
            assert router.metric("modelramp_circuit_open", arm="model") in (0.5, 1.0)

            own.process.stop()
            own = start_model_server(models_dir, tmp_path, ports=ports)  # same address, as a restarted pod
            wait_until(lambda: breaker_state(router) == "closed", timeout=60, what="the breaker closed by its probes")
            assert router.metric("modelramp_circuit_open", arm="model") == 0
            fallbacks = router.metric("modelramp_fallbacks_total", arm="model")
            model_requests = router.metric("modelramp_requests_total", arm="model")
            # Traffic is back on the model: 50 more model-arm requests, not one of them answered by legacy.
            wait_until(lambda: router.metric("modelramp_requests_total", arm="model") >= model_requests + 50, timeout=60,
                       what="model-arm traffic after the breaker closed")
            assert router.metric("modelramp_fallbacks_total", arm="model") == fallbacks
        assert {a.status for a in clients.answers} == {200}, Counter(a.status for a in clients.answers)
    finally:
        router.process.stop()
        own.process.stop()


def ready(router) -> int:
    return httpx.get(f"{router.url}/readyz", timeout=5).status_code


@pytest.mark.slow
def test_legacy_killed_its_arm_gets_fast_503s_the_model_arm_is_answered_and_the_replica_stays_ready(model_server, tmp_path):
    legacy = start_legacy(tmp_path)
    doc = experiment(legacy.url, model_server.grpc_target, 0.3)
    timeout = 0.5  # the legacy backend's default timeout_ms
    router = router_for(tmp_path, doc, legacy)
    try:
        with Clients(router, doc) as clients:
            wait_until(lambda: clients.count(0, "legacy") >= 30 and clients.count(0, "model") >= 10, timeout=60, what="traffic on both arms")
            legacy.process.kill()
            wait_until(lambda: router.metric("modelramp_circuit_open", arm="legacy") == 1, timeout=60, what="the legacy arm's breaker open")
            opened = time.monotonic()
            assert ready(router) == 200, "the model still answers: this replica can answer"
            wait_until(lambda: clients.count(opened, "legacy") >= 200 and clients.count(opened, "model") >= 50, timeout=60,
                       what="traffic with the legacy system down")
            assert ready(router) == 200
        legacy_arm, model_arm = clients.since(opened, "legacy"), clients.since(opened, "model")
        assert {a.status for a in legacy_arm} == {503}
        assert all("legacy system" in a.body["error"] for a in legacy_arm)
        assert all(a.retry_after is not None and 1 <= int(a.retry_after) <= 5 for a in legacy_arm), \
            "a 503 from an open breaker says when its probes start (legacy: open_seconds 5)"
        assert p99(legacy_arm) < timeout / 5, f"p99 {p99(legacy_arm) * 1000:.1f} ms: not served fast"
        assert {a.status for a in model_arm} == {200}, "the model arm's requests do not need the legacy system"
        print(f"legacy killed: {len(legacy_arm)} legacy-arm answers, p99 {p99(legacy_arm) * 1000:.1f} ms; "
              f"{len(model_arm)} model-arm answers, all 200")
    finally:
        router.process.stop()
        legacy.process.stop()


@pytest.mark.slow
def test_legacy_slower_than_its_timeout_is_held_off_then_probed_back(model_server, tmp_path):
    legacy = start_legacy(tmp_path)
    doc = experiment(legacy.url, model_server.grpc_target, 0.3)
    doc["arms"]["legacy"]["backend"]["timeout_ms"] = 300
    doc["fallback"] = {"legacy_circuit_breaker": {"open_seconds": 1, "max_open_seconds": 2}}
    router = router_for(tmp_path, doc, legacy)
    try:
        with Clients(router, doc) as clients:
            def still_ready() -> None:
                assert ready(router) == 200

            t = hang_then_resume(router, clients, legacy.process.proc.pid, "legacy", while_open=still_ready)
            hung, opened, resumed, closed = t.hung, t.opened, t.resumed, t.closed
            wait_until(lambda: clients.count(closed, "legacy") >= 30, timeout=60, what="legacy-arm traffic after it came back")
        before_open = [a for a in clients.since(hung, "legacy") if a.at < opened]
        timeouts = [a for a in before_open if a.status == 504]
        held_off = [a for a in clients.since(opened, "legacy") if a.at < resumed]
        assert timeouts and min(a.seconds for a in timeouts) >= 0.29, "before the breaker opens, each waits for the timeout"
        assert {a.status for a in held_off} <= {503, 504}
        fast = [a for a in held_off if a.status == 503]
        assert len(fast) >= 0.9 * len(held_off)  # the 504s are the half-open probes, which wait like any call
        assert p99(fast) < 0.06, f"p99 {p99(fast) * 1000:.1f} ms with the breaker open, against a 300 ms timeout"
        assert {a.status for a in clients.since(closed, "legacy")} == {200}
        assert {a.status for a in clients.since(hung, "model")} == {200}
        print(f"legacy hung: {len(timeouts)} timeouts of {min(a.seconds for a in timeouts) * 1000:.0f}+ ms before the breaker opened, "
              f"then {len(fast)} 503s with p99 {p99(fast) * 1000:.1f} ms; closed {closed - resumed:.1f} s after it resumed")
    finally:
        router.process.stop()
        legacy.process.stop()


@pytest.mark.slow
def test_reverse_fallback_answers_part_of_the_legacy_arm_from_the_model_counted_as_fallbacks(model_server, tmp_path):
    legacy = start_legacy(tmp_path)
    doc = experiment(legacy.url, model_server.grpc_target, 0.3, fallback={"to_model": {"enabled": True, "share": 0.5}})
    router = router_for(tmp_path, doc, legacy)
    try:
        with Clients(router, doc) as clients:
            wait_until(lambda: clients.count(0, "legacy") >= 30 and clients.count(0, "model") >= 10, timeout=60, what="traffic on both arms")
            model_answer = next(a.body for a in clients.since(0, "model") if a.status == 200)
            legacy_answer = next(a.body for a in clients.since(0, "legacy") if a.status == 200)
            assert model_answer != legacy_answer  # so an answer tells who gave it
            legacy.process.kill()
            killed = time.monotonic()
            wait_until(lambda: clients.count(killed, "legacy") >= 300, timeout=60, what="legacy-arm traffic with the legacy system down")
            assert ready(router) == 200
        legacy_arm = clients.since(killed, "legacy")
        rerouted = [a for a in legacy_arm if a.status == 200]
        assert all(a.body == model_answer for a in rerouted), "answered by the model"
        assert {a.status for a in legacy_arm} == {200, 503}
        assert 0.35 <= len(rerouted) / len(legacy_arm) <= 0.65, f"{len(rerouted)} of {len(legacy_arm)}: share 0.5"
        # Counted as the legacy arm's fallbacks and requests, never as model-arm requests. A fallback is counted
        # before the model's call: one that fails at the model (a model backend error, e.g. its deadline on a busy
        # machine) is counted and answered 503 with the legacy error, so the count is exact only without such errors.
        # Counted over the whole run: an answer rerouted at once can come back before `killed` was taken (a busy
        # machine), and no legacy-arm answer before the kill is the model's.
        every_rerouted = sum(1 for a in clients.since(0, "legacy") if a.status == 200 and a.body == model_answer)
        fallbacks = router.metric("modelramp_fallbacks_total", arm="legacy")
        model_errors = router.metric("modelramp_backend_errors_total", arm="model")
        assert every_rerouted <= fallbacks <= every_rerouted + model_errors, (fallbacks, every_rerouted, model_errors)
        assert router.metric("modelramp_requests_total", arm="model") == len(clients.since(0, "model"))
        assert router.metric("modelramp_requests_total", arm="legacy") == len(clients.since(0, "legacy"))
        assert {a.status for a in clients.since(killed, "model")} == {200}
        print(f"reverse fallback: {len(rerouted)} of {len(legacy_arm)} legacy-arm requests answered by the model, "
              f"p99 {p99(rerouted) * 1000:.1f} ms; the others 503 in p99 {p99([a for a in legacy_arm if a.status == 503]) * 1000:.1f} ms")
    finally:
        router.process.stop()
        legacy.process.stop()


@pytest.mark.slow
def test_model_slower_than_its_timeout_is_answered_by_legacy_then_held_off_then_probed_back(models_dir, legacy_server, tmp_path):
    own = start_model_server(models_dir, tmp_path)
    breaker = {"min_requests": 10, "open_seconds": 1, "max_open_seconds": 2}
    doc = experiment(legacy_server.url, own.grpc_target, 0.5, fallback={"circuit_breaker": breaker})
    router = router_for(tmp_path, doc, own)
    try:
        with Clients(router, doc) as clients:
            t = hang_then_resume(router, clients, own.process.proc.pid, "model")
            hung, opened, resumed, closed = t.hung, t.opened, t.resumed, t.closed
            fallbacks = router.metric("modelramp_fallbacks_total", arm="model")
            wait_until(lambda: clients.count(closed, "model") >= 30, timeout=60, what="model-arm traffic after it came back")
            assert router.metric("modelramp_fallbacks_total", arm="model") == fallbacks, "answered by the model again"
        assert {a.status for a in clients.answers} == {200}, "clients never see the model's failure"
        waited = [a for a in clients.since(hung, "model") if a.at < opened]
        held_off = [a for a in clients.since(opened, "model") if a.at < resumed]
        assert waited and max(a.seconds for a in waited) >= 0.19, "before the breaker opens, each waits for the model's 200 ms timeout"
        # The upper bound is the router's own clock (its duration histogram, every model-arm request of
        # the test): a client thread's stopwatch also counts its wait for this process's GIL, over a second
        # on a busy machine while the router's answers all stood under 500 ms.
        answered = router.metric("modelramp_request_duration_seconds_count", arm="model")
        within = router.metric("modelramp_request_duration_seconds_bucket", arm="model", le="0.5")
        assert answered >= len(clients.since(0, "model")), "the router counted every answer the clients got"
        assert within == answered, f"{answered - within:.0f} model-arm requests took over 500 ms in the router: legacy answers within the deadline"
        fast = sorted(a.seconds for a in held_off)[: int(len(held_off) * 0.9)]  # the probes wait the model's timeout
        assert fast[-1] < 0.06, f"{fast[-1] * 1000:.1f} ms at the 90th percentile with the breaker open"
        print(f"model hung: {len(waited)} model-arm answers from legacy after up to {max(a.seconds for a in waited) * 1000:.0f} ms "
              f"before the breaker opened, then {len(held_off)} with p90 {fast[-1] * 1000:.1f} ms; closed {closed - resumed:.1f} s after it resumed")
    finally:
        router.process.stop()
        own.process.stop()


def test_the_readme_states_what_clients_see_for_each_backend_fault():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## When a backend fails")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line}
    assert {"model server down", "model slower than its `timeout_ms` (200 ms)", "legacy system down",
            "legacy system slower than its `timeout_ms` (500 ms)", "both"} <= rows
    assert "tests/router/test_backend_faults.py" in section
    # The defaults the section quotes are the configuration's.
    from router.config import CircuitBreakerSpec, LegacyCircuitBreakerSpec, LegacyHttpSpec, ReverseFallbackSpec, TfServingGrpcSpec

    model, legacy = CircuitBreakerSpec(), LegacyCircuitBreakerSpec()
    assert (model.max_error_rate, model.min_requests, model.window_seconds, model.open_seconds, model.max_open_seconds,
            model.half_open_probes) == (0.2, 20, 30, 30, 300, 3)
    assert (legacy.max_error_rate, legacy.min_requests, legacy.window_seconds, legacy.open_seconds, legacy.max_open_seconds) == (0.5, 20, 10, 5, 60)
    assert TfServingGrpcSpec.model_fields["timeout_ms"].default == 200 and LegacyHttpSpec.model_fields["timeout_ms"].default == 500
    assert (ReverseFallbackSpec().enabled, ReverseFallbackSpec().share, ReverseFallbackSpec().max_in_flight) == (False, 1, 16)
