"""An in-process ledger for tests of callers (and `memory://`): dicts instead of a database, no thread.

What it is not: shared or durable. Two routers do not see each other's ids and a restart forgets
them all, so it must never be what a deployment counts with; `open_ledger` accepts `memory://`
only for tests and one-off demos. It keeps the real ledgers' contract (validation, all-or-nothing
batches, per-hour totals that survive pruning) and can be switched to fail, so the intake's
503 path is testable without a database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from router.ledger.base import (
    PRUNE_MARGIN_SECONDS,
    ROLLUP_MS,
    BucketCount,
    LedgerCounts,
    LedgerUnavailable,
    OnInserted,
    Outcome,
    OutcomeLedger,
    check_batch,
)


class MemoryLedger(OutcomeLedger):
    """Dict-backed OutcomeLedger for one process; set `failing` to a message to make writes raise LedgerUnavailable."""

    def __init__(self, ttl_seconds: float = 86_400.0, max_buckets: int = 1024, clock: Callable[[], float] = time.time):
        self.ttl_seconds = ttl_seconds
        self.max_buckets = max_buckets
        self.clock = clock
        self.failing: str | None = None
        self._ids: dict[bytes, Outcome] = {}
        self._totals: dict[tuple[str, str, int, int], list[int]] = {}
        self._closed = False

    async def record(self, outcomes: Sequence[Outcome], on_inserted: OnInserted | None = None) -> list[bool]:
        batch = check_batch(outcomes, now=self.clock(), ttl_seconds=self.ttl_seconds, max_buckets=self.max_buckets)
        if self._closed:
            raise LedgerUnavailable("the outcome ledger is closed")
        if self.failing is not None:
            raise LedgerUnavailable(f"the outcome ledger is unavailable: {self.failing}")
        flags, new = [], []
        for o in batch:
            is_new = o.signature not in self._ids
            if is_new:
                self._ids[o.signature] = o
                hour = int(o.issued_at * 1000) // ROLLUP_MS * ROLLUP_MS
                self._totals.setdefault((o.experiment, o.arm, o.bucket, hour), [0, 0])[0 if o.success else 1] += 1
                new.append(o)
            flags.append(is_new)
        if on_inserted is not None and new:
            on_inserted(new)
        return flags

    def counts(self, experiment: str, since: float | None = None) -> LedgerCounts:
        since_ms = 0 if since is None else int(since * 1000) // ROLLUP_MS * ROLLUP_MS
        cells: dict[tuple[str, int], list[int]] = {}
        for (exp, arm, bucket, hour), (s, f) in self._totals.items():
            if exp == experiment and hour >= since_ms:
                cell = cells.setdefault((arm, bucket), [0, 0])
                cell[0] += s
                cell[1] += f
        return LedgerCounts(experiment, None if since is None else since_ms / 1000,
                            tuple(BucketCount(a, b, s, f) for (a, b), (s, f) in sorted(cells.items())))

    def prune(self, now: float | None = None) -> int:
        horizon = (self.clock() if now is None else now) - self.ttl_seconds - PRUNE_MARGIN_SECONDS
        old = [key for key, o in self._ids.items() if int(o.issued_at * 1000) < int(horizon * 1000)]
        for key in old:
            del self._ids[key]
        return len(old)

    def rows(self) -> int:
        return len(self._ids)

    @property
    def available(self) -> bool:
        return self.failing is None and not self._closed

    def close(self) -> None:
        self._closed = True
