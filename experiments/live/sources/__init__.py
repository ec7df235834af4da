"""Data sources of the analyzer: one file per source behind `Source` (see `base.py`), and a factory."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.live.sources.base import Reading, Source, SourceError
from experiments.live.sources.prometheus import PrometheusSource
from experiments.live.sources.recorder import (
    Recorder,
    RecorderError,
    Step,
    save_history,
)
from experiments.live.sources.router_metrics import RouterMetricsSource

DEFAULT_ROUTER_URL = "http://127.0.0.1:8080"

__all__ = [
    "PrometheusSource", "Reading", "Recorder", "RecorderError", "RouterMetricsSource", "Source",
    "SourceError", "Step", "make_source", "save_history",
]


def make_source(prometheus: str | None = None, metrics_urls: Sequence[str] = ()) -> Source:
    """Prometheus when its URL is given, else the routers' `/metrics` (default: the local router)."""
    if prometheus and metrics_urls:
        raise ValueError("give either a Prometheus URL or router metrics URLs, not both")
    if prometheus:
        return PrometheusSource(prometheus)
    return RouterMetricsSource(list(metrics_urls) or [DEFAULT_ROUTER_URL])
