"""The outcome ledger: every outcome recorded once, by its signed id, across router replicas and restarts.

`open_ledger(url)` picks the implementation from the URL, so the router, the analyzer and the
tests name a ledger the same way (`--outcome-ledger URL`, `MODELRAMP_OUTCOME_LEDGER`):

- `sqlite:///relative.db`, `sqlite:////absolute.db`: one file, for one router (the default);
- `postgresql://user@host/db`, `postgresql+psycopg://...`: shared by all replicas (needs the
  `postgres` extra; the SQLAlchemy spelling is accepted so the audit store's URL can be reused);
- `memory://`: one process, forgets everything at exit (tests of callers only).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.ledger.backend import Backend
from router.ledger.base import (
    MAX_BATCH,
    BucketCount,
    InvalidOutcome,
    LedgerConfigError,
    LedgerCounts,
    LedgerUnavailable,
    Outcome,
    OutcomeLedger,
)
from router.ledger.batching import BatchingLedger
from router.ledger.memory import MemoryLedger

LEDGER_ENV = "MODELRAMP_OUTCOME_LEDGER"
DEFAULT_LEDGER = "sqlite:///modelramp-outcomes.db"

__all__ = [
    "DEFAULT_LEDGER", "LEDGER_ENV", "MAX_BATCH", "BatchingLedger", "BucketCount", "InvalidOutcome", "LedgerConfigError",
    "LedgerCounts", "LedgerUnavailable", "MemoryLedger", "Outcome", "OutcomeLedger", "open_ledger", "redact",
]


def open_ledger(url: str, *, ttl_seconds: float = 86_400.0, max_buckets: int = 1024, max_pending_rows: int = 100_000,
                prune_interval: float = 300.0, clock: Callable[[], float] = time.time) -> OutcomeLedger:
    """The ledger named by `url`; LedgerConfigError for a URL it cannot use. Does not wait for the database:
    while it is unreachable, writes raise LedgerUnavailable (the router still serves predictions)."""
    if not isinstance(url, str) or not url:
        raise LedgerConfigError("the outcome ledger URL is empty")
    if url == "memory://":
        return MemoryLedger(ttl_seconds=ttl_seconds, max_buckets=max_buckets, clock=clock)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    backend: Backend
    if scheme == "sqlite":
        from router.ledger.sqlite import SQLiteBackend, sqlite_path  # noqa: PLC0415 - each dialect loaded when named

        backend = SQLiteBackend(sqlite_path(url))
    elif scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        try:
            from router.ledger.postgres import PostgresBackend  # noqa: PLC0415 - psycopg is optional (the postgres extra)
        except ImportError as err:
            raise LedgerConfigError(
                f"a PostgreSQL outcome ledger needs psycopg 3 ({err}): pip install 'modelramp[postgres]'") from None
        try:
            backend = PostgresBackend(url)
        except Exception as err:  # noqa: BLE001 - psycopg.ProgrammingError (or another) for a malformed URL: startup error
            raise LedgerConfigError(f"bad PostgreSQL ledger URL {redact(url)}: {err}") from None
    else:
        raise LedgerConfigError(
            f"unknown outcome ledger URL {redact(url)}: expected sqlite:///file.db, postgresql://user@host/db or memory://")
    return BatchingLedger(backend, ttl_seconds=ttl_seconds, max_buckets=max_buckets,
                          max_pending_rows=max_pending_rows, prune_interval=prune_interval, clock=clock)


def redact(url: str) -> str:
    """The URL with any password replaced, for logs and error messages."""
    head, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{head}://{creds.split(':', 1)[0]}:***@{host}"
