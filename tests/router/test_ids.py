"""Request ids bound to their experiment, salt and clock: ids of another experiment, dated far ahead or
issued before a salt change are refused with their own error and never counted; a replica sharing the
key and the experiment still has its ids accepted, and a repeat is still a duplicate."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from router.ledger import MemoryLedger
from router.metrics import RouterMetrics
from router.outcomes import OutcomeIntake
from router.rest.predict import OUTCOME_ID_HEADER
from router.signing import (
    MAX_CLOCK_SKEW_SECONDS,
    ExpiredRequestId,
    ForgedRequestId,
    FutureRequestId,
    Signer,
    StaleSaltRequestId,
    WrongExperimentRequestId,
)
from tests.router.stack import ROW, SIGNING_KEY, TOKEN, experiment, start_router
from tests.support.processes import free_port, wait_until

KEY = b"k" * 32


def following(name: str, salt: str, key: bytes = KEY) -> Signer:
    signer = Signer(key)
    signer.follow(lambda: (name, salt))
    return signer


def test_a_replica_with_the_same_key_and_experiment_is_accepted():
    got = following("exp", "s").verify(following("exp", "s").issue("exp", "model", bucket=3))
    assert (got.experiment, got.arm, got.bucket) == ("exp", "model", 3)
    assert following("exp", "s").verify(following("exp", "s").issue("exp:qa", "legacy")).experiment == "exp:qa"


@pytest.mark.parametrize(("rid", "error", "words"), [
    (lambda: following("other", "s").issue("other", "model"), WrongExperimentRequestId, "experiment 'other'"),
    (lambda: following("exp", "s").issue("other:qa", "model"), WrongExperimentRequestId, "this router runs 'exp'"),
    (lambda: following("exp", "old").issue("exp", "model"), StaleSaltRequestId, "salt"),
    (lambda: following("exp", "s").issue("exp", "model", now=time.time() + 3 * 365 * 86_400), FutureRequestId, "future"),
    (lambda: following("exp", "s").issue("exp", "model", now=1.0), ExpiredRequestId, "expired"),
    (lambda: following("exp", "s", key=b"another key").issue("exp", "model"), ForgedRequestId, "signature"),
])
def test_each_refusal_has_its_own_error(rid, error, words):
    with pytest.raises(error, match=words):
        following("exp", "s").verify(rid())


def test_a_small_clock_skew_is_allowed():
    signer = following("exp", "s")
    signer.verify(signer.issue("exp", "model", now=time.time() + MAX_CLOCK_SKEW_SECONDS / 2))


def test_the_salt_tag_is_keyed_and_changes_with_the_salt():
    assert following("e", "a").salt_tag("a") != following("e", "a").salt_tag("b")
    assert Signer(b"one").salt_tag("a") != Signer(b"two").salt_tag("a")  # nothing about the salt without the key
    assert following("e", "a").issue("e", "model").split(".")[4] == following("e", "a").salt_tag("a")


@pytest.mark.parametrize(("bad", "reason"), [
    (lambda: following("other", "s").issue("other", "model"), "wrong_experiment"),
    (lambda: following("exp", "old").issue("exp", "model"), "stale_salt"),
    (lambda: following("exp", "s").issue("exp", "model", now=time.time() + 10 * 365 * 86_400), "future"),
])
def test_the_intake_rejects_the_whole_batch_and_counts_the_reason(bad, reason):
    """Both verification paths refuse (the fast one hands over), nothing reaches the ledger, the reason is counted once."""
    signer, metrics, ledger = following("exp", "s"), RouterMetrics(), MemoryLedger()
    intake = OutcomeIntake(signer, metrics, ledger)
    good = [{"request_id": signer.issue("exp", "legacy"), "success": True} for _ in range(3)]
    body = [*good, {"request_id": bad(), "success": True}]
    assert intake._verify_fast(good) is not None and intake._verify_fast(body) is None
    with pytest.raises(Exception, match="outcome 3: ") as err:
        asyncio.run(intake.report(body))
    assert err.value.http_status == 403
    assert metrics.registry.get_sample_value("modelramp_outcomes_rejected_total", {"reason": reason}) == 1
    assert not metrics.registry.get_sample_value("modelramp_outcomes_total", {"experiment": "exp", "arm": "legacy", "outcome": "success"})
    # The good ones alone are taken once, and again are duplicates: exactly-once is untouched.
    assert asyncio.run(intake.report(good)).accepted == 3
    assert asyncio.run(intake.report(good)).duplicates == 3


# ---- on a real router ----------------------------------------------------------------------------


@pytest.fixture
def router(tmp_path, legacy_server):
    """A router whose traffic all goes to the legacy system (the model arm's address answers nothing)."""
    r = start_router(tmp_path, experiment(legacy_server.url, f"127.0.0.1:{free_port()}", 0.0), ready_path="/healthz")
    yield r
    r.process.stop()


def predict_id(router) -> str:
    r = httpx.post(f"{router.url}/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Unit-Id": "u1"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.headers[OUTCOME_ID_HEADER]


def outcome(router, rid: str) -> httpx.Response:
    return httpx.post(f"{router.url}/v1/outcomes", json=[{"request_id": rid, "success": True}], timeout=10)


def test_foreign_future_and_old_salt_ids_are_refused_and_not_counted(router):
    """What a real router issued before its salt changed, and ids another replica with the same key
    signed for another experiment or years ahead: 403 each, with its reason, and never counted."""
    before = predict_id(router)
    replica = Signer(SIGNING_KEY.encode())  # another replica: same key
    replica.follow(lambda: ("churn-it", "it-salt"))
    ok = replica.issue("churn-it", "legacy")
    foreign = Signer(SIGNING_KEY.encode())
    foreign.follow(lambda: ("another-exp", "it-salt"))
    future = replica.issue("churn-it", "legacy", now=time.time() + 2 * 365 * 86_400)

    assert outcome(router, ok).json() == {"accepted": 1, "duplicates": 0}  # a replica's id of this experiment counts
    for rid, reason, words in ((foreign.issue("another-exp", "legacy"), "wrong_experiment", "another-exp"),
                               (future, "future", "future")):
        r = outcome(router, rid)
        assert r.status_code == 403 and "outcome 0: " in r.json()["error"] and words in r.json()["error"], r.text
        assert router.metric("modelramp_outcomes_rejected_total", reason=reason) == 1

    config = experiment_for(router)
    router.write_config({**config, "salt": "new-salt"})
    wait_until(lambda: router.metric("modelramp_config_reloads_total", result="applied") >= 1, timeout=30, what="salt change applied")
    r = outcome(router, before)
    assert r.status_code == 403 and "salt" in r.json()["error"], r.text
    assert router.metric("modelramp_outcomes_rejected_total", reason="stale_salt") == 1
    after = predict_id(router)
    assert outcome(router, after).json() == {"accepted": 1, "duplicates": 0}
    assert outcome(router, after).json() == {"accepted": 0, "duplicates": 1}
    assert router.metric("modelramp_outcomes_total", experiment="churn-it") == 2  # ok and after; nothing refused
    assert router.metric("modelramp_outcomes_total", experiment="another-exp") == 0
    assert httpx.get(f"{router.url}/v1/experiments/churn-it", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def experiment_for(router) -> dict:
    import yaml

    return yaml.safe_load(router.config_path.read_text())
