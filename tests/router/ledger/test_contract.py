"""The ledger's contract without a database: validation, URLs, the writer's queue, outages, cancellation."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
from pathlib import Path

import pytest

from router.ledger import (
    BatchingLedger,
    InvalidOutcome,
    LedgerConfigError,
    LedgerUnavailable,
    MemoryLedger,
    Outcome,
    open_ledger,
    redact,
)
from router.ledger.backend import Backend
from router.ledger.base import BucketCount
from tests.router.ledger.support import make_outcomes
from tests.support.processes import wait_until


class FakeBackend(Backend):
    """A dict for a database, with switches for an outage, a hung write and a bug."""

    name = "fake"

    def __init__(self):
        self.ids: dict[bytes, Outcome] = {}
        self.down = False
        self.bug: Exception | None = None
        self.gate: threading.Event | None = None  # insert waits on it while set
        self.entered = threading.Event()

    def connect(self) -> object:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        return object()

    def insert(self, conn, rows):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.down:
            raise ConnectionResetError("server closed the connection")
        if self.bug is not None:
            raise self.bug
        new = {o.signature for o in rows if o.signature not in self.ids}
        self.ids.update((o.signature, o) for o in rows if o.signature in new)
        return new

    def prune_chunk(self, conn, before_ms, limit):
        return 0

    def counts(self, conn, experiment, since_ms):
        return [BucketCount("model", 0, len(self.ids), 0)]

    def rows(self, conn):
        return len(self.ids)


VALID = make_outcomes(1, seed=30)[0]


@pytest.mark.parametrize(("change", "message"), [
    ({"signature": "not-bytes"}, "signature"),
    ({"signature": b"short"}, "signature"),
    ({"experiment": ""}, "experiment"),
    ({"experiment": "a\x00b"}, "experiment"),
    ({"arm": "x" * 64}, "arm"),
    ({"arm": 3}, "arm"),
    ({"bucket": -1}, "bucket"),
    ({"bucket": 1024}, "bucket"),
    ({"bucket": True}, "bucket"),
    ({"bucket": 1.5}, "bucket"),
    ({"success": 1}, "success"),
    ({"issued_at": float("nan")}, "issued_at"),
    ({"issued_at": "now"}, "issued_at"),
    ({"issued_at": time.time() - 2 * 86_400}, "expired"),
    ({"issued_at": time.time() + 3 * 86_400}, "future"),
])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_bad_outcomes_are_refused_whole_with_a_clear_error(kind: str, change: dict, message: str, tmp_path: Path):
    ledger = MemoryLedger() if kind == "memory" else open_ledger(f"sqlite:///{tmp_path / 'o.db'}")
    bad = dataclasses.replace(VALID, **change)
    try:
        with pytest.raises(InvalidOutcome, match=message) as caught:
            asyncio.run(ledger.record([make_outcomes(1, seed=31)[0], bad]))
        assert caught.value.http_status == 400 and "outcome 1" in str(caught.value)
        assert ledger.rows() == 0  # the good one was not written either
    finally:
        ledger.close()


@pytest.mark.parametrize("batch", [VALID, "text", 42, [VALID, {"signature": b"x"}]])
def test_not_a_sequence_of_outcomes_is_refused(batch: object):
    with pytest.raises(InvalidOutcome):
        asyncio.run(MemoryLedger().record(batch))  # type: ignore[arg-type]


def test_too_large_a_batch_is_refused():
    with pytest.raises(InvalidOutcome, match="at most 10000"):
        asyncio.run(MemoryLedger().record([VALID] * 10_001))


@pytest.mark.parametrize("url", ["", "mysql://h/db", "sqlite://", "sqlite:///:memory:", "modelramp.db",
                                 "sqlite:///no/such/folder/o.db", "postgresql://%zz"])
def test_unusable_urls_fail_at_startup(url: str):
    with pytest.raises(LedgerConfigError):
        open_ledger(url)


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the postgres extra were not installed
    monkeypatch.delitem(sys.modules, "router.ledger.postgres", raising=False)
    with pytest.raises(LedgerConfigError, match=r"pip install 'modelramp\[postgres\]'"):
        open_ledger("postgresql://modelramp@127.0.0.1/db")


def test_redact_hides_passwords_only():
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("sqlite:///o.db") == "sqlite:///o.db"


def test_memory_ledger_is_the_contract_in_dicts():
    ledger = MemoryLedger()
    batch = make_outcomes(10, seed=32)
    seen: list[Outcome] = []
    assert asyncio.run(ledger.record(batch + batch[:1], on_inserted=seen.extend)) == [True] * 10 + [False]
    assert seen == batch and ledger.rows() == 10
    ledger.failing = "switched off by the test"
    with pytest.raises(LedgerUnavailable, match="switched off"):
        asyncio.run(ledger.record(make_outcomes(1, seed=33)))
    assert not ledger.available and ledger.rows() == 10


def test_database_outage_fails_fast_and_the_writer_reconnects():
    backend = FakeBackend()
    ledger = BatchingLedger(backend, max_backoff=0.1)
    try:
        assert asyncio.run(ledger.record(make_outcomes(2, seed=34))) == [True, True]
        backend.down = True
        with pytest.raises(LedgerUnavailable, match="closed the connection"):
            asyncio.run(ledger.record(make_outcomes(2, seed=35)))
        started = time.monotonic()
        with pytest.raises(LedgerUnavailable) as caught:  # known down: refused before queueing
            asyncio.run(ledger.record(make_outcomes(2, seed=36)))
        assert time.monotonic() - started < 0.5 and caught.value.retry_after >= 1
        assert len(backend.ids) == 2
        backend.down = False
        wait_until(lambda: ledger.available, timeout=10, what="writer reconnected")
        assert asyncio.run(ledger.record(make_outcomes(2, seed=35))) == [True, True]
    finally:
        ledger.close()


def test_the_writer_survives_a_bug_in_the_database_layer():
    backend = FakeBackend()
    backend.bug = TypeError("a bug, not an outage")
    ledger = BatchingLedger(backend, max_backoff=0.05)
    try:
        with pytest.raises(LedgerUnavailable, match="a bug"):
            asyncio.run(ledger.record(make_outcomes(1, seed=37)))
        backend.bug = None
        wait_until(lambda: ledger.available, timeout=10, what="writer back")
        assert asyncio.run(ledger.record(make_outcomes(1, seed=37))) == [True]
    finally:
        ledger.close()


def test_a_full_queue_fails_closed_instead_of_growing():
    backend = FakeBackend()
    backend.gate = threading.Event()  # the database hangs on the first write
    ledger = BatchingLedger(backend, max_pending_rows=100)

    async def run() -> None:
        first = asyncio.ensure_future(ledger.record(make_outcomes(100, seed=38)))
        await asyncio.to_thread(backend.entered.wait, 10)  # taken by the writer: no longer queued
        queued = asyncio.ensure_future(ledger.record(make_outcomes(100, seed=39)))
        await asyncio.sleep(0)  # let it enqueue
        with pytest.raises(LedgerUnavailable, match="behind"):
            await ledger.record(make_outcomes(1, seed=40))
        backend.gate.set()
        assert sum(await first) == 100 and sum(await queued) == 100

    try:
        asyncio.run(run())
        assert ledger.pending_rows == 0 and len(backend.ids) == 200
    finally:
        ledger.close()


def test_a_cancelled_caller_still_gets_its_inserts_counted():
    backend = FakeBackend()
    backend.gate = threading.Event()
    ledger = BatchingLedger(backend)
    counted: list[Outcome] = []
    batch = make_outcomes(5, seed=41)

    async def run() -> None:
        task = asyncio.ensure_future(ledger.record(batch, on_inserted=counted.extend))
        await asyncio.to_thread(backend.entered.wait, 10)
        task.cancel()  # the client hung up while its rows were being written
        backend.gate.set()
        deadline = time.monotonic() + 10
        while len(counted) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # polling for the callback, with a deadline

    try:
        asyncio.run(run())
        assert counted == batch and len(backend.ids) == 5
    finally:
        ledger.close()


def test_close_finishes_queued_writes_then_refuses():
    backend = FakeBackend()
    ledger = BatchingLedger(backend)

    async def run() -> list[list[bool]]:
        calls = [ledger.record(make_outcomes(10, seed=50 + i)) for i in range(5)]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0)  # all queued
        await ledger.aclose()
        return await asyncio.gather(*tasks)

    assert all(all(flags) for flags in asyncio.run(run()))
    assert len(backend.ids) == 50
    with pytest.raises(LedgerUnavailable, match="closed"):
        asyncio.run(ledger.record(make_outcomes(1, seed=60)))
