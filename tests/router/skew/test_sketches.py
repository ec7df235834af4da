"""Feature sketches on the baseline's bins, anomaly counting, the skew sink's metrics, and the core's sink hooks."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
from prometheus_client import generate_latest

from router.backends import PredictRequest
from router.config import SkewSpec
from router.core import Router
from router.signing import Signer
from router.skew.sink import SkewSink
from router.skew.sketches import (
    MISSING,
    OTHER,
    PREDICTION,
    CategoricalSketch,
    NumericSketch,
    sketches_from_baseline,
)
from tests.router.fakes import fake_factory, make_config

EDGES = [19.067, 23.07, 25.867]  # total_day_charge-like edges, not exact in float32
BASELINE = {
    "model": "churn",
    "features": {
        "charge": {"kind": "numeric", "count": 100, "missing_rate": 0.0, "min": 0.44, "max": 58.96,
                   "bin_edges": EDGES, "bin_counts": [25, 25, 25, 25]},
        "plan": {"kind": "categorical", "count": 100, "missing_rate": 0.0, "value_counts": {"no": 90, "yes": 10}},
    },
    "prediction": {"bin_edges": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "bin_counts": [400, 22, 3, 6, 8, 2, 6, 10, 9, 34]},
}


def value(registry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_numeric_bins_follow_the_baseline_convention_in_float32():
    sketch = NumericSketch("charge", EDGES, [25] * 4, 0, 0.44, 58.96)
    values = np.array([0.44, 19.067, 19.06, 23.07, 25.867, 30.0, 58.96], dtype=np.float32)
    assert sketch.add(values) == {}, "training's own min, max and edge values are in range and in their bin"
    # searchsorted(side="right"): a value equal to an edge goes to the bin above it, as in training.
    expected = np.bincount(np.searchsorted(np.float32(EDGES), values, side="right"), minlength=4)
    assert sketch.counts[:-1].tolist() == expected.tolist() == [2, 1, 1, 3]


def test_numeric_missing_out_of_range_and_unexpected_type():
    sketch = NumericSketch("charge", EDGES, [25] * 4, 0, 0.44, 58.96)
    assert sketch.add(np.array([np.nan, np.nan, 0.1, 99.0, 20.0], dtype=np.float32)) == {"missing": 2, "out_of_range": 2}
    assert sketch.add(["7", None, 21.0, True]) == {"unexpected_type": 2, "missing": 1}
    assert sketch.live().tolist() == [1, 2, 0, 1, 5]  # bins..., missing (NaN, null, and mistyped values)
    assert dict(sketch.bins())[MISSING] == 5


def test_categorical_is_bounded_and_counts_unseen_and_missing():
    sketch = CategoricalSketch("plan", {"no": 90, "yes": 10}, 0, max_unseen=2)
    anomalies = sketch.add(np.array([b"no", b"yes", b"Yes", b"", b"maybe", b"other1", b"other2", b"no"], dtype=object))
    assert anomalies == {"unseen_category": 4, "missing": 1}
    # JSON rows carry str, arrays bytes: the same bins either way.
    assert sketch.add(["no", "Yes", 3]) == {"unseen_category": 1, "unexpected_type": 1}
    assert sketch.add([b"Yes", b"Yes"]) == {"unseen_category": 2}
    bins = dict(sketch.bins())
    assert bins == {"no": 3, "yes": 1, "Yes": 4, "maybe": 1, OTHER: 2, MISSING: 2}
    assert sketch.live().tolist() == [3, 1, 7, 2]  # training categories, all unseen, missing
    assert sketch.from_bins(bins).tolist() == sketch.live().tolist()
    assert len(sketch.counts) == 2 + 2 + 2, "fixed size whatever the traffic"


def test_sketches_from_baseline_include_the_score():
    sketches = sketches_from_baseline(BASELINE)
    assert set(sketches) == {"charge", "plan", PREDICTION}
    assert sketches[PREDICTION].baseline.tolist() == [*BASELINE["prediction"]["bin_counts"], 0]
    assert sketches["plan"].baseline.tolist() == [90, 10, 0, 0]
    assert sketches["charge"].bin_names() == ["< 19.067", "[19.067, 23.07)", "[23.07, 25.867)", ">= 25.867", "missing"]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_sink(**settings) -> tuple[SkewSink, Clock]:
    clock = Clock()
    return SkewSink(BASELINE, SkewSpec(**{"min_sample": 100, "window_seconds": 60, **settings}), "churn", clock=clock), clock


def feed(sink: SkewSink, n: int, charge: float, plan: str, rows: bool) -> None:
    for i in range(n):
        c = [17.0, 21.0, 24.0, 30.0][i % 4] * charge
        p = plan if i % 10 == 0 else "no"
        if rows:
            sink.observe_rows("e", "legacy", [{"charge": c, "plan": p}])
        else:
            sink.observe("e", "legacy", {"charge": np.array([c], np.float32), "plan": np.array([p.encode()], object)})


def test_sink_queues_then_judges_and_exports_metrics():
    sink, clock = make_sink()
    feed(sink, 60, 1.0, "yes", rows=True)
    feed(sink, 60, 1.0, "yes", rows=False)
    assert value(sink.registry, "modelramp_feature_values_total", model="churn", feature="charge", bin="0") == 0, "nothing folded yet"
    judgements = sink.step()
    assert judgements["charge"].verdict == judgements["plan"].verdict == "ok"
    assert judgements[PREDICTION].verdict == "too_few"
    r = sink.registry
    assert value(r, "modelramp_feature_values_total", model="churn", feature="charge", bin="0") == 30
    assert value(r, "modelramp_feature_values_total", model="churn", feature="plan", bin="yes") == 12
    assert value(r, "modelramp_feature_window_values", model="churn", feature="charge") == 120
    assert r.get_sample_value("modelramp_feature_drift", {"model": "churn", "feature": "charge", "statistic": "js_distance"}) is not None
    linf = r.get_sample_value("modelramp_feature_drift", {"model": "churn", "feature": "charge", "statistic": "linf"})
    assert linf is None, "linf is judged for categories"
    assert r.get_sample_value("modelramp_feature_drift", {"model": "churn", "feature": PREDICTION, "statistic": "psi"}) is None, "too few scores"
    assert value(r, "modelramp_feature_drift_threshold", model="churn", feature="plan", statistic="linf") == 0.1
    assert value(r, "modelramp_feature_drifted", model="churn", feature="charge") == 0
    assert b"modelramp_feature_values_total" in generate_latest(r)


def test_sink_window_forgets_old_values_and_flags_drift():
    sink, clock = make_sink(features={"plan": {"linf": 0.3, "psi": 5.0}})
    feed(sink, 200, 1.0, "yes", rows=True)
    sink.step()
    clock.t += 61  # the clean values fall out of the next window
    feed(sink, 200, 2.0, "YES", rows=True)  # every charge doubled, "yes" renamed
    sink.step()
    clock.t += 1
    j = sink.step()
    assert j["charge"].n == 200 and j["charge"].verdict == "drift"
    assert j["plan"].verdict == "ok", "linf 0.1 and psi 1.4 are under the feature's own limits"
    assert value(sink.registry, "modelramp_feature_anomalies_total", model="churn", feature="plan", kind="unseen_category") == 20
    assert value(sink.registry, "modelramp_feature_drifted", model="churn", feature="charge") == 1


def test_sink_scores_and_bounded_queue():
    sink, _ = make_sink(max_pending=3, min_sample=1)
    for score in (0.05, 0.95):
        sink.observe_outputs("e", {"probability": np.array([score], np.float32)})
    sink.observe("e", "model", {"charge": np.array([20.0], np.float32), "plan": np.array([b"no"], object)})
    sink.observe("e", "model", {})  # dropped: the queue is full
    assert value(sink.registry, "modelramp_feature_samples_dropped_total", model="churn") == 1
    sink.step()
    assert value(sink.registry, "modelramp_feature_values_total", model="churn", feature=PREDICTION, bin="0") == 1
    assert value(sink.registry, "modelramp_feature_values_total", model="churn", feature=PREDICTION, bin="9") == 1


def test_sink_background_thread_folds_without_being_asked():
    sink, _ = make_sink(interval_seconds=0.01)
    feed(sink, 10, 1.0, "yes", rows=True)
    sink.start()
    try:
        from tests.support.processes import wait_until

        wait_until(lambda: value(sink.registry, "modelramp_feature_values_total", model="churn", feature="plan", bin="yes") == 1,
                   timeout=10, what="background fold")
    finally:
        sink.close()


@pytest.mark.parametrize("rows", [True, False])
def test_core_passes_rows_or_arrays_and_model_outputs(rows):
    seen = []

    class Sink:
        def observe(self, experiment, arm, features):
            seen.append(("arrays", arm, dict(features)))

        def observe_rows(self, experiment, arm, rows):
            seen.append(("rows", arm, rows))

        def observe_outputs(self, experiment, outputs):
            seen.append(("outputs", experiment, outputs))

    router = Router(make_config(0.5, router={"feature_sample_share": 1.0}), signer=Signer(b"k"),
                    backend_factory=fake_factory, sinks=[Sink()], rng=random.Random(1))

    def decode(signature):
        if rows:
            return PredictRequest(rows=[{"state": "KS", "total_day_minutes": 100.0}], signature_name="serving_default")
        return PredictRequest({"state": np.array([b"KS"], object), "total_day_minutes": np.array([100.0], np.float32)},
                           signature_name="serving_default")

    async def go():
        await router.refresh_metadata()
        return [await router.predict("churn", f"u{i}", decode, "http") for i in range(8)]

    served = asyncio.run(go())
    kinds = [k for k, _, _ in seen if k != "outputs"]
    assert kinds == ["rows" if rows else "arrays"] * 8
    outputs = [o for k, _, o in seen if k == "outputs"]
    assert len(outputs) == sum(s.served_by == "model" for s in served) > 0, "only the model's own answers"
    assert all(o["probability"].tolist() == [0.25] for o in outputs)
