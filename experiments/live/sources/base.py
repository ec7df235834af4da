"""The data-source interface: read the routers' cumulative counters for one experiment at one moment.

A source answers "what do the counters say now?" as a `Reading`: counts per router replica
(`instance`) and arm, plus the latency p99 per arm. Keeping replicas apart is what lets the
`Recorder` fold a router restart (its counters start again at zero) into a monotonic history
instead of seeing counts go down. `Reading.look()` sums replicas for a one-off look.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from experiments.config import ExperimentConfig
from experiments.live.history import ArmCounts, Look
from experiments.live.promql import COUNTER_FIELDS, CREATED_SAMPLES
from router.config import ARMS

COUNT_FIELDS = ("exposures", "successes", "failures", "errors", "fallbacks")

# instance -> arm -> field -> cumulative value
Counters = dict[str, dict[str, dict[str, int]]]


class SourceError(RuntimeError):
    """The source could not be read (unreachable, bad answer); the message names it and why."""


@dataclass(frozen=True)
class Reading:
    """Cumulative counters of one experiment per (instance, arm) at `time`, and p99 latency per arm.

    `started` holds, per instance that exposes `_created` samples, when its counters were created
    (seconds since the epoch): a restart moves it forward even when counts did not go down.
    """

    time: datetime
    counters: Counters
    p99_latency_seconds: Mapping[str, float | None] = field(default_factory=dict)
    started: Mapping[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when no replica reported any request for this experiment."""
        return not any(c.get("exposures", 0) for arms in self.counters.values() for c in arms.values())

    def totals(self) -> dict[str, dict[str, int]]:
        """Counts per arm summed over replicas (every arm and field present, zero if unseen)."""
        out = {arm: dict.fromkeys(COUNT_FIELDS, 0) for arm in ARMS}
        for arms in self.counters.values():
            for arm, counts in arms.items():
                for name, value in counts.items():
                    out[arm][name] += value
        return out

    def look(self, weights: Mapping[str, float]) -> Look:
        """This reading as one look (replicas summed), with the weights in force."""
        return make_look(self.time, weights, self.totals(), self.p99_latency_seconds)


def make_look(time: datetime, weights: Mapping[str, float], totals: Mapping[str, Mapping[str, int]],
              p99: Mapping[str, float | None]) -> Look:
    """A Look from per-arm totals (the history's value object)."""
    arms = {
        arm: ArmCounts(
            exposures=totals[arm]["exposures"], successes=totals[arm]["successes"],
            failures=totals[arm]["failures"], errors=totals[arm]["errors"],
            fallbacks=totals[arm]["fallbacks"], p99_latency_seconds=p99.get(arm),
        )
        for arm in ARMS
    }
    return Look(time=time, weights=dict(weights), arms=arms)


def add_counter_sample(counters: Counters, instance: str, name: str, labels: Mapping[str, str], value: float) -> None:
    """Add one raw counter sample (metric name, labels, value) to `counters`; other metrics are ignored.

    Both sources call this, so a scrape and a Prometheus query are summed by the same rule.
    """
    arm = labels.get("arm")
    key = (name, labels.get("outcome")) if name == "modelramp_outcomes_total" else (name, None)
    count_field = COUNTER_FIELDS.get(key)
    if count_field is None or arm not in ARMS:
        return
    arms = counters.setdefault(instance, {})
    counts = arms.setdefault(arm, dict.fromkeys(COUNT_FIELDS, 0))
    counts[count_field] += int(round(value))


def add_created_sample(started: dict[str, float], instance: str, name: str, value: float) -> None:
    """Keep the earliest `_created` time of an instance's counter series; other samples are ignored."""
    if name in CREATED_SAMPLES:
        started[instance] = min(value, started.get(instance, value))


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) buckets; None if empty.

    Linear interpolation inside the bucket holding the rank, as Prometheus does, so the embedded
    source and a Prometheus query give the same p99 for the same counts.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != float("inf"):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if upper == float("inf"):
                # Above the highest finite bucket Prometheus answers that bucket's upper bound.
                return ordered[-2][0] if len(ordered) > 1 else None
            if count == lower_count:
                return upper
            return lower_bound + (upper - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper, count
    return None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Source(ABC):
    """Where looks come from: Prometheus's HTTP API, or routers' `/metrics` scraped directly."""

    #: Human-readable place, for reasons and logs ("Prometheus at http://...").
    description: str = "source"

    @abstractmethod
    def read(self, experiment: str, now: datetime | None = None) -> Reading:
        """The experiment's cumulative counters now; raise SourceError when they cannot be read."""

    def look(self, config: ExperimentConfig, now: datetime | None = None) -> Look:
        """One look at the experiment with the configured weights (no history needed)."""
        return self.read(config.name, now).look(config.weights)

    def close(self) -> None:  # noqa: B027 - a no-op hook: only sources that hold connections override it
        """Release connections; the source cannot be used afterwards."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
