"""Outcome intake: verify signed request ids, count each id once, feed `modelramp_outcomes_total`.

A report is `{"request_id": ..., "success": true|false}` or a list of them. A batch is checked
completely before anything is counted: one malformed, forged or expired id rejects the whole
batch (4xx), so a client never has to guess which half was taken. A repeated id is accepted and
ignored (idempotent) while it is remembered: the last `outcome_dedup_entries` ids, and never
beyond `outcome_ttl_seconds`, after which the id is rejected as expired anyway.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from router.metrics import RouterMetrics
from router.signing import ExpiredRequestId, ForgedRequestId, RequestId, Signer
from serving.tfserving.errors import InvalidArgument, UserFacingError

MAX_BATCH = 10_000


@dataclass
class OutcomeResult:
    accepted: int
    duplicates: int


class SeenIds:
    """A bounded memory of ids already counted (keyed by their 16-byte signature)."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def add(self, key: bytes) -> bool:
        """True if the id is new (and remember it), False if it was counted already."""
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)  # oldest first: ids arrive roughly in time order
        return True

    def __len__(self) -> int:
        return len(self._seen)


class OutcomeIntake:
    """Counts outcome reports for one router process."""

    def __init__(self, signer: Signer, metrics: RouterMetrics, max_entries: int):
        self.signer = signer
        self.metrics = metrics
        self.seen = SeenIds(max_entries)

    def report(self, body: object) -> OutcomeResult:
        """Validate and count a parsed JSON body; raises a UserFacingError (4xx) and counts nothing on any bad entry."""
        items = body if isinstance(body, list) else [body]
        if not items:
            raise self._reject("malformed", InvalidArgument("an empty list of outcomes"))
        if len(items) > MAX_BATCH:
            raise self._reject("malformed", InvalidArgument(f"at most {MAX_BATCH} outcomes per request"))
        verified: list[tuple[RequestId, bool]] = []
        for n, item in enumerate(items):
            where = f"outcome {n}: " if isinstance(body, list) else ""
            if not isinstance(item, dict) or set(item) - {"request_id", "success"} or "request_id" not in item:
                raise self._reject("malformed", InvalidArgument(f'{where}expected {{"request_id": str, "success": bool}}'))
            if not isinstance(item.get("success"), bool):
                raise self._reject("malformed", InvalidArgument(f"{where}'success' must be true or false"))
            try:
                verified.append((self.signer.verify(item["request_id"]), item["success"]))
            except ForgedRequestId as err:
                raise self._reject("forged", type(err)(where + str(err))) from None
            except ExpiredRequestId as err:
                raise self._reject("expired", type(err)(where + str(err))) from None
            except UserFacingError as err:
                raise self._reject("malformed", type(err)(where + str(err))) from None
        accepted = duplicates = 0
        for rid, success in verified:
            if self.seen.add(rid.signature):
                self.metrics.outcomes.labels(rid.experiment, rid.arm, "success" if success else "failure").inc()
                accepted += 1
            else:
                duplicates += 1
        if duplicates:
            self.metrics.outcomes_rejected.labels("duplicate").inc(duplicates)
        return OutcomeResult(accepted, duplicates)

    def _reject(self, reason: str, err: UserFacingError) -> UserFacingError:
        self.metrics.outcomes_rejected.labels(reason).inc()
        return err
