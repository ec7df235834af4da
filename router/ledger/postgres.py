"""The shared ledger: PostgreSQL through psycopg 3, for every router replica of a deployment (Kubernetes).

Why one statement per round: the rows travel as six arrays (`unnest`), and a data-modifying CTE
inserts them with ON CONFLICT DO NOTHING, adds the new rows' per-hour totals and returns the new
keys, so a round is one round trip and one autocommitted transaction whatever its size. Rows and
totals are written in key order, so two replicas inserting overlapping batches wait for each other
instead of deadlocking (a deadlock is still retried: the statement rolled back whole). The
connection has timeouts and TCP keepalives, so a database that hangs or vanishes fails the round
(503) within seconds instead of holding callers. psycopg is imported here only, lazily by
`open_ledger`, so a router on SQLite runs without the `postgres` extra.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from router.ledger.backend import Backend
from router.ledger.base import ROLLUP_MS, BucketCount, Outcome

_LOCK_ID = 0x6D72_6C65  # "mrle": serialises schema creation between replicas starting together

_SCHEMA = """
CREATE TABLE IF NOT EXISTS modelramp_outcome_ids (
    signature bytea PRIMARY KEY,
    experiment text NOT NULL,
    arm text NOT NULL,
    bucket integer NOT NULL,
    success boolean NOT NULL,
    issued_ms bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS modelramp_outcome_ids_issued ON modelramp_outcome_ids (issued_ms);
CREATE TABLE IF NOT EXISTS modelramp_outcome_totals (
    experiment text NOT NULL,
    arm text NOT NULL,
    bucket integer NOT NULL,
    hour_ms bigint NOT NULL,
    successes bigint NOT NULL,
    failures bigint NOT NULL,
    PRIMARY KEY (experiment, arm, bucket, hour_ms)
);
"""

_INSERT = f"""
WITH input AS (
    SELECT * FROM unnest(%s::bytea[], %s::text[], %s::text[], %s::integer[], %s::boolean[], %s::bigint[])
        AS i (signature, experiment, arm, bucket, success, issued_ms)
), new AS (
    INSERT INTO modelramp_outcome_ids (signature, experiment, arm, bucket, success, issued_ms)
    SELECT * FROM input ORDER BY signature
    ON CONFLICT (signature) DO NOTHING
    RETURNING signature, experiment, arm, bucket, success, issued_ms
), totals AS (
    INSERT INTO modelramp_outcome_totals AS t (experiment, arm, bucket, hour_ms, successes, failures)
    SELECT experiment, arm, bucket, issued_ms - issued_ms %% {ROLLUP_MS},
           count(*) FILTER (WHERE success), count(*) FILTER (WHERE NOT success)
    FROM new GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (experiment, arm, bucket, hour_ms) DO UPDATE
        SET successes = t.successes + excluded.successes, failures = t.failures + excluded.failures
)
SELECT signature FROM new
"""
_COUNTS = ("SELECT arm, bucket, SUM(successes)::bigint, SUM(failures)::bigint FROM modelramp_outcome_totals "
           "WHERE experiment = %s AND hour_ms >= %s GROUP BY arm, bucket ORDER BY arm, bucket")
_PRUNE = ("DELETE FROM modelramp_outcome_ids WHERE signature IN "
          "(SELECT signature FROM modelramp_outcome_ids WHERE issued_ms < %s LIMIT %s)")

# Defaults a URL may override: fail a round within seconds when the database hangs or vanishes.
_DEFAULTS = {
    "connect_timeout": "3",
    "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2", "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "options": "-c statement_timeout=10000",
    "application_name": "modelramp-ledger",
}


def conninfo(url: str) -> dict[str, Any]:
    """psycopg connection parameters from a `postgresql://` or SQLAlchemy-style `postgresql+psycopg://` URL."""
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url[len("postgresql+psycopg://"):]
    params = conninfo_to_dict(url)
    host = str(params.get("host", ""))
    for key, value in _DEFAULTS.items():
        if key.startswith(("keepalives", "tcp_")) and host.startswith("/"):
            continue  # a Unix socket has no TCP options
        params.setdefault(key, value)
    return params


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, url: str):
        self.params = conninfo(url)  # parsed now: a malformed URL fails at startup, not at the first outcome

    def connect(self) -> psycopg.Connection:
        conn = psycopg.connect(**self.params, autocommit=True)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                conn.execute(_SCHEMA)
        except Exception:
            conn.close()
            raise
        return conn

    def insert(self, conn: psycopg.Connection, rows: list[Outcome]) -> set[bytes]:
        columns = ([o.signature for o in rows], [o.experiment for o in rows], [o.arm for o in rows],
                   [o.bucket for o in rows], [o.success for o in rows], [int(o.issued_at * 1000) for o in rows])
        for attempt in range(3):
            try:
                return {bytes(sig) for (sig,) in conn.execute(_INSERT, columns).fetchall()}
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == 2:
                    raise  # rolled back each time: failing the round closed is still safe
        raise AssertionError("unreachable")

    def prune_chunk(self, conn: psycopg.Connection, before_ms: int, limit: int) -> int:
        return conn.execute(_PRUNE, (before_ms, limit)).rowcount

    def counts(self, conn: psycopg.Connection, experiment: str, since_ms: int) -> list[BucketCount]:
        return [BucketCount(arm, bucket, s, f) for arm, bucket, s, f in conn.execute(_COUNTS, (experiment, since_ms))]

    def rows(self, conn: psycopg.Connection) -> int:
        row = conn.execute("SELECT COUNT(*) FROM modelramp_outcome_ids").fetchone()
        return int(row[0]) if row else 0
