"""Read an experiment's counters from Prometheus's HTTP API (`/api/v1/query`), with the named queries."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx

from experiments.live import promql
from experiments.live.sources.base import (
    Counters,
    Reading,
    Source,
    SourceError,
    add_counter_sample,
    finish_counters,
    utc_now,
)
from router.config import ARMS


def _instance(labels: dict[str, str]) -> str:
    return f"{labels.get('job', '')}/{labels.get('instance', '')}"


class PrometheusSource(Source):
    """Instant queries against one Prometheus server; replicas are told apart by `job`/`instance`."""

    def __init__(self, url: str, timeout: float = 10.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self.description = f"Prometheus at {self.url}"
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def query(self, expr: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """Run one instant query; the `result` list of a vector answer. SourceError on any failure."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        try:
            response = self._client.get(f"{self.url}/api/v1/query", params=params)
        except httpx.HTTPError as err:
            raise SourceError(f"{self.description} is unreachable: {err.__class__.__name__}: {err}") from None
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"{self.description} answered HTTP {response.status_code} without JSON") from None
        if body.get("status") != "success":
            raise SourceError(f"{self.description} rejected the query ({body.get('errorType')}: {body.get('error')}): {expr}")
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise SourceError(f"{self.description} answered a {data.get('resultType')} instead of a vector: {expr}")
        result: list[dict[str, Any]] = data["result"]
        return result

    def read(self, experiment: str, now: datetime | None = None) -> Reading:
        at = now or utc_now()
        counters: Counters = {}
        for series in self.query(promql.render("look_counter_series", experiment=experiment), at):
            labels = series["metric"]
            add_counter_sample(counters, _instance(labels), labels.get("__name__", ""), labels, float(series["value"][1]))
        started = {_instance(s["metric"]): float(s["value"][1])
                   for s in self.query(promql.render("look_counter_created", experiment=experiment), at)}
        p99: dict[str, float | None] = dict.fromkeys(ARMS)
        for series in self.query(promql.render("cumulative_p99_latency_seconds", experiment=experiment), at):
            arm, value = series["metric"].get("arm"), float(series["value"][1])
            if arm in p99 and math.isfinite(value):
                p99[arm] = value
        return Reading(time=at, counters=finish_counters(counters), p99_latency_seconds=p99, started=started)
