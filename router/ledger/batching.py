"""The batching writer: one thread per ledger groups every caller's rows into one transaction per round.

Why a thread and not the event loop: SQLite and psycopg's blocking calls then never run on the
loop that answers predictions, and one code path serves both databases. Why group commit: while
one write is in flight the next callers' rows queue up, so the batch grows with the load by
itself (no timer, no added latency when idle) and a few thousand outcomes per second cost a few
hundred round trips. The queue is bounded in rows and fails closed (LedgerUnavailable) when
full or while the database is down, so memory stays bounded and callers never hang on an outage;
the thread reconnects with backoff and never dies of a database error.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from router.ledger.backend import Backend
from router.ledger.base import (
    PRUNE_MARGIN_SECONDS,
    ROLLUP_MS,
    LedgerCounts,
    LedgerUnavailable,
    OnInserted,
    Outcome,
    OutcomeLedger,
    check_batch,
)

log = logging.getLogger("modelramp.ledger")

PRUNE_CHUNK = 20_000  # rows per delete: a long delete would stall the writes queued behind it


@dataclass
class _Request:
    outcomes: list[Outcome]
    future: asyncio.Future[list[bool]]  # of the caller's loop: only that loop's thread may resolve it
    loop: asyncio.AbstractEventLoop
    on_inserted: OnInserted | None
    flags: list[bool] | None = None
    new: list[Outcome] | None = None


class BatchingLedger(OutcomeLedger):
    """An OutcomeLedger over a Backend, written by one background thread."""

    def __init__(self, backend: Backend, *, ttl_seconds: float = 86_400.0, max_buckets: int = 1024,
                 max_pending_rows: int = 100_000, max_rows_per_write: int = 10_000,
                 prune_interval: float = 300.0, max_backoff: float = 2.0, clock: Callable[[], float] = time.time):
        self.backend = backend
        self.ttl_seconds = ttl_seconds
        self.max_buckets = max_buckets
        self.max_pending_rows = max_pending_rows
        self.max_rows_per_write = max_rows_per_write
        self.prune_interval = prune_interval
        self.max_backoff = max_backoff
        self.clock = clock
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._pending_rows = 0
        self._closed = False
        self._down: str | None = None  # why writes fail fast, while the database is unreachable
        self._next_connect = 0.0  # monotonic time of the next reconnection attempt
        self._backoff = 0.05
        self._conn: Any = None  # the writer thread's own connection
        self._reader_lock = threading.Lock()
        self._reader: Any = None  # counts and rows, apart from the writer so the analyzer never waits on it
        self._next_prune = time.monotonic()  # prune once at start: a ledger reopened after a day has work
        self.inserted_total = 0  # rows this instance inserted (a gauge for operators)
        self._thread = threading.Thread(target=self._run, name=f"ledger-writer-{backend.name}", daemon=True)
        self._thread.start()

    # -- callers (any thread, usually the event loop) ------------------------------------------

    async def record(self, outcomes: Sequence[Outcome], on_inserted: OnInserted | None = None) -> list[bool]:
        batch = check_batch(outcomes, now=self.clock(), ttl_seconds=self.ttl_seconds, max_buckets=self.max_buckets)
        if not batch:
            return []
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise LedgerUnavailable("the outcome ledger is closed (router shutting down)")
            if self._down is not None:
                raise LedgerUnavailable(f"the outcome ledger is unavailable: {self._down}",
                                        retry_after=self._next_connect - time.monotonic())
            if self._pending_rows + len(batch) > self.max_pending_rows:
                raise LedgerUnavailable(f"the outcome ledger is behind: {self._pending_rows} outcomes queued")
            self._queue.append(_Request(batch, future, loop, on_inserted))
            self._pending_rows += len(batch)
            self._cond.notify()
        flags: list[bool] = await future
        return flags

    @property
    def available(self) -> bool:
        return self._down is None and not self._closed

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def counts(self, experiment: str, since: float | None = None) -> LedgerCounts:
        since_ms = 0 if since is None else int(since * 1000) // ROLLUP_MS * ROLLUP_MS
        cells = self._read(lambda conn: self.backend.counts(conn, experiment, since_ms))
        return LedgerCounts(experiment, None if since is None else since_ms / 1000, tuple(cells))

    def rows(self) -> int:
        count: int = self._read(self.backend.rows)
        return count

    def prune(self, now: float | None = None) -> int:
        before_ms = self._prune_before(now)
        total = 0
        while True:
            n: int = self._read(lambda conn: self.backend.prune_chunk(conn, before_ms, PRUNE_CHUNK))
            total += n
            if n < PRUNE_CHUNK:
                return total

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        with self._reader_lock:
            if self._reader is not None:
                self.backend.close(self._reader)
                self._reader = None

    def _prune_before(self, now: float | None) -> int:
        now = self.clock() if now is None else now
        return int((now - self.ttl_seconds - PRUNE_MARGIN_SECONDS) * 1000)

    def _read(self, query: Callable[[Any], Any]) -> Any:
        with self._reader_lock:
            try:
                if self._reader is None:
                    self._reader = self.backend.connect()
                return query(self._reader)
            except Exception as err:
                if self._reader is not None:
                    self.backend.close(self._reader)
                    self._reader = None
                raise LedgerUnavailable(f"the outcome ledger cannot be read: {type(err).__name__}: {err}") from err

    # -- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            requests: list[_Request] = []
            action = "wait"
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._conn is None:
                        if self._closed and (self._down is not None or not self._queue):
                            self._fail_queued("the ledger closed while unavailable")
                            action = "stop"
                            break
                        if now >= self._next_connect:
                            action = "connect"
                            break
                        self._cond.wait(self._next_connect - now)
                    elif self._queue:
                        action, requests = "write", self._take()
                        break
                    elif self._closed:
                        action = "stop"
                        break
                    elif now >= self._next_prune:
                        action = "prune"
                        break
                    else:
                        self._cond.wait(self._next_prune - now)
            if action == "stop":
                break
            try:
                if action == "connect":
                    self._connect()
                elif action == "write":
                    self._write(requests)
                else:
                    self._prune_step()
            except Exception:
                log.exception("outcome ledger writer: unexpected error")
                self._fail(requests, LedgerUnavailable("the outcome ledger failed unexpectedly"))
        if self._conn is not None:
            self.backend.close(self._conn)
            self._conn = None

    def _take(self) -> list[_Request]:
        """Requests for one write, whole (a caller's batch is one transaction), up to max_rows_per_write."""
        taken: list[_Request] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0].outcomes) <= self.max_rows_per_write):
            request = self._queue.popleft()
            self._pending_rows -= len(request.outcomes)
            if not request.future.cancelled():  # a caller gone before the write: its rows are not written
                taken.append(request)
                rows += len(request.outcomes)
        return taken

    def _connect(self) -> None:
        try:
            self._conn = self.backend.connect()
        except Exception as err:  # noqa: BLE001 - any failure to connect is an outage, logged once
            self._go_down(err)
            return
        if self._down is not None:
            log.warning("outcome ledger %s is available again", self.backend.name)
        with self._cond:
            self._down, self._backoff = None, 0.05

    def _write(self, requests: list[_Request]) -> None:
        first: dict[bytes, Outcome] = {}
        for request in requests:
            for o in request.outcomes:
                first.setdefault(o.signature, o)  # a key twice in one round: the earliest caller gets it
        try:
            inserted = self.backend.insert(self._conn, list(first.values()))
        except Exception as err:  # noqa: BLE001 - every failure fails this round closed, then reconnect
            self._fail(requests, self._go_down(err))
            return
        self.inserted_total += len(inserted)
        for request in requests:
            request.flags, request.new = [], []
            for o in request.outcomes:
                is_new = o.signature in inserted
                if is_new:
                    inserted.discard(o.signature)
                    request.new.append(o)
                request.flags.append(is_new)
        _hand_back(requests, None)

    def _prune_step(self) -> None:
        try:
            n = self.backend.prune_chunk(self._conn, self._prune_before(None), PRUNE_CHUNK)
        except Exception as err:  # noqa: BLE001
            self._go_down(err)
            return
        # A full chunk means more to delete: go on after the writes queued meanwhile.
        self._next_prune = time.monotonic() + (0 if n == PRUNE_CHUNK else self.prune_interval)

    def _go_down(self, err: Exception) -> LedgerUnavailable:
        if self._conn is not None:
            self.backend.close(self._conn)
            self._conn = None
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        with self._cond:
            if self._down is None:
                log.error("outcome ledger %s unavailable, outcome reports get 503 until it returns: %s", self.backend.name, reason)
            self._down = reason
            self._next_connect = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.max_backoff)
            self._fail_queued(reason)
        return LedgerUnavailable(f"the outcome ledger is unavailable: {reason}", retry_after=self._backoff)

    def _fail_queued(self, reason: str) -> None:
        """Fail every queued request at once (caller holds the lock): they would only wait for the same outage."""
        error = LedgerUnavailable(f"the outcome ledger is unavailable: {reason}",
                                  retry_after=self._next_connect - time.monotonic())
        failed = list(self._queue)
        self._queue.clear()
        self._pending_rows = 0
        _hand_back(failed, error)

    @staticmethod
    def _fail(requests: list[_Request], error: LedgerUnavailable) -> None:
        _hand_back([r for r in requests if r.flags is None], error)


def _hand_back(requests: list[_Request], error: LedgerUnavailable | None) -> None:
    """Resolve the callers' futures on their loops: one wake-up per loop per round, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
    for request in requests:
        by_loop.setdefault(request.loop, []).append(request)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, group, error)
        except RuntimeError:  # the caller's loop is closed: nobody is left to answer or count for
            log.warning("outcome ledger: %d reports finished after their event loop closed", len(group))


def _resolve(requests: list[_Request], error: LedgerUnavailable | None) -> None:
    """On the caller's loop: count first (even for a caller cancelled meanwhile), then wake the caller."""
    for request in requests:
        if error is None and request.on_inserted is not None and request.new:
            try:
                request.on_inserted(request.new)
            except Exception:
                log.exception("outcome ledger: on_inserted failed")
        if not request.future.done():
            if error is None and request.flags is not None:
                request.future.set_result(request.flags)
            else:
                request.future.set_exception(error or LedgerUnavailable("the outcome ledger wrote no answer for this report"))
