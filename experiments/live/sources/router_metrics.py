"""Scrape routers' `/metrics` directly and sum them: the embedded default when no Prometheus runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from experiments.live import promql
from experiments.live.sources.base import (
    Counters,
    Reading,
    Source,
    SourceError,
    add_counter_sample,
    add_created_sample,
    finish_counters,
    histogram_quantile,
    utc_now,
)
from router.config import ARMS


def metrics_url(url: str) -> str:
    """`http://host:8080` or `http://host:8080/metrics` -> the `/metrics` URL."""
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


class RouterMetricsSource(Source):
    """Reads every router replica's `/metrics`; a replica that cannot be read fails the whole look.

    A partial sum would look like counts vanishing, so it is better to hold than to guess.
    """

    def __init__(self, urls: Sequence[str], timeout: float = 5.0, transport: httpx.BaseTransport | None = None):
        if not urls:
            raise ValueError("at least one router metrics URL is needed")
        self.urls = [metrics_url(u) for u in urls]
        self.description = "router metrics at " + ", ".join(self.urls)
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def scrape(self, url: str) -> str:
        """One replica's exposition text; SourceError if it cannot be had."""
        try:
            response = self._client.get(url)
        except httpx.HTTPError as err:
            raise SourceError(f"router metrics at {url} are unreachable: {err.__class__.__name__}: {err}") from None
        if response.status_code != 200:
            raise SourceError(f"router metrics at {url} answered HTTP {response.status_code}")
        return response.text

    def read(self, experiment: str, now: datetime | None = None) -> Reading:
        at = now or utc_now()
        counters: Counters = {}
        started: dict[str, float] = {}
        # (arm, upper bound) -> cumulative count, summed over replicas as `sum by (arm, le)` does.
        buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for url in self.urls:
            text = self.scrape(url)
            try:
                families = list(text_string_to_metric_families(text))
            except ValueError as err:
                raise SourceError(f"router metrics at {url} are not in the Prometheus text format: {err}") from None
            counters.setdefault(url, {})
            for family in families:
                for sample in family.samples:
                    if sample.labels.get("experiment") != experiment:
                        continue
                    if sample.name == promql.LATENCY_BUCKETS and sample.labels.get("arm") in ARMS:
                        buckets[sample.labels["arm"]][float(sample.labels["le"])] += sample.value
                    else:
                        add_counter_sample(counters, url, sample.name, sample.labels, sample.value)
                        add_created_sample(started, url, sample.name, sample.value)
        p99 = {arm: histogram_quantile(promql.LATENCY_QUANTILE, buckets[arm].items()) for arm in ARMS}
        return Reading(time=at, counters=finish_counters(counters), p99_latency_seconds=p99, started=started)
