"""Decisions as Prometheus metrics: `modelramp_decision_*` gauges of the latest analysis per experiment.

What the dashboards and alert rules read about decisions (names in docs/architecture.md, "Metrics"),
one series set per experiment, so the cardinality is bounded by the experiments served (the
decision and reason-code gauges hold one series per possible value, 1 for the current one):

- `modelramp_decision{experiment, decision}` and `modelramp_decision_reason{experiment, code}`;
- `modelramp_decision_stage_percent`, `_stage_index`, `_stage_duration_seconds`,
  `_stage_min_duration_seconds`, `_model_exposures` and `_min_samples` (exposures in this stage
  against the stage's minimum);
- `modelramp_decision_difference{experiment, bound}`: the estimate and the sequences' bounds
  (`estimate`, `ci_lower`, `ci_upper`, `harm_upper`, `non_inferiority_lower`), absolute rates;
- `modelramp_decision_srm_p_value`, `_outcome_rate_p_value`, `_guardrail_breached{guardrail}`;
- `modelramp_decision_buckets` (1: request-level) and `modelramp_decision_timestamp_seconds`
  (when the analysis was made: alert on `time() - ... > ` a few intervals for a stalled controller).

How Prometheus gets them: `modelramp analyze --serve` answers `GET /metrics` with the analysis of
every experiment at scrape time (`experiments.live.service`); the ramp controller, a loop or a
Kubernetes CronJob, pushes them after every step to a Pushgateway (`push`), the Prometheus way
for batch jobs whose process is gone before the next scrape, or writes them as a text file for
node_exporter's textfile collector (`write_textfile`) on a single machine.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest, push_to_gateway

from experiments.live.analysis import DECISIONS, REASON_CODES, Analysis

BOUNDS = ("estimate", "ci_lower", "ci_upper", "harm_upper", "non_inferiority_lower")
JOB = "modelramp-ramp"


class DecisionMetrics:
    """One registry of decision gauges; `update` sets them from an analysis (one experiment's series replaced)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        e = ["experiment"]
        self.decision = Gauge("modelramp_decision", "1 for the latest decision of the experiment, 0 for the others.",
                              [*e, "decision"], registry=r)
        self.reason = Gauge("modelramp_decision_reason", "1 for the rule that decided (reason code), 0 for the others.",
                            [*e, "code"], registry=r)
        self.stage_percent = Gauge("modelramp_decision_stage_percent", "Model-arm share of the current stage (percent).", e,
                                   registry=r)
        self.stage_index = Gauge("modelramp_decision_stage_index", "Index of the current stage (0 = first).", e, registry=r)
        self.stage_duration = Gauge("modelramp_decision_stage_duration_seconds", "How long the current stage has run.", e,
                                    registry=r)
        self.stage_min_duration = Gauge("modelramp_decision_stage_min_duration_seconds",
                                        "The current stage's minimum duration.", e, registry=r)
        self.model_exposures = Gauge("modelramp_decision_model_exposures",
                                     "Model-arm exposures in the current stage (against modelramp_decision_min_samples).", e,
                                     registry=r)
        self.min_samples = Gauge("modelramp_decision_min_samples", "The current stage's minimum model-arm exposures.", e,
                                 registry=r)
        self.difference = Gauge("modelramp_decision_difference",
                                "Model - legacy success rate: the estimate and the always-valid sequences' bounds.",
                                [*e, "bound"], registry=r)
        self.srm_p_value = Gauge("modelramp_decision_srm_p_value", "Always-valid sample ratio mismatch p-value (on units).",
                                 e, registry=r)
        self.outcome_rate_p_value = Gauge("modelramp_decision_outcome_rate_p_value",
                                          "Always-valid p-value that outcomes arrive per exposure at the same rate in both arms.",
                                          e, registry=r)
        self.guardrail = Gauge("modelramp_decision_guardrail_breached", "1 while a model-arm guardrail is breached.",
                               [*e, "guardrail"], registry=r)
        self.buckets = Gauge("modelramp_decision_buckets", "Analysis buckets the decision counted units by (1: request-level).",
                             e, registry=r)
        self.timestamp = Gauge("modelramp_decision_timestamp_seconds", "When the latest analysis was made (Unix time).", e,
                               registry=r)
        self._per_experiment = (self.stage_percent, self.stage_index, self.stage_duration, self.stage_min_duration,
                                self.model_exposures, self.min_samples, self.srm_p_value, self.outcome_rate_p_value,
                                self.buckets, self.timestamp)

    def update(self, analysis: Analysis) -> None:
        """Set every gauge of `analysis.experiment` from the analysis (statistics it lacks are removed, not left stale).

        Each series is overwritten in place and only those the new analysis lacks are removed
        afterwards: a scrape that lands during an update (a Prometheus pair scraping `analyze
        --serve`, or the exporter's own thread) sees every series that both analyses have.
        """
        x = analysis.experiment
        for d in DECISIONS:
            self.decision.labels(x, d).set(1.0 if analysis.decision == d else 0.0)
        for code in REASON_CODES:
            self.reason.labels(x, code).set(1.0 if analysis.code == code else 0.0)
        values: dict[Gauge, float] = {self.buckets: analysis.buckets}
        if analysis.time is not None:
            values[self.timestamp] = analysis.time.timestamp()
        if analysis.stage is not None:
            s = analysis.stage
            values.update({self.stage_percent: s.percent, self.stage_index: s.index, self.stage_duration: s.duration_seconds,
                           self.stage_min_duration: s.min_duration_seconds, self.model_exposures: s.model_exposures,
                           self.min_samples: s.min_samples})
        if analysis.srm is not None:
            values.update({self.srm_p_value: analysis.srm.p_value, self.outcome_rate_p_value: analysis.srm.outcome_rate_p_value})
        bounds: dict[str, float] = {}
        if analysis.difference is not None:
            diff = analysis.difference
            found = (diff.estimate, diff.ci[0], diff.ci[1], diff.harm_upper_bound, diff.non_inferiority_lower_bound)
            # An unbounded side is absent, not +Inf, so panels keep their scale.
            bounds = {bound: value for bound, value in zip(BOUNDS, found, strict=True) if math.isfinite(value)}
        for gauge, value in values.items():
            gauge.labels(x).set(value)
        for bound, value in bounds.items():
            self.difference.labels(x, bound).set(value)
        for gauge in self._per_experiment:
            if gauge not in values:
                _drop(gauge, x)
        for bound in BOUNDS:
            if bound not in bounds:
                _drop(self.difference, x, bound)
        for g in analysis.guardrails:
            self.guardrail.labels(x, g.name).set(1.0 if g.breached else 0.0)

    def held(self, experiment: str, when: datetime) -> None:
        """The ramp controller held on its own (no analysis, or one it did not act on): decision hold, code controller_hold."""
        for d in DECISIONS:
            self.decision.labels(experiment, d).set(1.0 if d == "hold" else 0.0)
        for code in REASON_CODES:
            self.reason.labels(experiment, code).set(1.0 if code == "controller_hold" else 0.0)
        self.timestamp.labels(experiment).set(when.timestamp())

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def push(self, gateway: str, job: str = JOB, grouping_key: dict[str, str] | None = None) -> None:
        """Replace this job's metrics on a Prometheus Pushgateway (`push_to_gateway`: PUT, so stale series go)."""
        push_to_gateway(gateway, job=job, registry=self.registry, grouping_key=grouping_key)

    def write_textfile(self, path: str | Path) -> Path:
        """Write the exposition atomically for node_exporter's textfile collector (`*.prom`)."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.exposition())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _drop(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def exposition(analyses: Iterable[Analysis]) -> bytes:
    """The decision gauges of several analyses as one Prometheus text exposition."""
    metrics = DecisionMetrics()
    for a in analyses:
        metrics.update(a)
    return metrics.exposition()
