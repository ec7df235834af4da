"""A real Prometheus server and real router-like exporters on loopback, for the data-source tests.

`RouterExporter` serves the router's metric names (docs/architecture.md) with `prometheus_client` from
a real HTTP server, standing in for a router replica whose traffic the test controls exactly.
`PrometheusServer` runs Debian's `prometheus` binary with its own config and data folder, scraping
those exporters every 100 ms. `Pushgateway` runs Debian's `prometheus-pushgateway`, where the ramp
controller pushes its decision gauges.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from tests.support.binaries import require_binary
from tests.support.processes import free_port, wait_until

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class RouterExporter:
    """One stand-in router replica: the router's metrics, driven by the test, on a free port."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._make_metrics()
        self.port = free_port()
        self._server, self._thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = f"127.0.0.1:{self.port}"

    def _make_metrics(self) -> None:
        r = self.registry
        self.requests = Counter("modelramp_requests", "Requests", ["experiment", "arm", "protocol", "code"], registry=r)
        self.duration = Histogram("modelramp_request_duration_seconds", "Duration", ["experiment", "arm", "protocol"],
                                  buckets=BUCKETS, registry=r)
        self.errors = Counter("modelramp_backend_errors", "Backend errors", ["experiment", "arm", "reason"], registry=r)
        self.fallbacks = Counter("modelramp_fallbacks", "Fallbacks", ["experiment", "arm"], registry=r)
        self.outcomes = Counter("modelramp_outcomes", "Outcomes", ["experiment", "arm", "outcome"], registry=r)
        self.weight = Gauge("modelramp_traffic_weight", "Weight", ["experiment", "arm"], registry=r)
        self._metrics = [self.requests, self.duration, self.errors, self.fallbacks, self.outcomes, self.weight]

    def serve(self, experiment: str, arm: str, requests: int, successes: int = 0, failures: int = 0,
              errors: int = 0, fallbacks: int = 0, latency: float = 0.02, protocol: str = "http") -> None:
        """Count `requests` served by `arm` (split over two status codes and protocols like a router)."""
        ok = requests - errors
        self.requests.labels(experiment, arm, protocol, "200").inc(ok)
        if errors:
            self.requests.labels(experiment, arm, protocol, "503").inc(errors)
            self.errors.labels(experiment, arm, "timeout").inc(errors)
        if fallbacks:
            self.fallbacks.labels(experiment, arm).inc(fallbacks)
        for _ in range(requests):
            self.duration.labels(experiment, arm, protocol).observe(latency)
        if successes:
            self.outcomes.labels(experiment, arm, "success").inc(successes)
        if failures:
            self.outcomes.labels(experiment, arm, "failure").inc(failures)

    def set_weights(self, experiment: str, weights: dict[str, float]) -> None:
        for arm, w in weights.items():
            self.weight.labels(experiment, arm).set(w)

    def restart(self) -> None:
        """As a router restart: every series disappears and counting starts again from zero."""
        for m in self._metrics:
            self.registry.unregister(m)
        self._make_metrics()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class PrometheusServer:
    """Our own `prometheus` process scraping `targets` every 100 ms; ready once every target is up."""

    def __init__(self, targets: list[str]) -> None:
        binary = require_binary("prometheus")
        self.dir = Path(tempfile.mkdtemp(prefix="modelramp-prom-"))
        config = {
            "global": {"scrape_interval": "100ms", "scrape_timeout": "100ms", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": targets}]}],
        }
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=5.0)
        try:
            # Prometheus applies discovered targets only every few seconds: poll, do not sleep.
            wait_until(lambda: self._all_up(len(targets)), timeout=60, what="Prometheus targets up", proc=self.proc)
        except Exception:
            self.stop()
            raise

    def _all_up(self, n: int) -> bool:
        active = self.client.get("/api/v1/targets").json()["data"]["activeTargets"]
        return len(active) == n and all(t["health"] == "up" for t in active)

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.client.get("/api/v1/query", params={"query": expr}).json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, expr: str, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        """Poll an instant query until `predicate(result)` holds (a scrape has landed)."""
        wait_until(lambda: predicate(self.query(expr)), timeout=30, what=what, proc=self.proc)

    def settle(self, expr: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0,
               each: Callable[[], object] = lambda: None) -> list[dict[str, Any]]:
        """Poll an instant query (calling `each` before every poll, e.g. to send traffic) until
        `done(result)` holds; returns that result, or fails the test showing the last one."""
        last: list[list[dict[str, Any]]] = [[]]

        def check() -> bool:
            each()
            last[0] = self.query(expr)
            return done(last[0])

        try:
            wait_until(check, timeout=timeout, what=expr)
        except TimeoutError:
            pytest.fail(f"no settled result for\n{expr}\nlast: {last[0]}")
        return last[0]

    def log(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Pushgateway:
    """Our own `prometheus-pushgateway` process on a free port; ready once it answers /-/ready."""

    def __init__(self) -> None:
        binary = require_binary("prometheus-pushgateway", package="prometheus-pushgateway")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="modelramp-pushgateway-"))
        self._log = open(self.dir / "pushgateway.log", "wb")
        # --persistence.file= (empty): in memory only. Debian's default file would hand every run
        # what earlier runs pushed.
        self.proc = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{self.port}", "--persistence.file="],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=5.0)
        try:
            wait_until(lambda: self.client.get("/-/ready").status_code == 200, timeout=30, what="Pushgateway ready",
                       proc=self.proc)
        except Exception:
            self.stop()
            raise

    def metrics(self) -> str:
        """What Prometheus would scrape from the gateway (every pushed group)."""
        return self.client.get("/metrics").text

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
