"""The PostgreSQL ledger on a real server: two replicas count each outcome once, across restarts and an outage."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

from router.ledger import LedgerUnavailable, open_ledger
from router.ledger.base import PRUNE_MARGIN_SECONDS
from tests.router.ledger.pgserver import RestartablePostgres
from tests.router.ledger.support import cells_of, expected_cells, make_outcomes, submit_all
from tests.support.processes import wait_until

ROWS = "SELECT COUNT(*) FROM modelramp_outcome_ids"


def test_two_replicas_and_a_restart_insert_each_outcome_once(pg: RestartablePostgres, pg_url: str):
    outcomes = make_outcomes(10_000, seed=1)

    async def round_(seed: int) -> list[int]:
        replicas = [open_ledger(pg_url), open_ledger(pg_url)]
        try:
            return await submit_all(replicas, outcomes, seed=seed)
        finally:
            for ledger in replicas:
                await ledger.aclose()

    first = asyncio.run(round_(seed=2))
    assert sum(first) == 10_000  # split between the replicas however the race went, never counted twice
    again = asyncio.run(round_(seed=3))  # both "routers" restarted: the ids are remembered by the database
    assert again == [0, 0]
    assert pg.count(pg_url, ROWS) == 10_000
    ledger = open_ledger(pg_url)
    try:
        counts = ledger.counts("churn")
        assert cells_of(counts) == expected_cells(outcomes)
        totals = counts.arm_totals()
        assert sum(t["successes"] + t["failures"] for t in totals.values()) == 10_000
        assert ledger.counts("other").cells == ()
    finally:
        ledger.close()


def test_database_stopped_mid_load_fails_closed_then_retries_count_once(pg: RestartablePostgres, pg_url: str):
    outcomes = make_outcomes(3_000, seed=4)
    batches = [outcomes[i:i + 25] for i in range(0, len(outcomes), 25)]

    async def run() -> None:
        ledger = open_ledger(pg_url)
        try:
            queue = deque(range(len(batches)))
            done: dict[int, list[bool]] = {}
            failed: list[int] = []
            stop = {"started": False, "done": False}

            async def submitter() -> None:
                while queue:
                    index = queue.popleft()
                    try:
                        done[index] = await ledger.record(batches[index])
                    except LedgerUnavailable as err:
                        assert err.retry_after >= 1 and err.http_status == 503
                        failed.append(index)
                    if len(done) >= len(batches) // 3 and not stop["started"]:
                        stop["started"] = True  # the stop runs while the other submitters keep writing
                        await asyncio.to_thread(pg.stop)
                        stop["done"] = True
                    await asyncio.sleep(0)  # let the stopper and the others interleave with this one

            await asyncio.gather(*(submitter() for _ in range(4)))
            assert stop["done"]
            assert failed, "no write failed: the database was not stopped mid-load"
            # While it is down, every report fails closed and fast.
            for index in failed:
                started = time.monotonic()
                with pytest.raises(LedgerUnavailable):
                    await ledger.record(batches[index])
                assert time.monotonic() - started < 5
            assert not ledger.available
            pg.start()
            # Nothing was inserted but what was reported inserted: no write landed during the outage.
            assert pg.count(pg_url, ROWS) == sum(sum(flags) for flags in done.values())
            deadline = time.monotonic() + 60
            retry = deque(failed)
            while retry:  # the clients' retries, until the ledger has reconnected
                assert time.monotonic() < deadline, "the ledger did not recover after PostgreSQL returned"
                index = retry.popleft()
                try:
                    done[index] = await ledger.record(batches[index])
                except LedgerUnavailable:
                    retry.append(index)
                    await asyncio.sleep(0.05)  # polling interval between retries, as a client's Retry-After
            assert ledger.available
            assert sum(sum(flags) for flags in done.values()) == len(outcomes)
            assert all(all(flags) for flags in done.values())  # each outcome counted by exactly the write that inserted it
        finally:
            await ledger.aclose()

    asyncio.run(run())
    assert pg.count(pg_url, ROWS) == len(outcomes)


def test_ledger_opened_while_database_down_serves_when_it_comes_up(pg: RestartablePostgres, pg_url: str):
    pg.stop()
    try:
        ledger = open_ledger(pg_url)  # a router starting during a database outage still starts
        outcome = make_outcomes(1, seed=5)

        async def attempt() -> bool:
            try:
                return (await ledger.record(outcome))[0]
            except LedgerUnavailable:
                return False

        assert asyncio.run(attempt()) is False
        wait_until(lambda: not ledger.available, timeout=10, what="ledger reporting the outage")
    finally:
        pg.start()
    try:
        wait_until(lambda: asyncio.run(attempt()), timeout=30, what="ledger writing after PostgreSQL started")
        assert pg.count(pg_url, ROWS) == 1
    finally:
        ledger.close()


def test_ttl_pruning_keeps_the_counts(pg: RestartablePostgres, pg_url: str):
    now = [time.time()]
    ledger = open_ledger(pg_url, ttl_seconds=3600, prune_interval=0.05, clock=lambda: now[0])
    try:
        old = make_outcomes(500, now=now[0], seed=6)
        asyncio.run(ledger.record(old))
        now[0] += 3600 + PRUNE_MARGIN_SECONDS + 3600 + 1  # every old id is past TTL plus margin
        fresh = make_outcomes(200, now=now[0], seed=7)
        asyncio.run(ledger.record(fresh))
        # The writer prunes on its own schedule; poll for it rather than sleep.
        wait_until(lambda: ledger.rows() == 200, timeout=30, what="expired rows pruned by the ledger")
        assert pg.count(pg_url, ROWS) == 200
        assert cells_of(ledger.counts("churn")) == expected_cells(old + fresh)
        # Since a time: the fresh hour's counts only (the old rows are in earlier hours).
        assert cells_of(ledger.counts("churn", since=now[0] - 60)) == expected_cells(
            [o for o in fresh if int(o.issued_at * 1000) // 3_600_000 >= int((now[0] - 60) * 1000) // 3_600_000])
    finally:
        ledger.close()


def test_conflicting_batches_from_two_replicas_do_not_deadlock(pg_url: str):
    outcomes = make_outcomes(4_000, seed=8)

    async def run() -> list[int]:
        replicas = [open_ledger(pg_url), open_ledger(pg_url)]
        try:
            # Same rows, opposite orders, large batches: the worst case for lock ordering.
            forward = [replicas[0].record(outcomes[i:i + 1000]) for i in range(0, 4000, 1000)]
            backward = [replicas[1].record(list(reversed(outcomes[i:i + 1000]))) for i in range(3000, -1, -1000)]
            results = await asyncio.gather(*forward, *backward)
            return [sum(sum(flags) for flags in results[:4]), sum(sum(flags) for flags in results[4:])]
        finally:
            for ledger in replicas:
                await ledger.aclose()

    assert sum(asyncio.run(run())) == 4_000
