"""`RequestCounts` writes exactly what prometheus_client's Counter and Histogram write for the same requests."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from router.metrics import DURATION_BUCKETS, RequestCounts, RouterMetrics


def test_exposition_matches_prometheus_client_line_for_line():
    help_of = {m.name: m.documentation for m in RouterMetrics().registry.collect()}  # as the router registers them
    expected_registry, registry = CollectorRegistry(), CollectorRegistry()
    counter = Counter("modelramp_requests_total", help_of["modelramp_requests"], ["experiment", "arm", "protocol", "code"],
                      registry=expected_registry)
    histogram = Histogram("modelramp_request_duration_seconds", help_of["modelramp_request_duration_seconds"],
                          ["experiment", "arm", "protocol"], buckets=DURATION_BUCKETS, registry=expected_registry)
    counts = RequestCounts(DURATION_BUCKETS)
    registry.register(counts)
    rng = random.Random(7)
    # Values on the bucket bounds (le is inclusive), between them, at zero and beyond the last one.
    values = [rng.choice(DURATION_BUCKETS) for _ in range(200)] + [rng.expovariate(200) for _ in range(2000)] + [30.0, 0.0]
    for seconds in values:
        key = (rng.choice(["churn", "other"]), rng.choice(["legacy", "model"]), rng.choice(["http", "grpc"]), rng.choice(["200", "OK", "400"]))
        counter.labels(*key).inc()
        histogram.labels(*key[:3]).observe(seconds)
        counts.record(*key, seconds)
    expected = [line for line in generate_latest(expected_registry).decode().splitlines() if "_created" not in line]
    assert generate_latest(registry).decode().splitlines() == expected


def test_router_registry_reads_the_counts():
    metrics = RouterMetrics()
    metrics.requests.record("churn", "model", "http", "200", 0.0007)
    metrics.requests.record("churn", "model", "http", "200", 0.003)
    get = metrics.registry.get_sample_value
    assert get("modelramp_requests_total", {"experiment": "churn", "arm": "model", "protocol": "http", "code": "200"}) == 2
    labels = {"experiment": "churn", "arm": "model", "protocol": "http"}
    assert get("modelramp_request_duration_seconds_bucket", {**labels, "le": "0.0005"}) == 0
    assert get("modelramp_request_duration_seconds_bucket", {**labels, "le": "0.001"}) == 1
    assert get("modelramp_request_duration_seconds_bucket", {**labels, "le": "+Inf"}) == 2
    assert get("modelramp_request_duration_seconds_count", labels) == 2
