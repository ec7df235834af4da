"""Outcome intake: verify signed request ids, record each outcome once in the ledger, feed `modelramp_outcomes_total`.

A report is `{"request_id": ..., "success": true|false}` or a list of them. A batch is checked
completely before anything is written: one malformed, forged or expired id rejects the whole
batch (4xx), so a client never has to guess which half was taken. The verified batch is then one
all-or-nothing write to the outcome ledger (router/ledger), shared by every replica and kept
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

from collections.abc import Callable
from dataclasses import dataclass

from router.ledger import MAX_BATCH, LedgerUnavailable, MemoryLedger, Outcome, OutcomeLedger
from router.metrics import RouterMetrics
from router.signing import ExpiredRequestId, ForgedRequestId, Signer
from serving.tfserving.errors import InvalidArgument, UserFacingError

__all__ = ["MAX_BATCH", "OutcomeIntake", "OutcomeResult"]


@dataclass
class OutcomeResult:
    accepted: int
    duplicates: int


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
        outcomes: list[Outcome] = []
        for n, item in enumerate(items):
            where = f"outcome {n}: " if isinstance(body, list) else ""
            if not isinstance(item, dict) or set(item) - {"request_id", "success"} or "request_id" not in item:
                raise self._reject("malformed", InvalidArgument(f'{where}expected {{"request_id": str, "success": bool}}'))
            success = item.get("success")
            if not isinstance(success, bool):
                raise self._reject("malformed", InvalidArgument(f"{where}'success' must be true or false"))
            try:
                rid = self.signer.verify(item["request_id"])
            except ForgedRequestId as err:
                raise self._reject("forged", type(err)(where + str(err))) from None
            except ExpiredRequestId as err:
                raise self._reject("expired", type(err)(where + str(err))) from None
            except UserFacingError as err:
                raise self._reject("malformed", type(err)(where + str(err))) from None
            outcomes.append(Outcome(rid.signature, rid.experiment, rid.arm, rid.bucket, success, rid.issued_at))
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

    def _count(self, inserted: list[Outcome]) -> None:
        """The ledger's on_inserted: runs on the event loop once the rows are committed, even if the caller is gone."""
        count = self.metrics.count_outcome
        for o in inserted:
            count(o.experiment, o.arm, o.bucket, o.success)
        if self.observe is not None:
            self.observe(inserted)

    def _reject(self, reason: str, err: UserFacingError) -> UserFacingError:
        self.metrics.outcomes_rejected.labels(reason).inc()
        return err
