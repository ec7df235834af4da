"""The analyzer's ledger source: exposures from the routers, outcomes exactly from the ledger, and when the two differ."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from experiments.live.sources import Reading, Recorder, Source
from experiments.live.sources.base import Counters, bucket_key
from experiments.live.sources.ledger import LEDGER_INSTANCE, LedgerSource
from router.ledger import MemoryLedger, Outcome

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
WEIGHTS = {"legacy": 0.5, "model": 0.5}


class Fixed(Source):
    """Readings handed in by the test, one per read."""

    description = "router metrics at test"

    def __init__(self, readings: list[Counters]):
        self.readings = readings
        self.reads = 0

    def read(self, experiment: str, now: datetime | None = None) -> Reading:
        counters = self.readings[min(self.reads, len(self.readings) - 1)]
        self.reads += 1
        return Reading(time=T0 + timedelta(minutes=self.reads), counters=counters)


def arm(exposures: dict[int, int], successes: dict[int, int], failures: dict[int, int]) -> dict[str, int]:
    counts = {"exposures": sum(exposures.values()), "successes": sum(successes.values()), "failures": sum(failures.values()),
              "errors": 0, "fallbacks": 0}
    for name, cells in (("exposures", exposures), ("successes", successes), ("failures", failures)):
        counts.update({bucket_key(name, b): v for b, v in cells.items()})
    return counts


def ledger_with(cells: dict[tuple[str, int, bool], int]) -> MemoryLedger:
    ledger = MemoryLedger()
    batch = [Outcome(f"{a}-{b}-{s}-{i}".encode().ljust(16, b"."), "exp", a, b, s, ledger.clock())
             for (a, b, s), n in cells.items() for i in range(n)]
    asyncio.run(ledger.record(batch))
    return ledger


def test_outcomes_come_from_the_ledger_and_a_difference_is_reported():
    # The routers counted fewer outcomes than the ledger holds: a pod went away before its last scrape.
    routers = {"r1": {"legacy": arm({0: 10, 1: 10}, {0: 4}, {1: 2}), "model": arm({0: 5, 1: 5}, {0: 1}, {})}}
    ledger = ledger_with({("legacy", 0, True): 5, ("legacy", 1, False): 2, ("model", 0, True): 1, ("model", 1, True): 2})
    source = LedgerSource(Fixed([routers]), "memory://", ledger=ledger)
    look = source.read("exp").look(WEIGHTS, buckets=2)
    assert (look.arms["legacy"].exposures, look.arms["legacy"].successes, look.arms["legacy"].failures) == (20, 5, 2)
    assert (look.arms["model"].exposures, look.arms["model"].successes, look.arms["model"].failures) == (10, 3, 0)
    buckets = look.arms["model"].buckets
    assert buckets is not None and buckets.successes == (1, 2) and buckets.exposures == (5, 5), "by bucket, from the ledger"
    difference = source.difference
    assert difference is not None and difference.differs
    assert [a.arm for a in difference.arms if a.differs] == ["legacy", "model"]
    assert "legacy successes 4 vs 5" in difference.message() and "model successes 1 vs 3" in difference.message()
    assert difference.to_dict()["arms"]["model"] == {"source": {"successes": 1, "failures": 0}, "ledger": {"successes": 3, "failures": 0}}


def test_agreeing_counts_say_so():
    routers = {"r1": {"legacy": arm({0: 3}, {0: 2}, {}), "model": arm({0: 1}, {}, {0: 1})}}
    source = LedgerSource(Fixed([routers]), "memory://", ledger=ledger_with({("legacy", 0, True): 2, ("model", 0, False): 1}))
    source.read("exp")
    assert source.difference is not None and not source.difference.differs
    assert "agree" in source.difference.message()


def test_a_router_restart_loses_no_outcome_in_the_recorded_history():
    """The router's counters drop to zero at a restart; the recorder folds its exposures, and outcomes never dropped."""
    before = {"r1": {"legacy": arm({0: 10}, {0: 6}, {}), "model": arm({0: 10}, {0: 3}, {})}}
    after = {"r1": {"legacy": arm({0: 2}, {0: 1}, {}), "model": arm({0: 1}, {}, {})}}
    ledger = ledger_with({("legacy", 0, True): 6, ("model", 0, True): 3})
    source = LedgerSource(Fixed([before, after]), "memory://", ledger=ledger)
    recorder = Recorder("exp")
    recorder.add(source.read("exp"), WEIGHTS, 1)
    asyncio.run(ledger.record([Outcome(b"late-outcome-000", "exp", "legacy", 0, True, ledger.clock())]))
    step = recorder.add(source.read("exp"), WEIGHTS, 1)
    assert step.resets == ("r1",) and LEDGER_INSTANCE not in step.resets
    legacy = step.look.arms["legacy"]
    assert (legacy.exposures, legacy.successes) == (12, 7), "exposures folded across the restart, outcomes exact"
