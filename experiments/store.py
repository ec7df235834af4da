"""The audit database: ramp decisions, recorded looks, controller leases, gate runs and test-set uses,
and the problem patterns database ("Machine Learning in Real Life, part 2"; operations in `experiments.quality.problems`).

SQLite by default (a path), the same schema on PostgreSQL through a URL
(`postgresql+psycopg://user@host/db`; install the `postgres` extra for the driver). Written with
SQLAlchemy Core so both dialects run the same statements. Rows are append-only except the lease,
which is the one piece of shared mutable state (who may apply weights right now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

DEFAULT_DB = "modelramp.db"


class StoreError(RuntimeError):
    """The audit database cannot be opened or written; the message says which and why."""


def inserted_id(result: sa.CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just wrote."""
    key = result.inserted_primary_key
    if key is None:
        raise StoreError("the database returned no primary key for the inserted row")
    return int(key[0])


class _UtcDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the dialect keeps."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store times must be timezone-aware")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


metadata = sa.MetaData()

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(63), nullable=False, index=True),
    sa.Column("time", _UtcDateTime, nullable=False),
    sa.Column("stage_percent", sa.Float, nullable=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("applied", sa.Boolean, nullable=False),
    sa.Column("applied_by", sa.String(200), nullable=False),
    sa.Column("weights_before", sa.JSON, nullable=True),
    sa.Column("weights_after", sa.JSON, nullable=True),
    sa.Column("counts", sa.JSON, nullable=True),
    sa.Column("statistics", sa.JSON, nullable=True),
)

looks = sa.Table(
    "looks", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(63), nullable=False, index=True),
    sa.Column("time", _UtcDateTime, nullable=False),
    # The look as analysed (history JSON format, counter resets folded in), and the recorder's
    # state after it (raw counters and creation time per router replica) to fold the next look.
    sa.Column("look", sa.JSON, nullable=False),
    sa.Column("source_state", sa.JSON, nullable=False),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", _UtcDateTime, nullable=False),
)

gate_runs = sa.Table(
    "gate_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("test_set_fingerprint", sa.String(128), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("time", _UtcDateTime, nullable=False),
    # False when the test set had been used before (--allow-reuse): the estimate is optimistic.
    sa.Column("honest", sa.Boolean, nullable=False),
)


# Known problems of the model ("Machine Learning in Real Life, part 2"), their patterns, and every evaluation of them. A pattern
# is keyed by a hash of its input and expected output, so importing the same file twice adds nothing.
problems = sa.Table(
    "problems", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    # A regression problem is a canary test: a candidate that gets worse on it fails the gate.
    sa.Column("regression", sa.Boolean, nullable=False),
    sa.Column("min_accuracy", sa.Float, nullable=True),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.UniqueConstraint("model_name", "name"),
)

patterns = sa.Table(
    "patterns", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("problem_id", sa.Integer, sa.ForeignKey("problems.id"), nullable=False, index=True),
    sa.Column("key", sa.String(80), nullable=False),
    sa.Column("instance", sa.JSON, nullable=False),
    sa.Column("expected", sa.Integer, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.UniqueConstraint("problem_id", "key"),
)

evaluations = sa.Table(
    "evaluations", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("candidate_version", sa.Integer, nullable=False),
    sa.Column("versions", sa.JSON, nullable=False),
    sa.Column("server", sa.String(300), nullable=False),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("time", _UtcDateTime, nullable=False),
)

pattern_results = sa.Table(
    "pattern_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False, index=True),
    sa.Column("pattern_id", sa.Integer, sa.ForeignKey("patterns.id"), nullable=False, index=True),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("predicted", sa.Integer, nullable=False),
    sa.Column("correct", sa.Boolean, nullable=False),
)

problem_results = sa.Table(
    "problem_results", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("evaluation_id", sa.Integer, sa.ForeignKey("evaluations.id"), nullable=False, index=True),
    sa.Column("problem_id", sa.Integer, sa.ForeignKey("problems.id"), nullable=False, index=True),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
)

@dataclass(frozen=True)
class DecisionRecord:
    """One row of the audit log: a decision, applied or not, and everything it rested on."""

    experiment: str
    decision: str
    reason: str
    applied: bool
    applied_by: str
    time: datetime
    stage_percent: float | None = None
    weights_before: Mapping[str, float] | None = None
    weights_after: Mapping[str, float] | None = None
    counts: Mapping[str, Any] | None = None
    statistics: Mapping[str, Any] | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "time": _iso(self.time)}


@dataclass(frozen=True)
class GateRun:
    """One evaluation of a model version on a test set (also: one use of that test set)."""

    test_set_fingerprint: str
    model_name: str
    model_version: str
    result: Mapping[str, Any]
    time: datetime
    honest: bool
    id: int | None = None


@dataclass(frozen=True)
class StoredLook:
    """A look as the controller stored it: `look` in history JSON form, `source_state` per replica."""

    experiment: str
    time: datetime
    look: dict[str, Any]
    source_state: dict[str, Any] = field(default_factory=dict)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def database_url(target: str | Path) -> str:
    """A SQLAlchemy URL from a path (SQLite) or a URL; `postgresql://` gets the psycopg driver."""
    text = str(target)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser()}"
    if text.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


class Store:
    """The audit database behind a SQLAlchemy engine; every method is one short transaction."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        try:
            metadata.create_all(engine)
        except SQLAlchemyError as err:
            cause = getattr(err, "orig", None) or err
            raise StoreError(f"cannot open the audit database {engine.url.render_as_string()}: {cause}") from None

    @classmethod
    def open(cls, target: str | Path = DEFAULT_DB) -> Store:
        """Open (and create if needed) the database at a SQLite path or a database URL."""
        url = database_url(target)
        # A busy SQLite file (a second controller) waits for the lock instead of failing at once.
        connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
        try:
            engine = sa.create_engine(url, connect_args=connect_args)
        except (SQLAlchemyError, ImportError, ValueError) as err:
            raise StoreError(f"cannot use database {target!s}: {err}") from None
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # Decisions ---------------------------------------------------------------------------------

    def record_decision(self, record: DecisionRecord) -> DecisionRecord:
        """Append a decision to the audit log; returns it with its id."""
        values = {k: getattr(record, k) for k in record.__dataclass_fields__ if k != "id"}
        for k in ("weights_before", "weights_after", "counts", "statistics"):
            values[k] = None if values[k] is None else dict(values[k])
        with self.engine.begin() as conn:
            row_id = inserted_id(conn.execute(decisions.insert().values(**values)))
        return DecisionRecord(**{**values, "id": row_id})

    def decisions(self, experiment: str | None = None, limit: int | None = None) -> list[DecisionRecord]:
        """Decisions oldest first (the newest `limit` of them), optionally for one experiment."""
        q = sa.select(decisions).order_by(decisions.c.id.desc())
        if experiment is not None:
            q = q.where(decisions.c.experiment == experiment)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [DecisionRecord(**row) for row in reversed(rows)]

    # Looks (the persisted history) -------------------------------------------------------------

    def append_look(self, experiment: str, time: datetime, look: Mapping[str, Any], source_state: Mapping[str, Any]) -> None:
        """Record one look of an experiment's history."""
        with self.engine.begin() as conn:
            conn.execute(looks.insert().values(experiment=experiment, time=time, look=dict(look),
                                              source_state=dict(source_state)))

    def looks(self, experiment: str) -> list[StoredLook]:
        """All looks of an experiment, in the order they were taken."""
        q = sa.select(looks).where(looks.c.experiment == experiment).order_by(looks.c.id)
        with self.engine.connect() as conn:
            return [StoredLook(r.experiment, r.time, r.look, r.source_state) for r in conn.execute(q)]

    def history_document(self, experiment: str) -> dict[str, Any]:
        """The experiment's looks as a history JSON document (docs/architecture.md format)."""
        return {"experiment": experiment, "looks": [s.look for s in self.looks(experiment)]}

    # Leases ------------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl_seconds: float, now: datetime | None = None) -> bool:
        """Take or renew the lease `name` for `holder` until now + ttl; False if someone else holds it.

        Each step is one atomic statement (insert, or update guarded by holder/expiry), so two
        controllers racing on SQLite or PostgreSQL cannot both win.
        """
        now = now or _now()
        expires = now + timedelta(seconds=ttl_seconds)
        try:
            with self.engine.begin() as conn:
                conn.execute(leases.insert().values(name=name, holder=holder, expires_at=expires))
            return True
        except IntegrityError:
            pass  # someone holds or held it: try to renew or take over an expired one
        with self.engine.begin() as conn:
            result = conn.execute(
                leases.update()
                .where(leases.c.name == name)
                .where(sa.or_(leases.c.holder == holder, leases.c.expires_at < now))
                .values(holder=holder, expires_at=expires)
            )
        return result.rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back early (only if `holder` still has it)."""
        with self.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name).where(leases.c.holder == holder))

    def lease_holder(self, name: str, now: datetime | None = None) -> tuple[str, datetime] | None:
        """Who holds the lease and until when, or None if it is free or expired."""
        now = now or _now()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(leases).where(leases.c.name == name)).first()
        if row is None or row.expires_at < now:
            return None
        return row.holder, row.expires_at

    # Gate runs and test-set uses ---------------------------------------------------------------

    def record_gate_run(self, test_set_fingerprint: str, model_name: str, model_version: str | int,
                        result: Mapping[str, Any], honest: bool, time: datetime | None = None) -> GateRun:
        """Record one gate run, which is also one use of the test set."""
        run = GateRun(test_set_fingerprint, model_name, str(model_version), dict(result), time or _now(), honest)
        values = {k: getattr(run, k) for k in run.__dataclass_fields__ if k != "id"}
        with self.engine.begin() as conn:
            row_id = inserted_id(conn.execute(gate_runs.insert().values(**values)))
        return GateRun(**{**values, "id": row_id})

    def test_set_uses(self, test_set_fingerprint: str) -> list[GateRun]:
        """Every earlier gate run on this test set, oldest first (empty: the test set is pristine)."""
        q = (sa.select(gate_runs).where(gate_runs.c.test_set_fingerprint == test_set_fingerprint)
             .order_by(gate_runs.c.id))
        with self.engine.connect() as conn:
            return [GateRun(**row) for row in conn.execute(q).mappings()]

    def gate_runs(self, model_name: str | None = None) -> list[GateRun]:
        """All gate runs, oldest first, optionally for one model."""
        q = sa.select(gate_runs).order_by(gate_runs.c.id)
        if model_name is not None:
            q = q.where(gate_runs.c.model_name == model_name)
        with self.engine.connect() as conn:
            return [GateRun(**row) for row in conn.execute(q).mappings()]
