"""The router's Prometheus metrics (names and labels listed in docs/architecture.md), one registry per router.

One process per replica: each router process is a replica with its own registry, scraped on its
own `/metrics`; Prometheus (or the analyzer's router-metrics source) sums over replicas. We do
not run several workers per process with prometheus_client's multiprocess mode: it cannot keep
live gauges such as the traffic weight or the breaker state, writes an mmap file per metric per
worker, and the router's per-process state (breaker window, outcome de-duplication) would split
between workers anyway. Scale out with replicas (Kubernetes) instead; one process uses one core.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from serving.tfserving.errors import UserFacingError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The router adds well under a millisecond; backends take a few. Buckets resolve both.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROTOCOLS = ("http", "grpc")


def status_code(protocol: str, error: BaseException | None) -> str:
    """The `code` label: the HTTP status for REST, the gRPC status name for gRPC."""
    if protocol == "grpc":
        if error is None:
            return "OK"
        return error.grpc_code.name if isinstance(error, UserFacingError) else "INTERNAL"
    if error is None:
        return "200"
    return str(error.http_status) if isinstance(error, UserFacingError) else "500"


class RouterMetrics:
    """Every router metric; `registry` is what `/metrics` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # modelramp_requests_total and modelramp_request_duration_seconds, updated on every request.
        self.requests = RequestCounts(DURATION_BUCKETS)
        r.register(self.requests)
        self.backend_errors = Counter(
            "modelramp_backend_errors_total", "Failed backend calls, by arm whose backend failed and reason.",
            ["experiment", "arm", "reason"], registry=r)
        self.fallbacks = Counter(
            "modelramp_fallbacks_total", "Requests assigned to an arm but answered by the other arm's backend (the fallback).",
            ["experiment", "arm"], registry=r)
        self.outcomes = Counter(
            "modelramp_outcomes_total", "Outcomes reported for signed request ids, counted once per id.",
            ["experiment", "arm", "outcome"], registry=r)
        # modelramp_bucket_exposures_total and modelramp_bucket_outcomes_total: the analyzer's by-unit counts.
        self.buckets = BucketCounts()
        r.register(self.buckets)
        self.weight = Gauge(
            "modelramp_traffic_weight", "Configured share of units per arm (0 to 1).",
            ["experiment", "arm"], registry=r)
        # Beyond the core metrics of docs/architecture.md: state people must see when something goes wrong.
        self.circuit_open = Gauge(
            "modelramp_circuit_open", "The arm's circuit breaker: 1 open (its traffic is held off its backend), "
            "0.5 half-open (probe requests only), 0 closed.",
            ["experiment", "arm"], registry=r)
        self.outcomes_rejected = Counter(
            "modelramp_outcomes_rejected_total", "Outcome reports rejected (forged, expired, another experiment or salt, ...) or repeated.",
            ["reason"], registry=r)
        self.shadow_requests = Counter(
            "modelramp_shadow_requests_total", "Background shadow calls to the model, by result (ok, error, dropped).",
            ["experiment", "result"], registry=r)
        self.shadow_agreements = Counter(
            "modelramp_shadow_agreements_total", "Shadow answers compared with the legacy answer, by agreement.",
            ["experiment", "agree"], registry=r)
        self.shadow_duration = Histogram(
            "modelramp_shadow_duration_seconds", "Duration of shadow calls to the model.",
            ["experiment"], buckets=DURATION_BUCKETS, registry=r)
        self.config_reloads = Counter(
            "modelramp_config_reloads_total", "Configuration changes, by source (file, api) and result (applied, rejected).",
            ["source", "result"], registry=r)

    def count_exposure(self, experiment: str, arm: str, bucket: int) -> None:
        """One answered-or-failed predict request of a unit in analysis bucket `bucket` (router/buckets.py)."""
        self.buckets.expose(experiment, arm, bucket)

    def count_outcome(self, experiment: str, arm: str, bucket: int, success: bool) -> None:
        """One outcome counted for a signed id: `modelramp_outcomes_total` and the bucket's outcome counter."""
        outcome = "success" if success else "failure"
        self.outcomes.labels(experiment, arm, outcome).inc()
        self.buckets.outcome(experiment, arm, bucket, outcome)

    def count_outcomes(self, counts: Mapping[tuple[str, str, int, bool], int]) -> None:
        """Many outcomes at once, `{(experiment, arm, bucket, success): n}`: what `count_outcome` does n times.

        `modelramp_outcomes_total` summed per (experiment, arm, outcome) first, so its `labels()`
        (a lock and a dict lookup, a few microseconds) runs once per batch and series, not per outcome.
        """
        totals: dict[tuple[str, str, str], int] = {}
        outcome_of = self.buckets.outcome
        for (experiment, arm, bucket, success), n in counts.items():
            outcome = "success" if success else "failure"
            key = (experiment, arm, outcome)
            totals[key] = totals.get(key, 0) + n
            for _ in range(n):
                outcome_of(experiment, arm, bucket, outcome)
        for (experiment, arm, outcome), n in totals.items():
            self.outcomes.labels(experiment, arm, outcome).inc(n)

    def set_weights(self, experiment: str, weights: dict[str, float]) -> None:
        for arm, w in weights.items():
            self.weight.labels(experiment, arm).set(w)

    def forget_experiment(self, experiment: str, arms: Iterable[str]) -> None:
        """Drop the gauges of an experiment that is no longer configured (its counters stay)."""
        for arm in arms:
            for gauge in (self.weight, self.circuit_open):
                try:
                    gauge.remove(experiment, arm)
                except KeyError:
                    pass

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_REQUEST_LABELS = ["experiment", "arm", "protocol", "code"]
_REQUESTS_HELP = "Predict requests answered, by assigned arm, protocol and status code."
_DURATION_HELP = "Time from request received to response ready, by assigned arm."


class RequestCounts:
    """`modelramp_requests_total` and `modelramp_request_duration_seconds`, kept as plain numbers.

    Every predict request updates both. prometheus_client's `Counter.inc` plus `Histogram.observe`
    run about eight Python functions and take three locks; on a router woken for each request
    that cost 12-15 us of CPU against 5-6 us for this class (`count` after a 2 ms idle gap in
    `python loadtests/bench_router_sections.py`; 3.6 against 1.6 back to back): each function and
    lock is one more thing to bring back into the caches. Here a request is one call that adds
    to two dicts, and the metric families are built when `/metrics` is collected; the exposition
    is the same line for line (tests/router/test_request_counts.py), without `_created` samples.
    Requests are answered on the event loop's thread only, so no lock; `collect` copies first.
    """

    def __init__(self, buckets: tuple[float, ...]):
        self.bounds = tuple(buckets)
        self._counts: dict[tuple[str, str, str, str], int] = {}  # (experiment, arm, protocol, code) -> requests
        self._durations: dict[tuple[str, str, str], list[float]] = {}  # (experiment, arm, protocol) -> [count per bucket..., +Inf, sum]

    def record(self, experiment: str, arm: str, protocol: str, code: str, seconds: float) -> None:
        key = (experiment, arm, protocol, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        cells = self._durations.get(key[:3])
        if cells is None:
            cells = self._durations[key[:3]] = [0] * (len(self.bounds) + 1) + [0.0]
        cells[bisect_left(self.bounds, seconds)] += 1  # buckets are "less than or equal": a bound counts in its bucket
        cells[-1] += seconds

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("modelramp_requests", _REQUESTS_HELP, labels=_REQUEST_LABELS)
        yield HistogramMetricFamily("modelramp_request_duration_seconds", _DURATION_HELP, labels=_REQUEST_LABELS[:3])

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("modelramp_requests", _REQUESTS_HELP, labels=_REQUEST_LABELS)
        for request_key, count in list(self._counts.items()):
            requests.add_metric(request_key, count)
        duration = HistogramMetricFamily("modelramp_request_duration_seconds", _DURATION_HELP, labels=_REQUEST_LABELS[:3])
        for duration_key, cells in list(self._durations.items()):
            cumulative: float = 0  # the cells hold ints: Prometheus writes bucket counts as integers
            buckets = []
            for bound, cell in zip((*self.bounds, float("inf")), cells[:-1], strict=True):  # the last cell is the sum
                cumulative += cell
                buckets.append((_go_float(bound), cumulative))
            duration.add_metric(duration_key, buckets, cells[-1])
        yield requests
        yield duration


_EXPOSURES_HELP = ("Predict requests by assigned arm and the unit's analysis bucket (router/buckets.py); "
                   "sums over buckets to the arm's modelramp_requests_total.")
_BUCKET_OUTCOMES_HELP = "Outcomes counted once per signed id, by arm, the unit's analysis bucket and outcome."


class BucketCounts:
    """`modelramp_bucket_exposures_total{experiment,arm,bucket}` and `modelramp_bucket_outcomes_total{...,outcome}`.

    Series per router and experiment: 2 arms x B buckets of exposures and 2 x B x 2 of outcomes,
    6B in all (384 at the default B = 64; B is at most 1024, router.config). Plain dicts like
    `RequestCounts`, for the same reason: exposures are counted on every request. Exposures are
    counted on the event loop's thread only; outcomes take a lock, so an outcome ledger that
    counts from another thread cannot lose increments. `collect` copies first.
    """

    def __init__(self) -> None:
        self._exposures: dict[tuple[str, str, str], int] = {}  # (experiment, arm, bucket) -> requests
        self._outcomes: dict[tuple[str, str, str, str], int] = {}  # (experiment, arm, bucket, outcome) -> outcomes
        self._lock = threading.Lock()

    def expose(self, experiment: str, arm: str, bucket: int) -> None:
        key = (experiment, arm, str(bucket))
        self._exposures[key] = self._exposures.get(key, 0) + 1

    def outcome(self, experiment: str, arm: str, bucket: int, outcome: str) -> None:
        key = (experiment, arm, str(bucket), outcome)
        with self._lock:
            self._outcomes[key] = self._outcomes.get(key, 0) + 1

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily("modelramp_bucket_exposures", _EXPOSURES_HELP, labels=["experiment", "arm", "bucket"])
        yield CounterMetricFamily("modelramp_bucket_outcomes", _BUCKET_OUTCOMES_HELP, labels=["experiment", "arm", "bucket", "outcome"])

    def collect(self) -> Iterator[Metric]:
        exposures = CounterMetricFamily("modelramp_bucket_exposures", _EXPOSURES_HELP, labels=["experiment", "arm", "bucket"])
        for exposure_key, count in list(self._exposures.items()):
            exposures.add_metric(exposure_key, count)
        outcomes = CounterMetricFamily("modelramp_bucket_outcomes", _BUCKET_OUTCOMES_HELP,
                                       labels=["experiment", "arm", "bucket", "outcome"])
        with self._lock:
            counted = list(self._outcomes.items())
        for key, count in counted:
            outcomes.add_metric(key, count)
        yield exposures
        yield outcomes


def _go_float(value: float) -> str:
    """A histogram bound as Prometheus writes it (prometheus_client's own formatting, which has no annotations)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]  # prometheus_client.utils is untyped
    return text
