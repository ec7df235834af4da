"""The ledger's own metrics on the router's registry: is it writable, how much waits, how late outcomes arrive.

Kept beside the ledger rather than in `router.metrics`, so the router's core metrics do not
depend on which ledger runs. `modelramp_outcome_ledger_available` and
`modelramp_outcome_ledger_pending_rows` are read when `/metrics` is scraped (no timer);
`modelramp_outcome_lag_seconds` is observed for each inserted outcome: the time from the
prediction (the signed id's `issued_at`) to its outcome being recorded, by arm, so an arm whose
outcomes stop or slow down shows (with outcomes per exposure, k8s/dashboards.py, "Outcome coverage").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from router.ledger.base import Outcome, OutcomeLedger

# Outcomes arrive seconds (a click) to a day (a churn label) after the prediction.
LAG_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86_400.0)


class _LedgerGauges:
    def __init__(self, ledger: OutcomeLedger) -> None:
        self.ledger = ledger

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None, 0))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self.ledger.available, getattr(self.ledger, "pending_rows", 0)))

    def _families(self, available: bool | None, pending: int) -> list[Metric]:
        up = GaugeMetricFamily("modelramp_outcome_ledger_available",
                               "1 while the outcome ledger accepts writes; 0 while outcome reports get 503.")
        rows = GaugeMetricFamily("modelramp_outcome_ledger_pending_rows", "Outcomes queued for the ledger's next write.")
        if available is not None:
            up.add_metric([], 1.0 if available else 0.0)
            rows.add_metric([], float(pending))
        return [up, rows]


class LedgerMetrics:
    """Registers the ledger gauges and the outcome-lag histogram on `registry`."""

    def __init__(self, registry: CollectorRegistry, ledger: OutcomeLedger, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        registry.register(_LedgerGauges(ledger))
        self.lag = Histogram("modelramp_outcome_lag_seconds",
                             "Time from a prediction to its outcome being recorded, by arm (outcomes counted once).",
                             ["experiment", "arm"], buckets=LAG_BUCKETS, registry=registry)

    def observe(self, inserted: Sequence[Outcome]) -> None:
        # One labels() per (experiment, arm) and batch, not per outcome: it takes a lock and builds a key.
        now = self.clock()
        children: dict[tuple[str, str], Any] = {}
        for o in inserted:
            pair = (o.experiment, o.arm)
            child = children.get(pair)
            if child is None:
                child = children[pair] = self.lag.labels(*pair)
            child.observe(max(now - o.issued_at, 0.0))
