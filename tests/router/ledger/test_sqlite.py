"""The SQLite ledger on a real file: one router reopened twice counts each outcome once; locks fail closed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from router.ledger import BatchingLedger, LedgerUnavailable, open_ledger
from router.ledger.base import PRUNE_MARGIN_SECONDS, InvalidOutcome
from router.ledger.sqlite import SQLiteBackend
from tests.router.ledger.support import cells_of, expected_cells, make_outcomes, submit_all
from tests.support.processes import wait_until


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM modelramp_outcome_ids").fetchone()[0]


def test_one_router_reopened_twice_inserts_each_outcome_once(tmp_path: Path):
    path = tmp_path / "outcomes.db"
    outcomes = make_outcomes(10_000, seed=11)
    inserted = []
    for seed in (12, 13, 14):  # the first run, then two restarts of the same router
        ledger = open_ledger(f"sqlite:///{path}")
        try:
            inserted.append(asyncio.run(submit_all([ledger], outcomes, seed=seed))[0])
        finally:
            ledger.close()
    assert inserted == [10_000, 0, 0]
    assert _rows(path) == 10_000
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger = open_ledger(f"sqlite:///{path}")
    try:
        assert cells_of(ledger.counts("churn")) == expected_cells(outcomes)
    finally:
        ledger.close()


def test_relative_url_is_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger("sqlite:///here.db")
    try:
        asyncio.run(ledger.record(make_outcomes(3, seed=15)))
    finally:
        ledger.close()
    assert _rows(tmp_path / "here.db") == 3


def test_the_same_outcome_from_concurrent_callers_is_new_for_one(tmp_path: Path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'o.db'}")
    one = make_outcomes(1, seed=16)

    async def run() -> list[list[bool]]:
        return await asyncio.gather(*(ledger.record(one + one) for _ in range(20)))

    try:
        results = asyncio.run(run())
    finally:
        ledger.close()
    assert sum(sum(flags) for flags in results) == 1
    assert [True, False] in results  # within one call, the first occurrence is the new one


def test_a_locked_database_fails_closed_and_recovers(tmp_path: Path):
    path = tmp_path / "o.db"
    ledger = BatchingLedger(SQLiteBackend(path, busy_timeout=0.2), max_backoff=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    batch = make_outcomes(50, seed=17)
    try:
        asyncio.run(ledger.record(make_outcomes(1, seed=18)))  # schema made, connection open
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(LedgerUnavailable) as caught:
            asyncio.run(ledger.record(batch))
        assert "locked" in str(caught.value) and caught.value.retry_after >= 1
        blocker.execute("ROLLBACK")
        assert _rows(path) == 1  # the failed batch left nothing behind

        def retried() -> bool:
            try:
                return sum(asyncio.run(ledger.record(batch))) == 50
            except LedgerUnavailable:
                return False

        wait_until(retried, timeout=30, what="ledger writing after the lock was released")
        assert _rows(path) == 51
    finally:
        blocker.close()
        ledger.close()


def test_ttl_pruning_deletes_expired_ids_and_keeps_their_counts(tmp_path: Path):
    now = [time.time()]
    ledger = open_ledger(f"sqlite:///{tmp_path / 'o.db'}", ttl_seconds=7200, clock=lambda: now[0])
    try:
        old = make_outcomes(300, now=now[0], seed=19)
        asyncio.run(ledger.record(old))
        assert ledger.prune() == 0  # within TTL: nothing to prune
        now[0] += 3600 + 7200 + PRUNE_MARGIN_SECONDS + 1
        fresh = make_outcomes(100, now=now[0], seed=20)
        asyncio.run(ledger.record(fresh))
        # The writer prunes on the same clock too (once at start and every prune_interval): the 300 expired ids
        # are gone whichever of the two reached them first (the writer's first prune can run after the clock moved).
        assert ledger.prune() in (0, 300)
        assert ledger.rows() == 100
        # prune() itself, beyond the writer's clock: the fresh ids expire too, deleted by this call alone.
        assert ledger.prune(now=now[0] + 7200 + PRUNE_MARGIN_SECONDS + 1) == 100
        assert ledger.rows() == 0
        assert cells_of(ledger.counts("churn")) == expected_cells(old + fresh)
        with pytest.raises(InvalidOutcome, match="expired"):  # a pruned id can never come back as new
            asyncio.run(ledger.record(old[:1]))
    finally:
        ledger.close()


def test_counts_per_arm_and_bucket_and_since(tmp_path: Path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'o.db'}")
    hour = 3600.0
    start = (time.time() // hour - 3) * hour  # three whole hours ago
    early = make_outcomes(40, now=start + hour - 1, seed=21)  # issued within [start, start + 1h)
    late = [o for o in make_outcomes(60, now=start + 3 * hour, seed=22) if o.issued_at >= start + 2 * hour]
    other = make_outcomes(10, experiment="other", seed=23)
    try:
        asyncio.run(ledger.record(early + late + other))
        counts = ledger.counts("churn")
        assert cells_of(counts) == expected_cells(early + late)
        assert counts.since is None
        since = ledger.counts("churn", since=start + 2 * hour + 5)  # floored to the hour: the late rows only
        assert since.since == start + 2 * hour
        assert cells_of(since) == expected_cells(late)
        per_bucket = counts.buckets(16)
        model = [o for o in early + late if o.arm == "model"]
        assert sum(per_bucket["model"]["successes"]) == sum(o.success for o in model)
        assert sum(per_bucket["model"]["failures"]) == sum(not o.success for o in model)
        with pytest.raises(ValueError, match="outside"):
            counts.buckets(4)
    finally:
        ledger.close()
