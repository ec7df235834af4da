"""The embedded ledger: one SQLite file (stdlib sqlite3, WAL), for one router (`modelramp up`, the demo).

Why these settings: WAL lets the analyzer read while the router writes; `synchronous=FULL`
makes each commit durable before the router answers 200 (one fsync per batch, not per outcome,
thanks to the batching writer); `busy_timeout` rides out another process's short write (a second
router or `modelramp analyze` on the same file), after which the batch fails closed (503).
Each round is one IMMEDIATE transaction: INSERT ... ON CONFLICT DO NOTHING per row (in-process,
so per-row statements cost microseconds, and `rowcount` says which were new), then the per-hour
totals of the new rows upserted.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from pathlib import Path

from router.ledger.backend import Backend
from router.ledger.base import ROLLUP_MS, BucketCount, LedgerConfigError, Outcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS modelramp_outcome_ids (
    signature BLOB PRIMARY KEY,
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    success INTEGER NOT NULL,
    issued_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS modelramp_outcome_ids_issued ON modelramp_outcome_ids (issued_ms);
CREATE TABLE IF NOT EXISTS modelramp_outcome_totals (
    experiment TEXT NOT NULL,
    arm TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    hour_ms INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    PRIMARY KEY (experiment, arm, bucket, hour_ms)
);
"""

_INSERT = ("INSERT INTO modelramp_outcome_ids (signature, experiment, arm, bucket, success, issued_ms) "
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (signature) DO NOTHING")
_ADD_TOTALS = (
    "INSERT INTO modelramp_outcome_totals (experiment, arm, bucket, hour_ms, successes, failures) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (experiment, arm, bucket, hour_ms) DO UPDATE SET "
    "successes = successes + excluded.successes, failures = failures + excluded.failures")
_COUNTS = ("SELECT arm, bucket, SUM(successes), SUM(failures) FROM modelramp_outcome_totals "
           "WHERE experiment = ? AND hour_ms >= ? GROUP BY arm, bucket ORDER BY arm, bucket")
_PRUNE = ("DELETE FROM modelramp_outcome_ids WHERE rowid IN "
          "(SELECT rowid FROM modelramp_outcome_ids WHERE issued_ms < ? LIMIT ?)")


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:///relative.db` or `sqlite:////absolute.db` URL (SQLAlchemy's spelling, as the audit store)."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or "?" in path:
        raise LedgerConfigError(
            f"bad SQLite ledger URL {url!r}: expected sqlite:///relative/file.db or sqlite:////absolute/file.db "
            "(a file: an in-memory ledger forgets every id at restart)")
    return Path(path)


class SQLiteBackend(Backend):
    name = "sqlite"
    # Switching to WAL takes an exclusive lock without waiting for a busy one, so the writer's and
    # the reader's first connections would fail each other: open them one at a time.
    _setup = threading.Lock()

    def __init__(self, path: Path, busy_timeout: float = 5.0):
        if sqlite3.sqlite_version_info < (3, 24, 0):  # upserts (ON CONFLICT ... DO UPDATE) arrived in 3.24
            raise LedgerConfigError(f"the SQLite ledger needs SQLite 3.24 or later; Python links {sqlite3.sqlite_version}")
        if not path.parent.is_dir():
            raise LedgerConfigError(f"the SQLite ledger's folder {path.parent} does not exist")
        self.path = path
        self.busy_timeout = busy_timeout

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a round is exactly one transaction.
        with self._setup:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # persistent: set once per file
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except Exception:
                conn.close()
                raise
        return conn

    def insert(self, conn: sqlite3.Connection, rows: list[Outcome]) -> set[bytes]:
        inserted: set[bytes] = set()
        totals: Counter[tuple[str, str, int, int, bool]] = Counter()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock first: no deadlock-prone lock upgrade
        try:
            for o in rows:
                issued_ms = int(o.issued_at * 1000)
                if conn.execute(_INSERT, (o.signature, o.experiment, o.arm, o.bucket, int(o.success), issued_ms)).rowcount:
                    inserted.add(o.signature)
                    totals[(o.experiment, o.arm, o.bucket, issued_ms // ROLLUP_MS * ROLLUP_MS, o.success)] += 1
            cells: dict[tuple[str, str, int, int], list[int]] = {}
            for (experiment, arm, bucket, hour, success), n in totals.items():
                cells.setdefault((experiment, arm, bucket, hour), [0, 0])[0 if success else 1] += n
            conn.executemany(_ADD_TOTALS, [(*key, s, f) for key, (s, f) in cells.items()])
            conn.execute("COMMIT")
        except BaseException:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the original error says more; the writer drops this connection anyway
            raise
        return inserted

    def prune_chunk(self, conn: sqlite3.Connection, before_ms: int, limit: int) -> int:
        # Autocommit statement: one chunk is its own short write transaction.
        return conn.execute(_PRUNE, (before_ms, limit)).rowcount

    def counts(self, conn: sqlite3.Connection, experiment: str, since_ms: int) -> list[BucketCount]:
        return [BucketCount(arm, bucket, s, f) for arm, bucket, s, f in conn.execute(_COUNTS, (experiment, since_ms))]

    def rows(self, conn: sqlite3.Connection) -> int:
        count: int = conn.execute("SELECT COUNT(*) FROM modelramp_outcome_ids").fetchone()[0]
        return count
