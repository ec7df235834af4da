"""Outcome intake: verify signed request ids, record each outcome once in the ledger, feed `modelramp_outcomes_total`.

A report is `{"request_id": ..., "success": true|false}` or a list of them. A batch is checked
completely before anything is written: one malformed, forged or expired id, or one of another
experiment, another salt or dated in the future (router/signing.py), rejects the whole batch
(4xx, naming the outcome and why), so a client never has to guess which half was taken; the
rejection counter says which (`modelramp_outcomes_rejected_total{reason}`), once per report.
The verified batch is then one all-or-nothing write to the outcome ledger (router/ledger), shared by every replica and kept
across restarts, keyed by the id's signature. Only the rows the ledger reports as inserted are
counted, so an outcome posted twice, to two replicas, or again after a restart is counted once;
a repeat is accepted and reported as a duplicate (idempotent) until its id expires
(`outcome_ttl_seconds`, after which the signer rejects it and the ledger prunes its row).

When the ledger cannot write, the report fails with LedgerUnavailable (503 with Retry-After):
nothing of it was counted, so the client's retry is safe. Counting happens in the ledger's
`on_inserted` callback, on the event loop once the rows are committed, not after the await: a
client that hangs up while its write is in flight loses nothing, because the rows are counted
whether or not anyone is still waiting for the answer.
"""

from __future__ import annotations

import asyncio
import time
from binascii import a2b_base64
from collections.abc import Callable
from dataclasses import dataclass
from hmac import compare_digest

from router._sha256 import sha256
from router.ledger import MAX_BATCH, LedgerUnavailable, MemoryLedger, Outcome, OutcomeLedger
from router.metrics import RouterMetrics
from router.qa import qa_label
from router.signing import MAX_CLOCK_SKEW_SECONDS, REJECTION_REASONS, Signer
from serving.tfserving.errors import InvalidArgument, UserFacingError

__all__ = ["MAX_BATCH", "OutcomeIntake", "OutcomeResult"]

_SIG_BYTES = 16  # router.signing's truncated HMAC-SHA256
_URLSAFE = bytes.maketrans(b"-_", b"+/")  # base64url to the standard alphabet, as base64.urlsafe_b64decode does
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@dataclass
class OutcomeResult:
    accepted: int
    duplicates: int


class _Keyed:
    """The signer's HMAC-SHA256 key as RFC 2104's keyed inner and outer hash states, copied for each id.

    What `hmac.HMAC.copy()` does, without its Python-level object per id: two `sha256.copy()`s
    (CPython's SHA-256, router/_sha256.py). tests/router/test_outcomes.py holds it to `Signer`'s digests.
    """

    def __init__(self, signer: Signer):
        self.signer = signer
        key = signer._key  # the intake verifies with the signer's own key
        block = sha256().block_size
        if len(key) > block:
            key = sha256(key).digest()
        key = key.ljust(block, b"\0")
        self.inner = sha256(key.translate(_IPAD))
        self.outer = sha256(key.translate(_OPAD))


# Entries verified between two turns of the event loop: 2-4 ms of HMACs on this 2-core machine. An
# 8,000-outcome report verified in one go held every other client for its whole length.
VERIFY_CHUNK = 500


class OutcomeIntake:
    """Verifies outcome reports and records them in the ledger; counts what the ledger inserted.

    `ledger` None: an in-process `MemoryLedger`, which remembers ids for this process only: right
    for tests and a Router built without a ledger, never for a deployment (`router.server` always
    passes the configured one).
    """

    def __init__(self, signer: Signer, metrics: RouterMetrics, ledger: OutcomeLedger | None = None):
        self.signer = signer
        self.metrics = metrics
        self.ledger: OutcomeLedger = ledger if ledger is not None else MemoryLedger(ttl_seconds=signer.ttl_seconds)
        self.observe: Callable[[list[Outcome]], None] | None = None  # also told of inserted outcomes (the lag histogram)
        self._keyed: _Keyed | None = None  # the signer's HMAC key states, for _verify_fast

    async def report(self, body: object) -> OutcomeResult:
        """Validate, record and count a parsed JSON body.

        Raises a UserFacingError (4xx) and writes nothing on any bad entry; LedgerUnavailable
        (503, `retry_after`) and counts nothing when the ledger cannot write.
        """
        items = body if isinstance(body, list) else [body]
        if not items:
            raise self._reject("malformed", InvalidArgument("an empty list of outcomes"))
        if len(items) > MAX_BATCH:
            raise self._reject("malformed", InvalidArgument(f"at most {MAX_BATCH} outcomes per request"))
        outcomes = []
        for start in range(0, len(items), VERIFY_CHUNK):
            if start:
                await asyncio.sleep(0)  # a batch of thousands must not hold the event loop: predict shares it
            chunk = self._verify_fast(items[start:start + VERIFY_CHUNK])
            if chunk is None:  # some entry is not a valid, fresh id: the careful path finds it and says why
                outcomes = self._verify_each(items, isinstance(body, list))
                break
            outcomes.extend(chunk)
        # The ledger keeps ids as long as the signer accepts them; the config (and so the signer) may change.
        self.ledger.ttl_seconds = self.signer.ttl_seconds
        try:
            flags = await self.ledger.record(outcomes, on_inserted=self._count)
        except LedgerUnavailable:
            self.metrics.outcomes_rejected.labels("unavailable").inc(len(outcomes))
            raise
        except UserFacingError:  # InvalidOutcome: what the signer let through, the ledger refused (a bucket out of range)
            self.metrics.outcomes_rejected.labels("malformed").inc()
            raise
        accepted = sum(flags)
        duplicates = len(flags) - accepted
        if duplicates:
            self.metrics.outcomes_rejected.labels("duplicate").inc(duplicates)
        return OutcomeResult(accepted, duplicates)

    def _verify_fast(self, items: list[object]) -> list[Outcome] | None:
        """The batch's outcomes if every entry is well-formed, authentic and fresh; None at the first that is not.

        The same checks as `Signer.verify`, done for the whole batch in one loop: the HMAC from
        key states prepared once per signer (`_Keyed`), the signature decoded by binascii, one
        clock reading per batch. It only ever accepts what `Signer.verify` accepts (a test holds
        them to the same answers); anything else goes to `_verify_each`, which raises the error.
        """
        keyed = self._keyed
        if keyed is None or keyed.signer is not self.signer:
            keyed = self._keyed = _Keyed(self.signer)
        inner, outer = keyed.inner, keyed.outer
        now = time.time()
        oldest_ms = (now - self.signer.ttl_seconds) * 1000
        newest_ms = (now + MAX_CLOCK_SKEW_SECONDS) * 1000
        name, salt = self.signer.scope()
        names = (name, qa_label(name)) if name is not None else None
        tag = self.signer.salt_tag(salt) if salt is not None else None
        outcomes: list[Outcome] = []
        append = outcomes.append
        try:
            for item in items:
                # Exactly {"request_id": str} or {"request_id": str, "success": bool}, as _verify_each demands.
                if type(item) is not dict or not 1 <= len(item) <= 2:
                    return None
                rid = item["request_id"]
                success = item["success"]
                if type(rid) is not str or len(rid) > 256 or (success is not True and success is not False):
                    return None
                experiment, arm, bucket, issued_ms, salt_tag, _nonce, signature = rid.split(".")
                given = a2b_base64(signature.encode("ascii").translate(_URLSAFE) + b"=" * (-len(signature) % 4))
                mac = inner.copy()
                mac.update(rid[: -len(signature) - 1].encode())
                top = outer.copy()
                top.update(mac.digest())
                if not compare_digest(given, top.digest()[:_SIG_BYTES]):
                    return None
                ms = int(issued_ms)
                if ms < oldest_ms or ms > newest_ms:  # expired or from the future (Signer.verify: age > ttl, age < -skew)
                    return None
                if (tag is not None and salt_tag != tag) or (names is not None and experiment not in names):
                    return None
                append(Outcome(given, experiment, arm, int(bucket), success, ms / 1000.0))
        except (KeyError, ValueError, TypeError):  # a missing key, not seven fields, bad base64 or non-ASCII, a non-integer
            return None
        return outcomes

    def _verify_each(self, items: list[object], is_list: bool) -> list[Outcome]:
        """Entry by entry through `Signer.verify`, raising the 4xx error of the first bad one."""
        outcomes: list[Outcome] = []
        for n, item in enumerate(items):
            where = f"outcome {n}: " if is_list else ""
            if not isinstance(item, dict) or set(item) - {"request_id", "success"} or "request_id" not in item:
                raise self._reject("malformed", InvalidArgument(f'{where}expected {{"request_id": str, "success": bool}}'))
            success = item.get("success")
            if not isinstance(success, bool):
                raise self._reject("malformed", InvalidArgument(f"{where}'success' must be true or false"))
            try:
                rid = self.signer.verify(item["request_id"])
            except UserFacingError as err:
                reason = REJECTION_REASONS.get(type(err), "malformed")
                raise self._reject(reason, type(err)(where + str(err))) from None
            outcomes.append(Outcome(rid.signature, rid.experiment, rid.arm, rid.bucket, success, rid.issued_at))
        return outcomes

    def _count(self, inserted: list[Outcome]) -> None:
        """The ledger's on_inserted: runs on the event loop once the rows are committed, even if the caller is gone.

        Increments are summed per (experiment, arm, bucket, outcome) first, so each metric child
        is touched once per batch rather than once per outcome.
        """
        counts: dict[tuple[str, str, int, bool], int] = {}
        get = counts.get
        for o in inserted:
            key = (o.experiment, o.arm, o.bucket, o.success)
            counts[key] = get(key, 0) + 1
        self.metrics.count_outcomes(counts)
        if self.observe is not None:
            self.observe(inserted)

    def _reject(self, reason: str, err: UserFacingError) -> UserFacingError:
        self.metrics.outcomes_rejected.labels(reason).inc()
        return err
