"""The skew monitor's feature sink: queue on the request path, sketch and judge drift in the background.

The request path only appends the request's rows or arrays (and, for model-arm answers, the
outputs) to a bounded queue: well under a microsecond. A daemon thread folds the queue into the
sketches every `skew.interval_seconds` with vectorised numpy, counts schema anomalies, and judges
drift over the trailing `skew.window_seconds` (`router.skew.drift`). Metrics are read from the
sketches and the latest judgements when Prometheus scrapes, so no series goes stale:

- `modelramp_feature_drift{model,feature,statistic}`: the judged effect sizes (psi and js_distance
  for numbers and the score, psi and linf for categories) and `chi2_pvalue`; exported only once the
  window holds `skew.min_sample` values (too few values must not look like drift);
- `modelramp_feature_drift_threshold{model,feature,statistic}`, `modelramp_feature_drifted{model,feature}`
  (1 = the verdict, with per-feature thresholds, minimum sample and significance),
  `modelramp_feature_window_values{model,feature}`;
- `modelramp_feature_anomalies_total{model,feature,kind}`;
- `modelramp_feature_values_total{model,feature,bin}`: the cumulative sketch itself, which sums over
  replicas, so `modelramp skew` and PromQL can judge any window of the whole fleet.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeAlias, cast

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from router.config import RouterConfig, SkewSpec
from router.skew.drift import DRIFT, TOO_FEW, Judgement, judge
from router.skew.sketches import PREDICTION, sketches_from_baseline

log = logging.getLogger("router.skew")
_ARRAYS, _ROWS, _OUTPUTS = 0, 1, 2
_Arrays: TypeAlias = Mapping[str, np.ndarray]  # the queued payload of _ARRAYS and _OUTPUTS
_Rows: TypeAlias = list[dict[str, Any]]  # of _ROWS: JSON rows


class SkewSink:
    """A `router.skew.features.FeatureSink` (plus `observe_rows`, `observe_outputs`) feeding drift metrics."""

    def __init__(self, baseline: Mapping[str, Any], settings: SkewSpec, model: str, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.model = model
        self.sketches = sketches_from_baseline(baseline, settings.max_unseen_categories)
        self.features = [n for n in self.sketches if n != PREDICTION]
        self._queue: deque[tuple[int, _Arrays | _Rows]] = deque()  # (kind, payload of that kind)
        self._lock = threading.Lock()  # one folder at a time (thread and explicit `step` calls)
        self._clock = clock
        self._snapshots: deque[tuple[float, dict[str, np.ndarray]]] = deque(
            [(clock(), {n: np.zeros_like(s.live()) for n, s in self.sketches.items()})])
        self.judgements: dict[str, Judgement] = {}
        self.registry = registry or CollectorRegistry()
        self.anomalies = Counter("modelramp_feature_anomalies_total", "Sampled feature values that break the training schema, by kind.",
                                 ["model", "feature", "kind"], registry=self.registry)
        self.dropped = Counter("modelramp_feature_samples_dropped_total", "Sampled requests dropped because the sketch queue was full.",
                               ["model"], registry=self.registry).labels(model)
        self.registry.register(_Collector(self))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- request path: queue only --------------------------------------------------------
    def observe(self, experiment: str, arm: str, features: Mapping[str, np.ndarray]) -> None:
        if len(self._queue) < self.settings.max_pending:
            self._queue.append((_ARRAYS, features))
        else:
            self.dropped.inc()

    def observe_rows(self, experiment: str, arm: str, rows: _Rows) -> None:
        """REST row-format requests: plain JSON values, no numpy on the request path."""
        if len(self._queue) < self.settings.max_pending:
            self._queue.append((_ROWS, rows))
        else:
            self.dropped.inc()

    def observe_outputs(self, experiment: str, outputs: Mapping[str, np.ndarray]) -> None:
        """The model's own answer (model arm, not a fallback): its score feeds prediction drift."""
        if len(self._queue) < self.settings.max_pending:
            self._queue.append((_OUTPUTS, outputs))
        else:
            self.dropped.inc()

    # ---- background ----------------------------------------------------------------------
    def flush(self) -> int:
        """Fold queued requests into the sketches and count anomalies; returns requests folded."""
        with self._lock:
            items = [self._queue.popleft() for _ in range(len(self._queue))]  # deque pops are atomic
            if not items:
                return 0
            rows = [r for kind, batch in items if kind == _ROWS for r in cast(_Rows, batch)]
            arrays = [cast(_Arrays, m) for kind, m in items if kind == _ARRAYS]
            outputs = [cast(_Arrays, m) for kind, m in items if kind == _OUTPUTS]
            for name in self.features:
                sketch = self.sketches[name]
                if rows:
                    self._count(name, sketch.add([r.get(name) for r in rows]))
                if arrays:
                    self._count(name, sketch.add(_column(arrays, name)))
            scores = [a for a in (self._score(m) for m in outputs) if a is not None]
            if scores and PREDICTION in self.sketches:
                self.sketches[PREDICTION].add(np.concatenate(scores))
            return len(items)

    def _count(self, feature: str, anomalies: Mapping[str, int]) -> None:
        for kind, n in anomalies.items():
            self.anomalies.labels(self.model, feature, kind).inc(n)

    def _score(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        name = self.settings.prediction_output
        if name is None and len(outputs) == 1:
            name = next(iter(outputs))
        value = outputs.get(name) if name is not None else None
        return None if value is None else np.asarray(value, dtype=np.float64).ravel()

    def compute(self) -> dict[str, Judgement]:
        """Judge every sketch over the trailing window against the baseline; the result is what /metrics shows."""
        with self._lock:
            now = self._clock()
            current = {n: s.live() for n, s in self.sketches.items()}
            horizon = now - self.settings.window_seconds
            # The window starts at the newest snapshot at or before the horizon (or at start-up).
            while len(self._snapshots) > 1 and self._snapshots[1][0] <= horizon:
                self._snapshots.popleft()
            start = self._snapshots[0][1]
            self._snapshots.append((now, current))
            s = self.settings
            self.judgements = {
                name: judge(name, sketch.kind, sketch.baseline, current[name] - start[name],
                            s.thresholds_for(name, sketch.kind), s.min_sample, s.alpha)
                for name, sketch in self.sketches.items()}
            return self.judgements

    def step(self) -> dict[str, Judgement]:
        """One background round: fold the queue, then judge."""
        self.flush()
        return self.compute()

    def start(self) -> None:
        """Run `step` every `interval_seconds` on a daemon thread until `close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="modelramp-skew", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval_seconds):
            try:
                self.step()
            except Exception:
                log.exception("skew sketch round failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _column(arrays: list[Mapping[str, np.ndarray]], name: str) -> np.ndarray:
    try:  # the usual case: one 1-D array per request, all present (a ravel per part would double the cost)
        return np.concatenate([m[name] for m in arrays]).ravel()
    except (KeyError, ValueError, TypeError):
        pass
    parts = []
    for m in arrays:
        a = m.get(name)
        if a is None:  # absent input (only possible before the signature is known): missing values
            n = len(np.ravel(next(iter(m.values())))) if m else 0
            a = np.full(n, None, dtype=object)
        parts.append(np.ravel(a))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Collector:
    """Exposes the sketches and the latest judgements at scrape time."""

    def __init__(self, sink: SkewSink):
        self.sink = sink

    def describe(self) -> list[Metric]:
        return []  # collected on demand; nothing to check for duplicate names up front

    def collect(self) -> list[Metric]:
        sink, model = self.sink, self.sink.model
        values = CounterMetricFamily(
            "modelramp_feature_values",
            "Sampled feature values per baseline bin (category, histogram bin index, __other__, __missing__).",
            labels=["model", "feature", "bin"])
        for name, sketch in list(sink.sketches.items()):
            for label, count in sketch.bins():
                values.add_metric([model, name, label], count)
        drift = GaugeMetricFamily(
            "modelramp_feature_drift",
            "Drift of live values from the training baseline, by statistic (judged effect sizes and chi2_pvalue), "
            "once the window holds skew.min_sample values.",
            labels=["model", "feature", "statistic"])
        limits = GaugeMetricFamily(
            "modelramp_feature_drift_threshold",
            "Limit of each judged drift statistic for the feature (skew.thresholds and skew.features).",
            labels=["model", "feature", "statistic"])
        drifted = GaugeMetricFamily(
            "modelramp_feature_drifted",
            "1 when the feature drifted: a judged statistic over its limit, significant chi-square, enough values.",
            labels=["model", "feature"])
        window = GaugeMetricFamily("modelramp_feature_window_values", "Values of the feature in the drift window.", labels=["model", "feature"])
        for name, j in list(sink.judgements.items()):
            window.add_metric([model, name], j.n)
            for stat, limit in j.thresholds.items():
                limits.add_metric([model, name, stat], limit)
            if j.verdict == TOO_FEW:
                continue
            drifted.add_metric([model, name], 1.0 if j.verdict == DRIFT else 0.0)
            for stat in (*j.judged, "chi2_pvalue"):
                drift.add_metric([model, name, stat], j.statistics[stat])
        return [values, drift, limits, drifted, window]


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A `baseline.json` document (ValueError with the path when it cannot be used)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the feature baseline {path}: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), dict):
        raise ValueError(f"{path} is not a feature baseline (no 'features' mapping)")
    return doc


def skew_sink_for(config: RouterConfig, baseline_path: str | Path | None, registry: CollectorRegistry) -> SkewSink | None:
    """The router's skew sink when the config (or `--baseline`) asks for one, else None."""
    path = baseline_path or config.skew.baseline
    if path is None or not config.skew.enabled:
        return None
    baseline = load_baseline(path)
    if config.router.feature_sample_share == 0:
        log.warning("skew monitors are on but router.feature_sample_share is 0: no request will be sketched")
    sink = SkewSink(baseline, config.skew, baseline.get("model") or config.model_name, registry)
    log.info("skew monitors: %d features of model %r against %s, judged every %gs over %gs",
             len(sink.features), sink.model, path, config.skew.interval_seconds, config.skew.window_seconds)
    return sink
