"""The audit database on SQLite (always) and PostgreSQL (when its binaries are installed)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from experiments.store import DecisionRecord, Store, StoreError, database_url

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def _decision(n: int, **kw) -> DecisionRecord:
    base = dict(experiment="clf-v2", decision="hold", reason=f"look {n}", applied=False, applied_by="test",
                time=T0 + timedelta(minutes=n), stage_percent=1.0, weights_before={"legacy": 0.99, "model": 0.01},
                counts={"model": {"exposures": n}}, statistics={"p_value": 0.5})
    return DecisionRecord(**{**base, **kw})


def test_decisions_round_trip_in_order(store):
    first = store.record_decision(_decision(1))
    store.record_decision(_decision(2, decision="ramp", applied=True, weights_after={"legacy": 0.95, "model": 0.05}))
    store.record_decision(_decision(3, experiment="other"))
    rows = store.decisions("clf-v2")
    assert [r.reason for r in rows] == ["look 1", "look 2"]
    assert rows[0] == first
    assert rows[1].decision == "ramp" and rows[1].applied is True
    assert rows[1].weights_after == {"legacy": 0.95, "model": 0.05}
    assert rows[1].time == T0 + timedelta(minutes=2) and rows[1].time.tzinfo is not None
    assert rows[0].counts == {"model": {"exposures": 1}}
    assert [r.reason for r in store.decisions(limit=2)] == ["look 2", "look 3"]
    assert store.decisions("clf-v2")[0].to_dict()["time"] == "2026-11-23T10:01:00Z"


def test_naive_times_are_refused(store):
    with pytest.raises(Exception, match="timezone-aware"):
        store.record_decision(_decision(1, time=datetime(2026, 1, 1)))


def test_looks_make_a_history_document(store):
    look = {"time": "2026-11-23T10:00:00Z", "weights": {"legacy": 0.99, "model": 0.01},
            "arms": {"legacy": {"exposures": 9901, "successes": 8712}, "model": {"exposures": 99, "successes": 91}}}
    store.append_look("clf-v2", T0, look, source_state={"counters": {}})
    store.append_look("other", T0, look, source_state={})
    assert store.history_document("clf-v2") == {"experiment": "clf-v2", "looks": [look]}
    assert store.looks("clf-v2")[0].source_state == {"counters": {}}


def test_lease_is_exclusive_until_it_expires(store):
    assert store.acquire_lease("ramp/clf-v2", "a", ttl_seconds=30, now=T0)
    assert not store.acquire_lease("ramp/clf-v2", "b", ttl_seconds=30, now=T0 + timedelta(seconds=10))
    assert store.acquire_lease("ramp/clf-v2", "a", ttl_seconds=30, now=T0 + timedelta(seconds=20))  # renewal
    assert store.lease_holder("ramp/clf-v2", now=T0 + timedelta(seconds=49))[0] == "a"
    # a's lease ran out at T0+50s: b takes over, and a cannot renew any more.
    assert store.acquire_lease("ramp/clf-v2", "b", ttl_seconds=30, now=T0 + timedelta(seconds=51))
    assert not store.acquire_lease("ramp/clf-v2", "a", ttl_seconds=30, now=T0 + timedelta(seconds=52))
    store.release_lease("ramp/clf-v2", "a")  # not a's to release: no effect
    assert store.lease_holder("ramp/clf-v2", now=T0 + timedelta(seconds=52))[0] == "b"
    store.release_lease("ramp/clf-v2", "b")
    assert store.lease_holder("ramp/clf-v2") is None
    assert store.acquire_lease("ramp/clf-v2", "a", ttl_seconds=30)


def test_only_one_of_many_racing_controllers_gets_the_lease(store):
    barrier = threading.Barrier(6)
    won: list[str] = []

    def contender(name: str) -> None:
        own = Store(store.engine)  # one Store per controller, one database
        barrier.wait()
        if own.acquire_lease("ramp/race", name, ttl_seconds=60):
            won.append(name)

    threads = [threading.Thread(target=contender, args=(f"c{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert store.lease_holder("ramp/race")[0] == won[0]


def test_gate_runs_record_test_set_uses(store):
    assert store.test_set_uses("sha256:abc") == []
    first = store.record_gate_run("sha256:abc", "churn", 1, {"accuracy": 0.84, "passed": True}, honest=True, time=T0)
    store.record_gate_run("sha256:abc", "churn", 2, {"accuracy": 0.86, "passed": True}, honest=False,
                          time=T0 + timedelta(hours=1))
    store.record_gate_run("sha256:def", "other", "7", {"accuracy": 0.9}, honest=True)
    uses = store.test_set_uses("sha256:abc")
    assert [(u.model_version, u.honest) for u in uses] == [("1", True), ("2", False)]
    assert uses[0] == first and uses[0].result == {"accuracy": 0.84, "passed": True}
    assert [r.model_version for r in store.gate_runs("churn")] == ["1", "2"]
    assert len(store.gate_runs()) == 3


def test_database_url_from_path_or_url(tmp_path):
    assert database_url(tmp_path / "a.db") == f"sqlite:///{tmp_path}/a.db"
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_unusable_database_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open the audit database"):
        Store.open(tmp_path / "no-such-dir" / "audit.db")
    with pytest.raises(StoreError, match="cannot use database"):
        Store.open("nosuchdialect://x")
