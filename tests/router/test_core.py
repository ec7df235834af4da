"""The router core with in-test backends: split, validation, fallback, circuit breaker, shadow, feature hook."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from router.backends import BadResponse, NonFiniteOutput
from router.buckets import analysis_bucket
from router.core import Router
from router.signing import Signer
from router.skew.features import RecordingFeatureSink
from serving.tfserving import errors
from tests.router.fakes import columns, decoder, fake_factory, make_config


def make_router(model_weight=0.5, **extra) -> Router:
    router = Router(make_config(model_weight, **extra), signer=Signer(b"k"), backend_factory=fake_factory, rng=random.Random(1))
    return router


def sample(router: Router, name: str, **labels) -> float:
    return router.metrics.registry.get_sample_value(name, labels) or 0.0


def run(coro):
    return asyncio.run(coro)


def test_answers_from_the_assigned_arm_and_signs_the_id():
    router = make_router(0.5)

    async def go():
        await router.refresh_metadata()
        out = {}
        for unit in ("a", "b", "c", "d", "e", "f"):
            served = await router.predict("churn", unit, decoder(), "http")
            out[unit] = served
        return out

    served = run(go())
    for unit, s in served.items():
        assert s.arm == router.assign(unit) == s.served_by
        assert s.prediction.outputs["probability"][0] == (0.25 if s.arm == "model" else 1.0)
        assert router.signer.verify(s.request_id).arm == s.arm
        assert s.prediction.model_version == 2  # legacy answers look like the model's
    arms = {s.arm for s in served.values()}
    assert arms == {"legacy", "model"}
    total = sum(sample(router, "modelramp_requests_total", experiment="churn-test", arm=a, protocol="http", code="200") for a in arms)
    assert total == 6


@pytest.mark.parametrize("inputs, message", [
    ({"state": np.array([b"KS"], dtype=object)}, "missing input"),
    ({**columns(), "extra": np.zeros(1, np.float32)}, "unknown input"),
    ({"state": np.array([b"KS"], dtype=object), "total_day_minutes": np.zeros(1, np.float64)}, "expects DT_FLOAT"),
    ({"state": np.zeros(1, np.float32), "total_day_minutes": np.zeros(1, np.float32)}, "expects strings"),
    ({"state": np.array([[b"KS"]], dtype=object), "total_day_minutes": np.zeros((1, 1), np.float32)}, "expects shape"),
    ({"state": np.array([b"KS", b"NY"], dtype=object), "total_day_minutes": np.zeros(1, np.float32)}, "different batch sizes"),
    (columns(300), "larger than the limit"),
])
def test_bad_inputs_are_invalid_argument_and_counted(inputs, message):
    router = make_router(0.5)

    async def go():
        await router.refresh_metadata()
        with pytest.raises(errors.InvalidArgument, match=message):
            await router.predict("churn", "u1", decoder(inputs), "grpc")

    run(go())
    arm = router.assign("u1")
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm=arm, protocol="grpc", code="INVALID_ARGUMENT") == 1
    assert not router.state.backends["legacy"].calls and not router.state.backends["model"].calls


def test_unknown_model_is_not_found():
    router = make_router()
    with pytest.raises(errors.NotFound):
        run(router.predict("other", "u", decoder(), "http"))
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm=router.assign("u"), protocol="http", code="404") == 1


@pytest.mark.parametrize("failure, reason", [
    (errors.Unavailable("down"), "unavailable"), (errors.DeadlineExceeded("slow"), "timeout"), (errors.UserFacingError("boom"), "error"),
    (BadResponse("no such output"), "bad_response"), (NonFiniteOutput("NaN"), "non_finite")])
def test_model_failure_falls_back_to_legacy_and_is_counted(failure, reason):
    router = make_router(1.0)
    router.state.backends["model"].fail = failure
    served = run(router.predict("churn", "u", decoder(), "http"))
    assert (served.arm, served.served_by) == ("model", "legacy")
    assert served.prediction.outputs["probability"][0] == 1.0
    assert sample(router, "modelramp_backend_errors_total", experiment="churn-test", arm="model", reason=reason) == 1
    assert sample(router, "modelramp_fallbacks_total", experiment="churn-test", arm="model") == 1
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm="model", protocol="http", code="200") == 1


def test_policy_error_passes_the_model_failure_on():
    router = make_router(1.0, fallback={"policy": "error"})
    router.state.backends["model"].fail = errors.Unavailable("down")
    with pytest.raises(errors.Unavailable):
        run(router.predict("churn", "u", decoder(), "http"))


def test_legacy_failure_is_the_clients_error():
    router = make_router(0.0)
    router.state.backends["legacy"].fail = errors.Unavailable("legacy down")
    with pytest.raises(errors.Unavailable):
        run(router.predict("churn", "u", decoder(), "http"))
    assert sample(router, "modelramp_backend_errors_total", experiment="churn-test", arm="legacy", reason="unavailable") == 1


def test_circuit_breaker_opens_and_a_new_config_closes_it():
    router = make_router(1.0, fallback={"circuit_breaker": {"min_requests": 5, "max_error_rate": 0.5, "window_seconds": 60}})
    model = router.state.backends["model"]
    model.fail = errors.Unavailable("down")

    async def go(n):
        for i in range(n):
            await router.predict("churn", f"u{i}", decoder(), "http")

    run(go(5))
    assert router.state.breaker.open
    assert sample(router, "modelramp_circuit_open", experiment="churn-test", arm="model") == 1
    calls_when_opened = len(model.calls)
    run(go(10))
    assert len(model.calls) == calls_when_opened, "an open breaker sends nothing to the model"
    assert sample(router, "modelramp_fallbacks_total", experiment="churn-test", arm="model") == 15
    model.fail = None
    router.apply(router.state.config.with_weights({"legacy": 0.5, "model": 0.5}), "test")
    assert not router.state.breaker.open
    assert sample(router, "modelramp_circuit_open", experiment="churn-test", arm="model") == 0


def test_shadow_never_delays_and_counts_agreement():
    router = make_router(0.0, shadow={"enabled": True, "share": 1.0})
    model = router.state.backends["model"]

    async def go():
        model.gate = asyncio.Event()  # the model hangs until released
        served = await asyncio.wait_for(router.predict("churn", "u", decoder(), "http"), 1.0)
        assert served.arm == "legacy" and len(model.calls) == 1
        model.gate.set()
        await asyncio.gather(*router._tasks)

    run(go())
    assert sample(router, "modelramp_shadow_requests_total", experiment="churn-test", result="ok") == 1
    # legacy says 1.0, model says 0.25: they disagree on the decision
    assert sample(router, "modelramp_shadow_agreements_total", experiment="churn-test", agree="false") == 1
    assert sample(router, "modelramp_requests_total", experiment="churn-test", arm="model", protocol="http", code="200") == 0


def test_shadow_drops_beyond_its_bound():
    router = make_router(0.0, shadow={"enabled": True, "share": 1.0}, router={"shadow_max_in_flight": 2})
    model = router.state.backends["model"]

    async def go():
        model.gate = asyncio.Event()
        for i in range(5):
            await router.predict("churn", f"u{i}", decoder(), "http")
        model.gate.set()
        await asyncio.gather(*router._tasks)

    run(go())
    assert sample(router, "modelramp_shadow_requests_total", experiment="churn-test", result="dropped") == 3
    assert sample(router, "modelramp_shadow_requests_total", experiment="churn-test", result="ok") == 2


def test_no_shadow_calls_while_the_models_breaker_is_open():
    router = make_router(0.0, shadow={"enabled": True, "share": 1.0})
    breaker = router.state.breaker
    breaker._trip("test: the model server is failing", reopen=False)
    assert breaker.open

    async def go():
        for i in range(5):
            assert (await router.predict("churn", f"u{i}", decoder(), "http")).arm == "legacy"
        await asyncio.gather(*router._tasks)

    run(go())
    assert router.state.backends["model"].calls == []
    assert sample(router, "modelramp_shadow_requests_total", experiment="churn-test", result="ok") == 0


def test_feature_sink_receives_sampled_requests_and_cannot_fail_them():
    sink = RecordingFeatureSink()

    class Broken:
        def observe(self, *a):
            raise RuntimeError("sink bug")

    router = Router(make_config(0.5, router={"feature_sample_share": 1.0}), signer=Signer(b"k"),
                    backend_factory=fake_factory, sinks=[Broken(), sink])
    run(router.predict("churn", "u", decoder(), "http"))
    assert len(sink.seen) == 1 and sink.seen[0][0] == "churn-test" and set(sink.seen[0][2]) == {"state", "total_day_minutes"}


def test_apply_logs_old_and_new_and_keeps_unchanged_backends(caplog):
    router = make_router(0.01)
    legacy, model = router.state.backends["legacy"], router.state.backends["model"]
    caplog.set_level("INFO", logger="router")
    assert router.apply(router.state.config.with_weights({"legacy": 0.95, "model": 0.05}), "test")
    assert "weights legacy 0.99->0.95, model 0.01->0.05" in caplog.text
    assert router.state.backends == {"legacy": legacy, "model": model}
    assert sample(router, "modelramp_traffic_weight", experiment="churn-test", arm="model") == 0.05
    assert not router.apply(router.state.config, "test"), "the same config is no change"


def test_requests_are_counted_by_analysis_bucket_and_the_id_carries_it():
    """Exposures per (arm, bucket) sum to the arm's requests; the signed id holds the unit's bucket, an outcome lands in it."""
    router = make_router(0.5)
    units = [f"u{n % 7}" for n in range(40)] + [None] * 10  # repeated units and requests without one

    async def go():
        await router.refresh_metadata()
        return [await router.predict("churn", unit, decoder(), "http") for unit in units]

    served = run(go())
    buckets = router.state.config.router.analysis_buckets
    assert buckets == 64
    for unit, s in zip(units, served, strict=True):
        rid = router.signer.verify(s.request_id)
        if unit is not None:
            assert rid.bucket == analysis_bucket(unit, buckets)
        assert 0 <= rid.bucket < buckets
    for arm in ("legacy", "model"):
        requests = sample(router, "modelramp_requests_total", experiment="churn-test", arm=arm, protocol="http", code="200")
        by_bucket = sum(sample(router, "modelramp_bucket_exposures_total", experiment="churn-test", arm=arm, bucket=str(b))
                        for b in range(buckets))
        assert by_bucket == requests > 0
    first = router.signer.verify(served[0].request_id)
    router.metrics.count_outcome(first.experiment, first.arm, first.bucket, True)
    assert sample(router, "modelramp_bucket_outcomes_total", experiment="churn-test", arm=first.arm,
                  bucket=str(first.bucket), outcome="success") == 1
