"""Exact outcome counts from the outcome ledger, beside exposures from Prometheus (or the routers' `/metrics`).

The routers record every outcome once in the ledger (router/ledger) before answering 200, so
its per-(arm, bucket) totals are exact whatever happened to the routers: a pod removed before
Prometheus scraped its last outcomes, a restart that reset its counters. `LedgerSource` wraps
another source: exposures, errors, fallbacks and latency come from it (the ledger holds no
exposures), successes and failures (totals and per bucket) from the ledger, as one more
"instance" whose counters never go down, so the `Recorder` folds it like any replica.

Each read also compares the two: `difference` holds, per arm, what the wrapped source counted
and what the ledger holds, and `modelramp analyze --outcome-ledger URL` says when they differ.
A difference is expected after a router restart or removal (its counters start again at zero,
or its last increments were never scraped) and is no bias in the ledger's counts; the
analysis uses the ledger's.

Which outcomes: those of predictions made since the routers being read started (their counters'
`_created` time at the source's first read, floored to the hour by the ledger), so the ledger's
outcomes and the routers' exposures cover the same time. A router restarted since then makes
the exposures fall short (its counters start again at zero) while the ledger's outcomes do not:
a recorder that keeps its state across looks (the ramp controller, `analyze --serve`) folds the
exposures back; a one-off look cannot, and may hold more outcomes than exposures, which the caller
detects (the look does not validate) and answers with the routers' own outcome counts
(`source_reading`).

The analyzer only reads: the ledger is opened with a TTL so long that its periodic prune deletes
nothing (pruning is the routers' job, with the TTL their config gives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from experiments.live.sources.base import COUNT_FIELDS, Counters, Reading, Source, SourceError, bucket_key, split_key
from router.config import ARMS
from router.ledger import LedgerCounts, LedgerUnavailable, OutcomeLedger, open_ledger, redact

LEDGER_INSTANCE = "outcome-ledger"  # the ledger's counts in a Reading, beside the router replicas
OUTCOME_FIELDS = ("successes", "failures")
_READ_ONLY_TTL = 100 * 365 * 86_400.0  # never prune from the analyzer


@dataclass(frozen=True)
class ArmDifference:
    arm: str
    source: dict[str, int]  # successes, failures as the wrapped source counted them (replicas summed)
    ledger: dict[str, int]  # the same in the ledger (exact)

    @property
    def differs(self) -> bool:
        return self.source != self.ledger


@dataclass(frozen=True)
class OutcomeDifference:
    """One read's outcome counts per arm, from the wrapped source and from the ledger."""

    source: str  # the wrapped source's description
    arms: tuple[ArmDifference, ...]

    @property
    def differs(self) -> bool:
        return any(a.differs for a in self.arms)

    def message(self) -> str:
        """One line for the terminal: which counts differ, and what that means."""
        if not self.differs:
            return f"outcome counts agree: {self.source} and the outcome ledger"
        parts = [f"{a.arm} successes {a.source['successes']} vs {a.ledger['successes']}, "
                 f"failures {a.source['failures']} vs {a.ledger['failures']}" for a in self.arms if a.differs]
        return (f"outcome counts differ between {self.source} and the outcome ledger (exact): " + "; ".join(parts) +
                ". A router restarted, or was removed before its last counts were read")

    def to_dict(self) -> dict[str, object]:
        return {"differs": self.differs, "source": self.source,
                "arms": {a.arm: {"source": a.source, "ledger": a.ledger} for a in self.arms}}


def compare(reading: Reading, counts: LedgerCounts, description: str) -> OutcomeDifference:
    """Per arm, outcomes in `reading` (summed over instances) against the ledger's."""
    totals = reading.totals()
    exact = counts.arm_totals()
    return OutcomeDifference(description, tuple(
        ArmDifference(arm, {f: totals[arm].get(f, 0) for f in OUTCOME_FIELDS},
                      {f: exact.get(arm, {}).get(f, 0) for f in OUTCOME_FIELDS}) for arm in ARMS))


def _is_outcome(key: str) -> bool:
    split = split_key(key)
    return (split[0] if split else key) in OUTCOME_FIELDS


def with_ledger_outcomes(reading: Reading, counts: LedgerCounts) -> Reading:
    """`reading` with every instance's outcomes replaced by the ledger's, as instance LEDGER_INSTANCE."""
    counters: Counters = {}
    for instance, arms in reading.counters.items():
        counters[instance] = {}
        for name, fields in arms.items():
            kept = {k: v for k, v in fields.items() if not _is_outcome(k)}
            kept.update(dict.fromkeys(OUTCOME_FIELDS, 0))
            counters[instance][name] = kept
    ledger: dict[str, dict[str, int]] = {arm: dict.fromkeys(COUNT_FIELDS, 0) for arm in ARMS}
    for cell in counts.cells:
        if cell.arm not in ledger:
            continue  # an arm the analyzer does not know (a test's): not part of this experiment's analysis
        arm = ledger[cell.arm]
        arm["successes"] += cell.successes
        arm["failures"] += cell.failures
        for name, value in (("successes", cell.successes), ("failures", cell.failures)):
            if value:
                key = bucket_key(name, cell.bucket)
                arm[key] = arm.get(key, 0) + value
    counters[LEDGER_INSTANCE] = ledger
    return Reading(time=reading.time, counters=counters, p99_latency_seconds=reading.p99_latency_seconds, started=reading.started)


class LedgerSource(Source):
    """`inner`'s counters with outcomes read from the ledger at `url`; `difference` compares the two at each read."""

    def __init__(self, inner: Source, url: str, *, ledger: OutcomeLedger | None = None):
        self.inner = inner
        self.url = redact(url)
        self.description = f"{inner.description} with outcomes from the ledger at {self.url}"
        self._ledger = ledger if ledger is not None else open_ledger(url, ttl_seconds=_READ_ONLY_TTL)
        self.difference: OutcomeDifference | None = None
        self.source_reading: Reading | None = None  # the last read of `inner`, outcomes as it counted them
        self.since: float | None = None  # predictions from this time on (seconds since the epoch), fixed at the first read
        self._anchored = False

    def read(self, experiment: str, now: datetime | None = None) -> Reading:
        reading = self.inner.read(experiment, now)
        if not self._anchored:
            self._anchored = True
            self.since = min(reading.started.values()) if reading.started else None
        try:
            counts = self._ledger.counts(experiment, self.since)
        except LedgerUnavailable as err:
            raise SourceError(f"the outcome ledger at {self.url} cannot be read: {err}") from None
        self.source_reading = reading
        self.difference = compare(reading, counts, self.inner.description)
        return with_ledger_outcomes(reading, counts)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self._ledger.close()
