"""What a database must offer the batching writer: connect, insert a round, prune, count.

Why an interface this narrow: the writer (router/ledger/batching.py) owns queueing, grouping,
failure and reconnection once for every database, so a dialect is only its SQL and its
transaction boundaries, and a test can stand in a dict for the database (tests/router/ledger).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from router.ledger.base import BucketCount, Outcome


class Backend(ABC):
    """One database dialect; every method runs on a connection it made, in one thread at a time."""

    name: str

    @abstractmethod
    def connect(self) -> Any:
        """A new connection with the schema in place; raises on any failure."""

    @abstractmethod
    def insert(self, conn: Any, rows: list[Outcome]) -> set[bytes]:
        """Insert rows (distinct signatures) and add their per-hour totals, in one transaction; the keys inserted."""

    @abstractmethod
    def prune_chunk(self, conn: Any, before_ms: int, limit: int) -> int:
        """Delete up to `limit` rows issued before `before_ms`; the number deleted."""

    @abstractmethod
    def counts(self, conn: Any, experiment: str, since_ms: int) -> list[BucketCount]:
        """Per-hour totals summed per (arm, bucket) for hours starting at or after since_ms, in one snapshot."""

    @abstractmethod
    def rows(self, conn: Any) -> int: ...

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped either way
            pass
