"""The decision gauges as a scraper sees them while an update runs in another thread."""

from __future__ import annotations

import sys
import threading

from prometheus_client.parser import text_string_to_metric_families

from experiments.live.decision_metrics import DecisionMetrics
from tests.deploy.live import recorded_decision

EVERY_LOOK = ("modelramp_decision_timestamp_seconds", "modelramp_decision_stage_percent", "modelramp_decision_model_exposures",
              "modelramp_decision_srm_p_value", "modelramp_decision_buckets")


def test_a_scrape_during_an_update_sees_every_series_both_analyses_have():
    hold, rollback = recorded_decision("hold"), recorded_decision("rollback")
    assert all(a.stage is not None and a.srm is not None and a.difference is not None for a in (hold, rollback))
    metrics = DecisionMetrics()
    metrics.update(hold)
    stop, missing, scrapes = threading.Event(), [], [0]

    def scrape() -> None:
        while not stop.is_set():
            names = {s.name for f in text_string_to_metric_families(metrics.exposition().decode()) for s in f.samples}
            missing.extend(name for name in EVERY_LOOK if name not in names)
            scrapes[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as CPython will: scrapes land inside updates
    reader = threading.Thread(target=scrape)
    reader.start()
    try:
        for i in range(3000):
            metrics.update(hold if i % 2 else rollback)
    finally:
        stop.set()
        reader.join(30)
        sys.setswitchinterval(interval)
    assert scrapes[0] > 20, scrapes
    assert not missing, f"{len(missing)} series missing in {scrapes[0]} scrapes, e.g. {sorted(set(missing))}"
