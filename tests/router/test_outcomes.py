"""Signed request ids and outcome intake: forged, tampered and expired ids rejected; repeats counted once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import pytest

from router.ledger import LedgerUnavailable, MemoryLedger, open_ledger
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
    experiment, arm, bucket, issued_ms, salt_tag, nonce = payload.split(".")
    assert (experiment, arm, bucket, issued_ms, len(nonce)) == ("churn", "legacy", "17", "1700000000000", 12)
    b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    assert salt_tag == b64(hmac.new(key, b"salt\0", hashlib.sha256).digest()[:6])  # a signer that follows no salt: ""
    assert signature == b64(hmac.new(key, payload.encode(), hashlib.sha256).digest()[:16])


@pytest.mark.parametrize("length", [1, 32, 63, 64, 65, 200])
def test_signature_is_hmac_sha256_for_every_key_length(length):
    """The signer's own HMAC (two keyed states, router.signing._Hmac) against `hmac`: short, block-sized, hashed keys."""
    key = bytes(range(7, 7 + length))
    signer = Signer(key)
    payload = "exp.model.3.1700000000000.AAAAAAAA.0123456789ab"
    assert signer._sign(payload) == hmac.new(key, payload.encode(), hashlib.sha256).digest()[:16]
    assert signer.salt_tag("s") == base64.urlsafe_b64encode(
        hmac.new(key, b"salt\0s", hashlib.sha256).digest()[:6]).rstrip(b"=").decode()


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


@pytest.mark.parametrize("payload", ["exp.model.1000000.0123456789ab", "exp.model.0.1000000.0123456789ab"])
def test_old_five_and_six_field_ids_are_malformed_not_crashes(payload):
    """Ids of the formats before buckets and before the salt tag (still correctly signed) are InvalidArgument, not a server error."""
    key = b"k" * 32
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
    intake = OutcomeIntake(signer, metrics, MemoryLedger())
    a, b = signer.issue("exp", "model", bucket=3), signer.issue("exp", "legacy", bucket=4)
    result = asyncio.run(intake.report([{"request_id": a, "success": True}, {"request_id": b, "success": False}]))
    assert (result.accepted, result.duplicates) == (2, 0)
    assert asyncio.run(intake.report({"request_id": a, "success": True})).duplicates == 1
    assert counted(metrics, "model", "success") == 1 and counted(metrics, "legacy", "failure") == 1
    by_bucket = {"experiment": "exp", "arm": "model", "bucket": "3", "outcome": "success"}
    assert metrics.registry.get_sample_value("modelramp_bucket_outcomes_total", by_bucket) == 1, "counted in the signed bucket"
    forged = a.replace(".model.", ".legacy.")
    c = signer.issue("exp", "model")
    with pytest.raises(PermissionDenied):
        asyncio.run(intake.report([{"request_id": c, "success": True}, {"request_id": forged, "success": True}]))
    assert counted(metrics, "model", "success") == 1, "nothing of a rejected batch is counted"
    assert intake.ledger.rows() == 2, "nor written"
    for bad in ({"request_id": c}, {"request_id": c, "success": "yes"}, [], "x", {"request_id": c, "success": True, "extra": 1}):
        with pytest.raises(InvalidArgument):
            asyncio.run(intake.report(bad))
    assert metrics.registry.get_sample_value("modelramp_outcomes_rejected_total", {"reason": "forged"}) == 1
    assert metrics.registry.get_sample_value("modelramp_outcomes_rejected_total", {"reason": "duplicate"}) == 1


def test_a_repeat_within_one_batch_and_through_another_intake_on_the_same_ledger_counts_once():
    """Two intakes on one ledger are two replicas sharing it: the ledger, not the process, decides what is new."""
    signer, ledger = Signer(b"k"), MemoryLedger()
    first, second = RouterMetrics(), RouterMetrics()
    ids = [signer.issue("exp", "model") for _ in range(30)]
    r1 = asyncio.run(OutcomeIntake(signer, first, ledger).report([{"request_id": i, "success": True} for i in ids[:20] + ids[:5]]))
    r2 = asyncio.run(OutcomeIntake(signer, second, ledger).report([{"request_id": i, "success": True} for i in ids]))
    assert (r1.accepted, r1.duplicates, r2.accepted, r2.duplicates) == (20, 5, 10, 20)
    assert counted(first, "model", "success") + counted(second, "model", "success") == 30 == ledger.rows()


def test_ledger_down_is_503_with_retry_after_and_nothing_counted():
    signer, metrics, ledger = Signer(b"k"), RouterMetrics(), MemoryLedger()
    intake = OutcomeIntake(signer, metrics, ledger)
    body = [{"request_id": signer.issue("exp", "legacy"), "success": True} for _ in range(3)]
    ledger.failing = "database restarting"
    with pytest.raises(LedgerUnavailable) as raised:
        asyncio.run(intake.report(body))
    assert raised.value.http_status == 503 and raised.value.retry_after >= 1
    assert counted(metrics, "legacy", "success") == 0
    assert metrics.registry.get_sample_value("modelramp_outcomes_rejected_total", {"reason": "unavailable"}) == 3
    ledger.failing = None
    assert asyncio.run(intake.report(body)).accepted == 3, "the retry is counted, once"
    assert asyncio.run(intake.report(body)).duplicates == 3
    assert counted(metrics, "legacy", "success") == 3


def test_outcomes_are_counted_even_if_the_reporter_is_cancelled_mid_write(tmp_path):
    """The count happens when the ledger commits, not after the await: a client hanging up loses nothing."""
    signer, metrics = Signer(b"k"), RouterMetrics()
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    intake = OutcomeIntake(signer, metrics, ledger)
    body = [{"request_id": signer.issue("exp", "model"), "success": False} for _ in range(50)]

    async def go() -> None:
        task = asyncio.ensure_future(intake.report(body))
        await asyncio.sleep(0)  # the report is queued for the writer thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await ledger.aclose()  # finishes the queued write

    asyncio.run(go())
    assert ledger.rows() == counted(metrics, "model", "failure") in (0, 50), "all or nothing, and counted as written"


def test_the_ledger_keeps_ids_as_long_as_the_signer_accepts_them():
    signer, ledger = Signer(b"k", ttl_seconds=100.0), MemoryLedger(ttl_seconds=5.0)
    intake = OutcomeIntake(signer, RouterMetrics(), ledger)
    asyncio.run(intake.report({"request_id": signer.issue("exp", "model"), "success": True}))
    assert ledger.ttl_seconds == 100.0
    signer.ttl_seconds = 7200.0  # a config reload (router.core.Router.apply sets the signer's)
    asyncio.run(intake.report({"request_id": signer.issue("exp", "model"), "success": True}))
    assert ledger.ttl_seconds == 7200.0


def test_fast_batch_verification_agrees_with_the_signer():
    """The intake's batch path (keyed hash states, binascii) accepts exactly what Signer.verify accepts, with the same contents."""
    for key in (b"k" * 32, b"short", b"x" * 100):  # a key longer than SHA-256's block is hashed first (RFC 2104)
        signer = Signer(key)
        intake = OutcomeIntake(signer, RouterMetrics(), MemoryLedger())
        body = [{"request_id": signer.issue("exp", "model" if k % 2 else "legacy", bucket=k), "success": k % 3 == 0} for k in range(30)]
        fast = intake._verify_fast(body)
        assert fast is not None and fast == intake._verify_each(body, True)
        for item, o in zip(body, fast, strict=True):
            rid = signer.verify(item["request_id"])
            assert (o.signature, o.experiment, o.arm, o.bucket, o.issued_at) == (rid.signature, rid.experiment, rid.arm, rid.bucket, rid.issued_at)
        good = body[0]["request_id"]
        for bad in (Signer(b"other").issue("exp", "model"), good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),
                    good.replace(".legacy.", ".model.") if ".legacy." in good else good.replace(".model.", ".legacy."),
                    "a.b.c.d", good + "é", 42, None, "x" * 300, signer.issue("exp", "model", now=1.0)):
            assert intake._verify_fast([*body[:3], {"request_id": bad, "success": True}]) is None, bad
        for item in ({"request_id": good}, {"request_id": good, "success": 1}, {"request_id": good, "success": True, "x": 1},
                     {"success": True}, [good]):
            assert intake._verify_fast([item]) is None, item


def test_count_outcomes_is_count_outcome_n_times():
    one, many = RouterMetrics(), RouterMetrics()
    cells = {("exp", "model", 5, True): 3, ("exp", "model", 5, False): 1, ("exp", "legacy", 7, True): 2}
    for (e, a, b, s), n in cells.items():
        for _ in range(n):
            one.count_outcome(e, a, b, s)
    many.count_outcomes(cells)

    def samples(m: RouterMetrics) -> list[str]:
        return sorted(line for line in m.exposition().decode().splitlines() if "outcome" in line and "_created" not in line)

    assert samples(one) == samples(many)
    assert counted(many, "model", "success") == 3


def test_a_large_report_lets_other_work_run_while_it_is_verified():
    """Predict shares the event loop: 8,000 outcomes are verified in turns, not in one go."""
    signer = Signer(b"k")
    signer.follow(lambda: ("e", "salt"))
    intake = OutcomeIntake(signer, RouterMetrics(), MemoryLedger())
    items = [{"request_id": signer.issue("e", "model", bucket=i % 64), "success": True} for i in range(8000)]
    ticks, at_ledger = [0], []
    record = intake.ledger.record

    async def recording(outcomes, on_inserted):
        at_ledger.append(ticks[0])  # how often the other task ran before the batch reached the ledger
        return await record(outcomes, on_inserted=on_inserted)

    intake.ledger.record = recording  # type: ignore[method-assign]

    async def other_work() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0)

    async def go():
        task = asyncio.get_running_loop().create_task(other_work())
        await asyncio.sleep(0)
        started = ticks[0]
        result = await intake.report(items)
        task.cancel()
        return started, result

    started, result = asyncio.run(go())
    assert result.accepted == 8000
    assert at_ledger[0] - started >= 8000 // 500 - 1, "verification held the loop for the whole batch"
