"""Signed request ids and outcome intake: forged, tampered and expired ids rejected; repeats counted once."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from router.metrics import RouterMetrics
from router.outcomes import OutcomeIntake
from router.signing import ExpiredRequestId, ForgedRequestId, Signer, load_key
from serving.tfserving.errors import InvalidArgument, PermissionDenied


def counted(metrics: RouterMetrics, arm: str, outcome: str, experiment: str = "exp") -> float:
    return metrics.registry.get_sample_value("modelramp_outcomes_total", {"experiment": experiment, "arm": arm, "outcome": outcome}) or 0.0


def test_issue_and_verify_roundtrip():
    signer = Signer(b"k" * 32)
    rid = signer.issue("exp", "model", now=1000.0)
    got = signer.verify(rid, now=1001.0)
    assert (got.experiment, got.arm, got.issued_at) == ("exp", "model", 1000.0)
    assert len(rid) < 80


def test_id_is_the_documented_hmac():
    """The format in router.signing's docstring, computed independently (replicas in other languages rely on it)."""
    key = b"replica-shared-key"
    rid = Signer(key).issue("churn", "legacy", now=1_700_000_000.0, bucket=17)
    payload, _, signature = rid.rpartition(".")
    experiment, arm, bucket, issued_ms, nonce = payload.split(".")
    assert (experiment, arm, bucket, issued_ms, len(nonce)) == ("churn", "legacy", "17", "1700000000000", 12)
    expected = base64.urlsafe_b64encode(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:16]).rstrip(b"=").decode()
    assert signature == expected


@pytest.mark.parametrize("tamper", [
    lambda r: r.replace(".model.", ".legacy."),          # claim the other arm
    lambda r: r.replace("exp.", "other.", 1),            # another experiment
    lambda r: r[:-2] + ("AA" if r[-2:] != "AA" else "BB"),  # another signature
    lambda r: ".".join(r.split(".")[:2] + [str(int(r.split(".")[2]) + 1)] + r.split(".")[3:]),  # another bucket
    lambda r: ".".join(r.split(".")[:3] + [str(int(r.split(".")[3]) + 1)] + r.split(".")[4:]),  # another time
])
def test_tampered_ids_are_rejected(tamper):
    signer = Signer(b"k" * 32)
    with pytest.raises(ForgedRequestId):
        signer.verify(tamper(signer.issue("exp", "model")))


def test_forged_with_another_key_and_garbage():
    rid = Signer(b"other-key").issue("exp", "model")
    signer = Signer(b"k" * 32)
    with pytest.raises(ForgedRequestId):
        signer.verify(rid)
    for bad in ("", "nonsense", "a.b.c.d", 42, None, "x" * 300):
        with pytest.raises((InvalidArgument, ForgedRequestId)):
            signer.verify(bad)


def test_bucket_is_signed_and_returned():
    signer = Signer(b"k" * 32)
    got = signer.verify(signer.issue("exp", "model", now=1000.0, bucket=63), now=1001.0)
    assert got.bucket == 63
    assert signer.verify(signer.issue("exp", "model")).bucket == 0


def test_old_five_field_ids_are_malformed_not_crashes():
    """An id of the format before buckets (still correctly signed) is InvalidArgument, not a server error."""
    key = b"k" * 32
    payload = "exp.model.1000000.0123456789ab"
    old = payload + "." + base64.urlsafe_b64encode(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:16]).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="not a modelramp request id"):
        Signer(key).verify(old)


def test_count_outcome_feeds_both_counters():
    metrics = RouterMetrics()
    metrics.count_outcome("exp", "model", 5, True)
    metrics.count_outcome("exp", "model", 5, False)
    metrics.count_outcome("exp", "model", 7, True)
    assert counted(metrics, "model", "success") == 2
    assert counted(metrics, "model", "failure") == 1
    by_bucket = {"experiment": "exp", "arm": "model", "bucket": "5", "outcome": "success"}
    assert metrics.registry.get_sample_value("modelramp_bucket_outcomes_total", by_bucket) == 1
    assert metrics.registry.get_sample_value("modelramp_bucket_outcomes_total", {**by_bucket, "bucket": "7"}) == 1


def test_expired_id_is_rejected():
    signer = Signer(b"k" * 32, ttl_seconds=60)
    rid = signer.issue("exp", "legacy", now=1000.0)
    signer.verify(rid, now=1059.0)
    with pytest.raises(ExpiredRequestId):
        signer.verify(rid, now=1061.0)


def test_key_from_file_or_env(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("secret\n")
    assert load_key(key_file) == b"secret"
    assert load_key(None, env={"MODELRAMP_SIGNING_KEY": "abc"}) == b"abc"
    assert load_key(None, env={}) is None


def test_intake_counts_once_and_rejects_whole_batch():
    signer, metrics = Signer(b"k"), RouterMetrics()
    intake = OutcomeIntake(signer, metrics, max_entries=100)
    a, b = signer.issue("exp", "model"), signer.issue("exp", "legacy")
    result = intake.report([{"request_id": a, "success": True}, {"request_id": b, "success": False}])
    assert (result.accepted, result.duplicates) == (2, 0)
    assert intake.report({"request_id": a, "success": True}).duplicates == 1
    assert counted(metrics, "model", "success") == 1 and counted(metrics, "legacy", "failure") == 1
    forged = a.replace(".model.", ".legacy.")
    c = signer.issue("exp", "model")
    with pytest.raises(PermissionDenied):
        intake.report([{"request_id": c, "success": True}, {"request_id": forged, "success": True}])
    assert counted(metrics, "model", "success") == 1, "nothing of a rejected batch is counted"
    for bad in ({"request_id": c}, {"request_id": c, "success": "yes"}, [], "x", {"request_id": c, "success": True, "extra": 1}):
        with pytest.raises(InvalidArgument):
            intake.report(bad)
    assert metrics.registry.get_sample_value("modelramp_outcomes_rejected_total", {"reason": "forged"}) == 1


def test_dedup_window_is_bounded():
    signer = Signer(b"k")
    intake = OutcomeIntake(signer, RouterMetrics(), max_entries=10)
    ids = [signer.issue("exp", "model") for _ in range(50)]
    for rid in ids:
        intake.report({"request_id": rid, "success": True})
    assert len(intake.seen) == 10
    assert intake.report({"request_id": ids[-1], "success": True}).duplicates == 1
