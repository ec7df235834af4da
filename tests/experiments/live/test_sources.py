"""Data sources against real servers: stand-in router exporters over HTTP and a real Prometheus."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import start_http_server

from experiments.live import promql
from experiments.live.history import load_history
from experiments.live.sources import (
    PrometheusSource,
    Recorder,
    RouterMetricsSource,
    SourceError,
    make_source,
)
from experiments.live.sources.base import Reading, histogram_quantile
from router.metrics import RouterMetrics
from tests.support.processes import free_port
from tests.support.prometheus import PrometheusServer, RouterExporter

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
WEIGHTS = {"legacy": 0.99, "model": 0.01}


@pytest.fixture(scope="module")
def routers():
    """Two router replicas, shared by the module; each test uses its own experiment name."""
    pair = [RouterExporter(), RouterExporter()]
    yield pair
    for r in pair:
        r.close()


@pytest.fixture(scope="module")
def prometheus(routers):
    server = PrometheusServer([r.target for r in routers])
    yield server
    server.stop()


def test_router_metrics_sums_replicas_per_arm(routers):
    a, b = routers
    a.serve("sum", "legacy", 100, successes=80, failures=10)
    b.serve("sum", "legacy", 50, successes=40, failures=5, fallbacks=0)
    a.serve("sum", "model", 10, successes=6, failures=2, errors=1, fallbacks=1, latency=0.04)
    b.serve("sum", "model", 5, successes=4, failures=1, latency=0.3)
    a.serve("other-experiment", "model", 999, successes=999)
    with RouterMetricsSource([a.url, b.url + "/metrics"]) as source:
        reading = source.read("sum", now=T0)
        look = source.look(_config("sum"), now=T0)
    assert set(reading.counters) == {a.url + "/metrics", b.url + "/metrics"}
    totals = reading.totals()
    assert totals["legacy"] == {"exposures": 150, "successes": 120, "failures": 15, "errors": 0, "fallbacks": 0}
    assert totals["model"] == {"exposures": 15, "successes": 10, "failures": 3, "errors": 1, "fallbacks": 1}
    # 15 model requests: 10 at 40 ms (bucket 0.025-0.05], 5 at 300 ms (bucket 0.25-0.5]; rank 14.85.
    assert reading.p99_latency_seconds["model"] == pytest.approx(0.25 + 0.25 * (14.85 - 10) / 5)
    assert look.arms["model"].exposures == 15 and look.weights == WEIGHTS and look.time == T0


def test_one_unreachable_replica_fails_the_whole_look(routers):
    dead = f"http://127.0.0.1:{free_port()}"
    with RouterMetricsSource([routers[0].url, dead]) as source, pytest.raises(SourceError, match=f"{dead}/metrics are unreachable"):
        source.read("sum")


def test_histogram_quantile_matches_prometheus_rules():
    assert histogram_quantile(0.99, []) is None
    assert histogram_quantile(0.99, [(float("inf"), 0)]) is None
    assert histogram_quantile(0.5, [(0.1, 50), (0.2, 100), (float("inf"), 100)]) == pytest.approx(0.1)
    assert histogram_quantile(0.99, [(0.1, 0), (0.2, 100), (float("inf"), 100)]) == pytest.approx(0.199)
    # Rank in the +Inf bucket: the highest finite upper bound, as Prometheus answers.
    assert histogram_quantile(0.99, [(0.1, 10), (0.2, 20), (float("inf"), 100)]) == pytest.approx(0.2)


def test_recorder_folds_a_router_restart_into_monotonic_counts(routers, tmp_path):
    a, b = routers
    exp = "restart"
    recorder = Recorder(exp)
    a.serve(exp, "legacy", 100, successes=90)
    a.serve(exp, "model", 10, successes=9)
    b.serve(exp, "legacy", 100, successes=90)
    b.serve(exp, "model", 10, successes=9)
    with RouterMetricsSource([a.url, b.url]) as source:
        first = recorder.add(source.read(exp, T0), WEIGHTS)
        assert first.look.arms["model"].exposures == 20 and first.resets == ()
        a.serve(exp, "model", 5, successes=5)
        b.restart()  # b loses its 100 + 10 and counts afresh
        b.serve(exp, "model", 3, successes=2)
        second = recorder.add(source.read(exp, T0 + timedelta(minutes=1)), WEIGHTS)
        assert second.resets == (b.url + "/metrics",)
        assert second.look.arms["model"].exposures == 20 + 5 + 3
        assert second.look.arms["legacy"].exposures == 200  # b's legacy series is gone, nothing lost twice
        b.serve(exp, "legacy", 10, successes=9)
        third = recorder.add(source.read(exp, T0 + timedelta(minutes=2)), WEIGHTS)
    assert third.resets == () and third.look.arms["legacy"].exposures == 210
    recorder.history.check_counters()  # never goes down
    saved = load_history(recorder.save(tmp_path / "history.json"))
    assert saved == recorder.history


def test_recorder_sees_a_restart_whose_new_counts_exceed_the_old(routers):
    a, _ = routers
    exp = "restart-bigger"
    recorder = Recorder(exp)
    a.serve(exp, "model", 10, successes=9)
    with RouterMetricsSource([a.url]) as source:
        recorder.add(source.read(exp, T0), WEIGHTS)
        a.restart()
        a.serve(exp, "model", 50, successes=40)  # more than before: only `_created` shows the restart
        step = recorder.add(source.read(exp, T0 + timedelta(minutes=1)), WEIGHTS)
    assert step.resets == (a.url + "/metrics",)
    assert step.look.arms["model"].exposures == 60


def test_recorder_refuses_a_look_back_in_time():
    recorder = Recorder("x")
    recorder.add(Reading(T0, {}), WEIGHTS)
    with pytest.raises(ValueError, match="not after the last look"):
        recorder.add(Reading(T0, {}), WEIGHTS)


def test_make_source_chooses_by_flags():
    with make_source() as s:
        assert isinstance(s, RouterMetricsSource) and s.urls == ["http://127.0.0.1:8080/metrics"]
    with make_source(prometheus="http://p:9090/") as s:
        assert isinstance(s, PrometheusSource) and s.url == "http://p:9090"
    with pytest.raises(ValueError, match="not both"):
        make_source(prometheus="http://p:9090", metrics_urls=["http://r"])


# Against a real Prometheus --------------------------------------------------------------------


def test_every_named_query_is_valid_promql(prometheus):
    for query in promql.QUERIES.values():
        expr = query.render(experiment="sum", window="1m", model="churn")
        prometheus.query(expr)  # asserts status == success


def test_prometheus_source_agrees_with_scraping_the_routers(routers, prometheus):
    a, b = routers
    exp = "prom"
    a.serve(exp, "legacy", 300, successes=250, failures=20)
    b.serve(exp, "legacy", 200, successes=150, failures=30, fallbacks=0)
    a.serve(exp, "model", 7, successes=5, failures=1, errors=2, fallbacks=1, latency=0.04)
    b.serve(exp, "model", 4, successes=3, latency=0.3)
    a.set_weights(exp, WEIGHTS)
    prometheus.wait_for(f'sum(modelramp_requests_total{{experiment="{exp}"}})',
                        lambda r: r and float(r[0]["value"][1]) == 511, "the scrape of the last counts")
    with RouterMetricsSource([a.url, b.url]) as direct, PrometheusSource(prometheus.url) as source:
        via_prometheus, scraped = source.read(exp), direct.read(exp)
    assert via_prometheus.totals() == scraped.totals()
    assert via_prometheus.totals()["model"] == {"exposures": 11, "successes": 8, "failures": 1, "errors": 2, "fallbacks": 1}
    assert set(via_prometheus.counters) == {f"router/{a.target}", f"router/{b.target}"}
    # Counter creation times (what reveals a restart) arrive through Prometheus too.
    assert via_prometheus.started[f"router/{a.target}"] == pytest.approx(scraped.started[a.url + "/metrics"])
    assert via_prometheus.p99_latency_seconds["model"] == pytest.approx(scraped.p99_latency_seconds["model"])
    assert via_prometheus.p99_latency_seconds["legacy"] == pytest.approx(scraped.p99_latency_seconds["legacy"])
    weights = prometheus.query(promql.render("traffic_weight", experiment=exp))
    assert {r["metric"]["arm"]: float(r["value"][1]) for r in weights} == WEIGHTS
    error_rate = prometheus.query(promql.render("model_error_rate", experiment=exp))
    assert float(error_rate[0]["value"][1]) == pytest.approx(2 / 11)


def test_prometheus_source_reads_nothing_for_an_unknown_experiment(prometheus):
    with PrometheusSource(prometheus.url) as source:
        reading = source.read("never-ran")
    assert reading.empty and reading.counters == {}
    assert reading.p99_latency_seconds == {"legacy": None, "model": None}


def test_prometheus_down_is_a_source_error():
    with PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=2) as source:
        with pytest.raises(SourceError, match="is unreachable"):
            source.read("x")


def test_prometheus_rejecting_a_query_is_a_source_error(prometheus):
    with PrometheusSource(prometheus.url) as source, pytest.raises(SourceError, match="rejected the query"):
        source.query("sum by (")


def _config(name: str):
    from experiments.config import parse_config

    return parse_config({
        "name": name, "salt": "s", "model_name": "churn",
        "arms": {"legacy": {"weight": 0.99, "backend": {"kind": "legacy_http"}},
                 "model": {"weight": 0.01, "backend": {"kind": "tfserving_grpc", "model_name": "churn"}}},
    })


class BucketRouter:
    """A router replica's real metrics (router.metrics.RouterMetrics) on a free port, counted by bucket."""

    def __init__(self) -> None:
        self.metrics = RouterMetrics()
        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1", registry=self.metrics.registry)
        self.url = f"http://127.0.0.1:{self.port}"

    def serve(self, experiment: str, arm: str, bucket: int, requests: int, successes: int = 0, failures: int = 0) -> None:
        for _ in range(requests):
            self.metrics.requests.record(experiment, arm, "http", "200", 0.01)
            self.metrics.count_exposure(experiment, arm, bucket)
        for n in range(successes + failures):
            self.metrics.count_outcome(experiment, arm, bucket, n < successes)

    def restart(self) -> None:
        self.close()
        self.__init__()  # type: ignore[misc]  # a new process: fresh counters (on a new port, as a new pod would be)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def bucket_router():
    router = BucketRouter()
    yield router
    router.close()


def test_router_metrics_reads_the_buckets(bucket_router):
    r = bucket_router
    r.serve("b", "legacy", 0, 5, successes=3, failures=1)
    r.serve("b", "legacy", 3, 2, successes=1)
    r.serve("b", "model", 3, 4, successes=2, failures=2)
    cfg = _config("b")
    with RouterMetricsSource([r.url]) as source:
        look = source.look(cfg, now=T0)
    assert look.buckets == cfg.router.analysis_buckets == 64
    legacy, model = look.arms["legacy"], look.arms["model"]
    assert (legacy.exposures, legacy.successes, legacy.failures) == (7, 4, 1)
    assert legacy.buckets.exposures[:4] == (5, 0, 0, 2) and sum(legacy.buckets.exposures) == 7
    assert model.buckets.failures[3] == 2 and model.buckets.successes[3] == 2


def test_outcomes_counted_without_their_bucket_make_the_look_request_level(bucket_router):
    r = bucket_router
    r.serve("old-outcomes", "legacy", 0, 5)
    r.serve("old-outcomes", "model", 1, 5)
    r.metrics.outcomes.labels("old-outcomes", "model", "success").inc(3)  # as an intake that does not know buckets
    with RouterMetricsSource([r.url]) as source:
        look = source.look(_config("old-outcomes"), now=T0)
    assert look.arms["model"].successes == 3 and look.buckets is None


def test_recorder_folds_bucket_counts_across_a_restart(bucket_router, tmp_path):
    r, other = bucket_router, BucketRouter()
    try:
        recorder = Recorder("fold")
        r.serve("fold", "legacy", 2, 10, successes=6, failures=2)
        r.serve("fold", "model", 5, 3, successes=1, failures=1)
        other.serve("fold", "model", 5, 1, successes=1)
        with RouterMetricsSource([r.url, other.url]) as source:
            first = recorder.add(source.read("fold", T0), WEIGHTS)
        assert first.look.arms["model"].buckets.exposures[5] == 4
        r.serve("fold", "model", 7, 2, successes=2)
        other.restart()  # loses its one model request; counts afresh
        other.serve("fold", "model", 5, 1, failures=1)
        with RouterMetricsSource([r.url, other.url]) as source:
            second = recorder.add(source.read("fold", T0 + timedelta(minutes=1)), WEIGHTS)
    finally:
        other.close()
    model = second.look.arms["model"]
    assert (model.exposures, model.successes, model.failures) == (7, 4, 2)
    assert model.buckets.exposures[5] == 5 and model.buckets.exposures[7] == 2
    assert model.buckets.failures[5] == 2
    recorder.history.check_counters()
    assert recorder.history.buckets == 64
    assert load_history(recorder.save(tmp_path / "h.json")) == recorder.history
