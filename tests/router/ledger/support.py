"""Outcome makers and a concurrent submitter shared by the ledger tests."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque

from router.ledger import LedgerCounts, Outcome, OutcomeLedger

ARMS = ("legacy", "model")
BUCKETS = 16


def make_outcomes(n: int, *, experiment: str = "churn", now: float | None = None, seed: int = 0) -> list[Outcome]:
    """n distinct outcomes spread over both arms and BUCKETS buckets, issued within the last hour."""
    rng = random.Random(seed)
    now = time.time() if now is None else now
    return [Outcome(signature=os.urandom(16), experiment=experiment, arm=ARMS[i % 2], bucket=rng.randrange(BUCKETS),
                    success=rng.random() < 0.3, issued_at=now - rng.uniform(0, 3600)) for i in range(n)]


def expected_cells(outcomes: list[Outcome]) -> dict[tuple[str, int], tuple[int, int]]:
    cells: dict[tuple[str, int], list[int]] = {}
    for o in outcomes:
        cells.setdefault((o.arm, o.bucket), [0, 0])[0 if o.success else 1] += 1
    return {k: (s, f) for k, (s, f) in cells.items()}


def cells_of(counts: LedgerCounts) -> dict[tuple[str, int], tuple[int, int]]:
    return {(c.arm, c.bucket): (c.successes, c.failures) for c in counts.cells}


async def submit_all(ledgers: list[OutcomeLedger], outcomes: list[Outcome], *, seed: int, submitters: int = 4) -> list[int]:
    """Every ledger gets every outcome, each in its own random order and random batch sizes (1 to 200),
    from `submitters` concurrent tasks per ledger, all at once; per ledger, how many it reported inserted."""
    rng = random.Random(seed)
    inserted = [0] * len(ledgers)

    async def submitter(index: int, batches: deque[list[Outcome]]) -> None:
        while batches:
            batch = batches.popleft()
            flags = await ledgers[index].record(batch)
            assert len(flags) == len(batch)
            inserted[index] += sum(flags)

    tasks = []
    for index in range(len(ledgers)):
        order = outcomes[:]
        rng.shuffle(order)
        batches: deque[list[Outcome]] = deque()
        while order:
            size = rng.randint(1, 200)
            batches.append(order[:size])
            del order[:size]
        tasks += [submitter(index, batches) for _ in range(submitters)]
    await asyncio.gather(*tasks)
    return inserted
