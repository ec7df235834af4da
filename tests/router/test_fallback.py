"""The router core when the legacy system fails, with in-test backends: its breaker, the reverse fallback and its cap, readiness."""

from __future__ import annotations

import asyncio
import random

import pytest

from router.breaker import CircuitOpen
from router.core import Router
from router.signing import Signer
from serving.tfserving import errors
from tests.router.fakes import decoder, fake_factory, make_config

LEGACY_BREAKER = {"min_requests": 5, "max_error_rate": 0.5, "window_seconds": 60, "open_seconds": 30}


def make_router(model_weight: float = 0.0, **fallback) -> Router:
    config = make_config(model_weight, fallback={"legacy_circuit_breaker": LEGACY_BREAKER, **fallback})
    return Router(config, signer=Signer(b"k"), backend_factory=fake_factory, rng=random.Random(1))


def sample(router: Router, name: str, **labels) -> float:
    return router.metrics.registry.get_sample_value(name, labels) or 0.0


async def predict_all(router: Router, n: int, prefix: str = "u") -> list[object]:
    """n requests one after the other: each Served, or the error it raised."""
    await router.refresh_metadata()
    out: list[object] = []
    for i in range(n):
        try:
            out.append(await router.predict("churn", f"{prefix}{i}", decoder(), "http"))
        except errors.UserFacingError as err:
            out.append(err)
    return out


def test_a_failing_legacy_system_is_held_off_and_its_errors_are_served_without_calling_it():
    router = make_router()
    legacy = router.state.backends["legacy"]
    legacy.fail = errors.DeadlineExceeded("legacy system did not answer in time")
    first = asyncio.run(predict_all(router, 5))
    assert all(isinstance(e, errors.DeadlineExceeded) for e in first)
    assert router.state.legacy_breaker.open
    assert sample(router, "modelramp_circuit_open", experiment="churn-test", arm="legacy") == 1
    calls = len(legacy.calls)
    later = asyncio.run(predict_all(router, 10, "v"))
    assert all(isinstance(e, CircuitOpen) and e.http_status == 503 for e in later)
    assert len(legacy.calls) == calls, "an open breaker makes no call to the legacy system"
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm="legacy", protocol="http", code="503") == 10


def test_the_legacy_breaker_probes_and_recloses_when_the_system_is_back():
    clock = [0.0]
    router = make_router()
    router.state.legacy_breaker._clock = lambda: clock[0]  # the breaker's clock, injected after the router built it
    legacy = router.state.backends["legacy"]
    legacy.fail = errors.Unavailable("legacy system unreachable")
    asyncio.run(predict_all(router, 5))
    assert router.state.legacy_breaker.state == "open"
    legacy.fail = None
    clock[0] += 30
    assert sample(router, "modelramp_circuit_open", experiment="churn-test", arm="legacy") == 0.5
    served = asyncio.run(predict_all(router, 5, "back"))
    assert all(s.served_by == "legacy" for s in served)
    assert router.state.legacy_breaker.state == "closed"


def test_a_model_arm_request_with_both_breakers_open_fails_fast():
    router = make_router(1.0, circuit_breaker={"min_requests": 5, "max_error_rate": 0.5, "window_seconds": 60})
    router.state.backends["model"].fail = errors.Unavailable("down")
    router.state.backends["legacy"].fail = errors.Unavailable("down")
    asyncio.run(predict_all(router, 5))
    assert router.state.breaker.open and router.state.legacy_breaker.open
    calls = (len(router.state.backends["model"].calls), len(router.state.backends["legacy"].calls))
    assert all(isinstance(e, CircuitOpen) for e in asyncio.run(predict_all(router, 5, "w")))
    assert (len(router.state.backends["model"].calls), len(router.state.backends["legacy"].calls)) == calls


def test_the_reverse_fallback_is_off_by_default():
    router = Router(make_config(0.0), signer=Signer(b"k"), backend_factory=fake_factory, rng=random.Random(1))
    router.state.backends["legacy"].fail = errors.Unavailable("down")
    assert all(isinstance(e, errors.Unavailable) for e in asyncio.run(predict_all(router, 3)))
    assert router.state.backends["model"].calls == []


def test_reverse_fallback_answers_from_the_model_and_counts_a_legacy_arm_fallback():
    router = make_router(to_model={"enabled": True})
    router.state.backends["legacy"].fail = errors.Unavailable("down")
    served = asyncio.run(predict_all(router, 8))
    assert [(s.arm, s.served_by) for s in served] == [("legacy", "model")] * 8
    assert all(s.prediction.outputs["probability"][0] == 0.25 for s in served)  # the model's answer
    assert all(router.signer.verify(s.request_id).arm == "legacy" for s in served), "the outcome stays the assigned arm's"
    assert sample(router, "modelramp_fallbacks_total", experiment="churn-test", arm="legacy") == 8
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm="legacy", protocol="http", code="200") == 8
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm="model", protocol="http", code="200") == 0
    assert router.state.counts["legacy"] == {"requests": 8, "fallbacks": 8}
    assert router.state.counts["model"] == {"requests": 0, "fallbacks": 0}
    assert router.state.legacy_breaker.open  # after 5 failures: the rest went to the model without waiting on legacy
    assert len(router.state.backends["legacy"].calls) == 5


def test_reverse_fallback_stays_within_its_in_flight_cap():
    router = make_router(to_model={"enabled": True, "max_in_flight": 2})
    router.state.backends["legacy"].fail = errors.Unavailable("down")
    model = router.state.backends["model"]

    async def go():
        await router.refresh_metadata()
        model.gate = asyncio.Event()  # the model holds its answers: rerouted calls pile up
        tasks = [asyncio.create_task(router.predict("churn", f"u{i}", decoder(), "http")) for i in range(6)]
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(model.calls) == 2, "at most max_in_flight rerouted calls at once"
        model.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(go())
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 2
    assert sum(1 for r in results if isinstance(r, errors.Unavailable)) == 4
    assert sample(router, "modelramp_fallbacks_total", experiment="churn-test", arm="legacy") == 2


def test_reverse_fallback_share_tries_only_part_of_the_failing_requests():
    router = make_router(to_model={"enabled": True, "share": 0.25})
    router.state.backends["legacy"].fail = errors.Unavailable("down")
    results = asyncio.run(predict_all(router, 400))
    rerouted = sum(1 for r in results if not isinstance(r, BaseException))
    assert 60 <= rerouted <= 140, rerouted


def test_a_failing_model_leaves_the_legacy_error_and_the_model_is_not_asked_while_its_breaker_is_open():
    router = make_router(to_model={"enabled": True}, circuit_breaker={"min_requests": 3, "max_error_rate": 0.5, "window_seconds": 60})
    router.state.backends["legacy"].fail = errors.Unavailable("legacy down")
    router.state.backends["model"].fail = errors.Unavailable("model down")
    results = asyncio.run(predict_all(router, 10))
    assert all(isinstance(r, errors.Unavailable) for r in results)
    assert len(router.state.backends["model"].calls) == 3  # then its breaker opened
    assert sample(router, "modelramp_backend_errors_total", experiment="churn-test", arm="model", reason="unavailable") == 3


def test_a_model_that_rejects_the_input_is_still_the_models_failure_but_a_legacy_rejection_is_the_clients():
    router = make_router(to_model={"enabled": True})
    router.state.backends["legacy"].fail = errors.InvalidArgument("bad row")
    results = asyncio.run(predict_all(router, 6))
    assert all(isinstance(r, errors.InvalidArgument) for r in results)
    assert not router.state.legacy_breaker.open and router.state.backends["model"].calls == []


@pytest.mark.parametrize("legacy_up, model_up, ready", [(True, True, True), (False, True, True), (True, False, True), (False, False, False)])
def test_ready_while_either_arm_can_answer(legacy_up, model_up, ready):
    router = make_router(0.5)
    asyncio.run(router.refresh_metadata())  # the signature is known (kept when the model goes down)
    if not legacy_up:
        router.state.backends["legacy"].fail = errors.Unavailable("down")
    if not model_up:
        router.state.backends["model"].fail = errors.Unavailable("down")
    status = asyncio.run(router.readiness())
    assert status["ready"] is ready
    assert status["backends"] == {"legacy": legacy_up, "model": model_up}


def test_not_ready_until_the_signature_is_known():
    router = make_router(0.5)
    router.state.backends["model"].fail = errors.Unavailable("down")
    assert asyncio.run(router.readiness())["ready"] is False
