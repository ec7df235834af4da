"""Live feature sketches (routers' /metrics or Prometheus) judged against the training baseline.

The routers export their cumulative sketches (`modelramp_feature_values_total{model,feature,bin}`)
and anomaly counters; this command sums them over replicas (or asks Prometheus, optionally over a
trailing window), rebuilds the comparison bins from the baseline, and judges each feature with
the same `router.skew.drift.judge` and `skew:` thresholds as the routers' own drift gauges.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from experiments.live import promql
from experiments.live.sources.prometheus import PrometheusSource
from experiments.live.sources.router_metrics import RouterMetricsSource
from router.config import SkewSpec
from router.skew.drift import Judgement, judge
from router.skew.sketches import sketches_from_baseline  # the bin convention lives with the sketches

VALUES, ANOMALIES = "modelramp_feature_values_total", "modelramp_feature_anomalies_total"


@dataclass
class LiveCounts:
    """Sketch counts per feature and bin label, and anomaly counts per feature and kind."""

    values: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    anomalies: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    source: str = ""


def from_router_metrics(urls: Sequence[str], model: str) -> LiveCounts:
    """Scrape every router's /metrics and sum the model's sketches over replicas."""
    live = LiveCounts()
    source = RouterMetricsSource(urls)
    live.source = source.description
    try:
        for url in source.urls:
            for family in text_string_to_metric_families(source.scrape(url)):
                for s in family.samples:
                    if s.labels.get("model") != model:
                        continue
                    if s.name == VALUES:
                        live.values[s.labels["feature"]][s.labels["bin"]] += s.value
                    elif s.name == ANOMALIES:
                        live.anomalies[s.labels["feature"]][s.labels["kind"]] += s.value
    finally:
        source.close()
    return live


def from_prometheus(url: str, model: str, window: str | None) -> LiveCounts:
    """The fleet's sketches from Prometheus: since the routers started, or the increase over `window`."""
    live = LiveCounts(source=f"Prometheus at {url}" + (f", last {window}" if window else ""))
    names = ("feature_values_window", "feature_anomalies_window") if window else ("feature_values", "feature_anomalies")
    variables = {"model": model, **({"window": window} if window else {})}
    source = PrometheusSource(url)
    try:
        for name, target, label in ((names[0], live.values, "bin"), (names[1], live.anomalies, "kind")):
            for item in source.query(promql.render(name, **variables)):
                value = float(item["value"][1])
                if math.isfinite(value):
                    target[item["metric"]["feature"]][item["metric"][label]] += value
    finally:
        source.close()
    return live


@dataclass(frozen=True)
class FeatureReport:
    """One row of the table: the judgement plus where baseline and live differ most."""

    judgement: Judgement
    shift_bin: str
    baseline_share: float
    live_share: float
    anomalies: dict[str, int]

    def to_dict(self) -> dict:
        return {**self.judgement.to_dict(), "largest_shift": {"bin": self.shift_bin, "baseline": self.baseline_share,
                                                              "live": self.live_share},
                "anomalies": self.anomalies}


def judge_all(baseline: Mapping, live: LiveCounts, settings: SkewSpec) -> list[FeatureReport]:
    """Judge every feature of the baseline (and the score) on the live counts."""
    rows = []
    for name, sketch in sketches_from_baseline(baseline, settings.max_unseen_categories).items():
        counts = sketch.from_bins(live.values.get(name, {}))
        j = judge(name, sketch.kind, sketch.baseline, counts, settings.thresholds_for(name, sketch.kind),
                  settings.min_sample, settings.alpha)
        p = sketch.baseline / sketch.baseline.sum() if sketch.baseline.sum() else sketch.baseline
        q = counts / counts.sum() if counts.sum() else counts
        i = int(np.argmax(np.abs(p - q)))
        rows.append(FeatureReport(j, sketch.bin_names()[i], float(p[i]), float(q[i]),
                                  {k: int(v) for k, v in sorted(live.anomalies.get(name, {}).items()) if v}))
    return rows
