"""The data-source interface: read the routers' cumulative counters for one experiment at one moment.

A source answers "what do the counters say now?" as a `Reading`: counts per router replica
(`instance`) and arm, plus the latency p99 per arm. Keeping replicas apart is what lets the
`Recorder` fold a router restart (its counters start again at zero) into a monotonic history
instead of seeing counts go down. `Reading.look()` sums replicas for a one-off look.

Counts per analysis bucket (router/buckets.py) sit beside an arm's totals under the keys
`"exposures#17"`, `"successes#17"`, `"failures#17"` (`bucket_key`), so replicas, restarts and the
recorder's state treat them exactly like the totals. `finish_counters` makes each replica's
totals the sums of its buckets, so the two agree by construction (a scrape can fall between
the two counters of one request); a replica that counts a field in total but not by bucket (an
older router) keeps its totals, the sums then differ, and the look is request-level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from experiments.config import ExperimentConfig
from experiments.live.history import BUCKET_FIELDS, ArmCounts, Buckets, Look
from experiments.live.promql import BUCKET_COUNTER_FIELDS, COUNTER_FIELDS, CREATED_SAMPLES
from router.config import ARMS, RouterOptionsSpec

COUNT_FIELDS = ("exposures", "successes", "failures", "errors", "fallbacks")
#: B when the caller does not say (the router's default `router.analysis_buckets`).
DEFAULT_BUCKETS: int = RouterOptionsSpec.model_fields["analysis_buckets"].default


def bucket_key(name: str, bucket: int) -> str:
    """The counters key of field `name` (exposures, successes, failures) in analysis bucket `bucket`."""
    return f"{name}#{bucket}"


def split_key(key: str) -> tuple[str, int] | None:
    """(field, bucket) of a bucket key, None for a total."""
    name, sep, bucket = key.partition("#")
    return (name, int(bucket)) if sep and bucket.isdigit() else None

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
        """Counts per arm summed over replicas (every arm and total present, zero if unseen; bucket keys as seen)."""
        out = {arm: dict.fromkeys(COUNT_FIELDS, 0) for arm in ARMS}
        for arms in self.counters.values():
            for arm, counts in arms.items():
                for name, value in counts.items():
                    out[arm][name] = out[arm].get(name, 0) + value
        return out

    def look(self, weights: Mapping[str, float], buckets: int = DEFAULT_BUCKETS) -> Look:
        """This reading as one look (replicas summed), with the weights in force and B analysis buckets."""
        return make_look(self.time, weights, self.totals(), self.p99_latency_seconds, buckets)


def look_counts(look: Look) -> dict[str, dict[str, int]]:
    """A look's counts per arm in the counters' keys (totals, and bucket keys when it has buckets)."""
    out: dict[str, dict[str, int]] = {}
    for arm in ARMS:
        c = look.arms[arm]
        counts = {name: getattr(c, name) or 0 for name in COUNT_FIELDS}
        if c.buckets is not None:
            for name in BUCKET_FIELDS:
                counts.update({bucket_key(name, b): v for b, v in enumerate(getattr(c.buckets, name)) if v})
        out[arm] = counts
    return out


def _buckets(counts: Mapping[str, int], buckets: int) -> Buckets | None:
    """The arm's bucket lists when they account for all its exposures and outcomes, else None."""
    lists = {name: [0] * buckets for name in BUCKET_FIELDS}
    seen = False
    for key, value in counts.items():
        split = split_key(key)
        if split is None:
            continue
        seen = True
        name, b = split
        if b >= buckets:
            return None  # a router with another B: these buckets are not comparable
        lists[name][b] += value
    if not seen or any(sum(lists[name]) != counts.get(name, 0) for name in BUCKET_FIELDS):
        return None
    return Buckets(tuple(lists["exposures"]), tuple(lists["successes"]), tuple(lists["failures"]))


def make_look(time: datetime, weights: Mapping[str, float], totals: Mapping[str, Mapping[str, int]],
              p99: Mapping[str, float | None], buckets: int = DEFAULT_BUCKETS) -> Look:
    """A Look from per-arm totals (the history's value object); by bucket when both arms' buckets add up."""
    by_bucket = {arm: _buckets(totals[arm], buckets) for arm in ARMS}
    keep = all(b is not None for b in by_bucket.values())
    arms = {
        arm: ArmCounts(
            exposures=totals[arm]["exposures"], successes=totals[arm]["successes"],
            failures=totals[arm]["failures"], errors=totals[arm]["errors"],
            fallbacks=totals[arm]["fallbacks"], p99_latency_seconds=p99.get(arm),
            buckets=by_bucket[arm] if keep else None,
        )
        for arm in ARMS
    }
    return Look(time=time, weights=dict(weights), arms=arms)


def finish_counters(counters: Counters) -> Counters:
    """Make each replica's exposures, successes and failures the sums of its buckets where it counts that field by bucket.

    A field a replica counts in total but has no bucket series for (an older router, or outcomes
    counted without their bucket) keeps its total. Returns `counters`, changed in place.
    """
    for arms in counters.values():
        for counts in arms.values():
            sums: dict[str, int] = {}
            for key, value in counts.items():
                split = split_key(key)
                if split is not None:
                    sums[split[0]] = sums.get(split[0], 0) + value
            if not sums:
                continue
            for name in BUCKET_FIELDS:
                if name in sums or not counts.get(name, 0):
                    counts[name] = sums.get(name, 0)
    return counters


def add_counter_sample(counters: Counters, instance: str, name: str, labels: Mapping[str, str], value: float) -> None:
    """Add one raw counter sample (metric name, labels, value) to `counters`; other metrics are ignored.

    Both sources call this, so a scrape and a Prometheus query are summed by the same rule.
    """
    arm = labels.get("arm")
    outcome = name in ("modelramp_outcomes_total", "modelramp_bucket_outcomes_total")
    key = (name, labels.get("outcome") if outcome else None)
    count_field = COUNTER_FIELDS.get(key)
    if count_field is None:
        bucket_field, bucket = BUCKET_COUNTER_FIELDS.get(key), labels.get("bucket", "")
        if bucket_field is None or not bucket.isdigit():
            return
        count_field = bucket_key(bucket_field, int(bucket))
    if arm not in ARMS:
        return
    arms = counters.setdefault(instance, {})
    counts = arms.setdefault(arm, dict.fromkeys(COUNT_FIELDS, 0))
    counts[count_field] = counts.get(count_field, 0) + int(round(value))


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
        """One look at the experiment with the configured weights and analysis buckets (no history needed)."""
        return self.read(config.name, now).look(config.weights, config.router.analysis_buckets)

    def close(self) -> None:  # noqa: B027 - a no-op hook: only sources that hold connections override it
        """Release connections; the source cannot be used afterwards."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
