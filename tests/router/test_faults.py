"""Fault cases on real processes: the model server dies and comes back mid-load; nothing is lost."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import start_model_server
from tests.router.stack import ROW, experiment, start_router
from tests.support.processes import wait_until

PREDICT = "/v1/models/churn:predict"


@pytest.mark.slow
def test_model_server_killed_and_restarted_mid_load_recovers_and_loses_nothing(models_dir, legacy_server, tmp_path):
    own = start_model_server(models_dir, tmp_path)
    ports = (own.grpc_port, own.rest_port)
    # The breaker is off here: this test is about the fallback and the recovery of the channel; the
    # breaker's own recovery (half-open probes) is tests/router/test_backend_faults.py's.
    router = start_router(tmp_path, experiment(legacy_server.url, own.grpc_target, 0.5,
                                               fallback={"policy": "legacy", "circuit_breaker": {"enabled": False}}))
    request_ids: list[str] = []
    failures: list = []
    stop = threading.Event()

    def user(n: int) -> None:
        with httpx.Client(base_url=router.url, timeout=5) as client:
            i = 0
            while not stop.is_set():
                r = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": f"f{n}-{i}"})
                if r.status_code == 200:
                    request_ids.append(r.headers["X-Modelramp-Outcome-Id"])
                else:
                    failures.append((r.status_code, r.text[:200]))
                i += 1

    threads = [threading.Thread(target=user, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: router.metric("modelramp_requests_total", arm="model") >= 50, timeout=60, what="model-arm traffic")
        own.process.kill()
        wait_until(lambda: router.metric("modelramp_fallbacks_total", arm="model") >= 30, timeout=60, what="fallbacks after the kill")
        own.process.stop()  # already dead: closes its log
        own = start_model_server(models_dir, tmp_path, ports=ports)  # same address, as a restarted pod

        last = {"fallbacks": -1.0, "model": 0.0}

        def recovered() -> bool:
            # Recovered when 50 model-arm requests in a row were answered without a single fallback.
            fallbacks = router.metric("modelramp_fallbacks_total", arm="model")
            model = router.metric("modelramp_requests_total", arm="model")
            if fallbacks != last["fallbacks"]:
                last.update(fallbacks=fallbacks, model=model)
                return False
            return model - last["model"] >= 50

        wait_until(recovered, timeout=90, what="model arm answered by the model again")
    finally:
        stop.set()
        for t in threads:
            t.join()
        own.process.stop()

    assert failures == [], failures[:5]
    # Nothing lost: every answer's outcome is accepted once and counted once.
    accepted = 0
    with httpx.Client(base_url=router.url, timeout=10) as client:
        for start in range(0, len(request_ids), 500):
            body = [{"request_id": rid, "success": True} for rid in request_ids[start:start + 500]]
            r = client.post("/v1/outcomes", json=body)
            assert r.status_code == 200, r.text
            accepted += r.json()["accepted"]
    assert accepted == len(request_ids)
    assert router.metric("modelramp_outcomes_total") == len(request_ids)
    assert router.metric("modelramp_requests_total") == len(request_ids)
    router.process.stop()


def _traffic(router, n: int, prefix: str) -> None:
    """n requests, each with a reported outcome."""
    with httpx.Client(base_url=router.url, timeout=5) as client:
        ids = []
        for i in range(n):
            r = client.post(PREDICT, json={"instances": [ROW]}, headers={"X-Unit-Id": f"{prefix}-{i}"})
            assert r.status_code == 200, r.text
            ids.append(r.headers["X-Modelramp-Outcome-Id"])
        assert client.post("/v1/outcomes", json=[{"request_id": rid, "success": True} for rid in ids]).status_code == 200


@pytest.mark.slow
def test_router_restart_resets_counters_the_controller_holds_and_counts_nothing_twice(model_server, legacy_server, tmp_path):
    from experiments.live.controller import Controller
    from experiments.live.sources import RouterMetricsSource
    from experiments.live.weights import FileWeightStore
    from experiments.store import Store

    doc = experiment(legacy_server.url, model_server.grpc_target, 0.2)
    router = start_router(tmp_path, doc)
    ports = (router.http_port, router.grpc_port)
    source = RouterMetricsSource([router.url])
    store = Store.open(str(tmp_path / "audit.db"))
    controller = Controller(source, FileWeightStore(router.config_path), store)
    try:
        _traffic(router, 300, "before")
        first = controller.step()
        assert first.counts["legacy"]["exposures"] + first.counts["model"]["exposures"] == 300

        router.process.stop()  # a restart: the new process counts from zero
        router = start_router(tmp_path, doc, ports=ports)
        _traffic(router, 200, "after")
        second = controller.step()
        assert second.decision == "hold" and "reset" in second.reason, second.reason
        assert second.counts["legacy"]["exposures"] + second.counts["model"]["exposures"] == 500  # folded, not lost

        _traffic(router, 100, "later")
        third = controller.step()
        assert third.counts["legacy"]["exposures"] + third.counts["model"]["exposures"] == 600  # nothing counted twice
        assert third.counts["legacy"]["successes"] + third.counts["model"]["successes"] == 600
        assert "reset" not in third.reason
    finally:
        source.close()
        store.close()
        router.process.stop()
