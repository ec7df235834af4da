"""Two real `modelramp router` processes and a real Prometheus scraping both, for the dashboard and alert checks.

- The serving router (experiment "dash-check") splits predict requests between the real legacy
  system and a model backend that refuses connections, so the model arm's errors, fallbacks and
  latency series are real.
- The skew router (experiment "dash-skew") calls the real model server and runs with `--baseline`
  (version 2's feature baseline), sketching every request: its traffic is the test split with a
  deliberate skew, so drift verdicts, limits and anomaly counters are the router's own.
- A decision exporter serves `experiments.live.decision_metrics.DecisionMetrics` (the ramp
  decision gauges) from a real HTTP server, as `modelramp analyze --serve` or a Pushgateway
  would: the analyzer's own decision on a recorded history (tests/data/histories), relabelled
  to the serving experiment and stamped now; `LiveStack.decide` replaces it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import start_http_server

from experiments.config import load_config
from experiments.live.analysis import Analysis, analyze
from experiments.live.decision_metrics import DecisionMetrics
from experiments.live.history import load_history
from tests.support.processes import Process, free_port, wait_until
from tests.support.prometheus import PrometheusServer

SERVING_EXPERIMENT, SKEW_EXPERIMENT, MODEL = "dash-check", "dash-skew", "churn"
SIGNING_KEY = "dash-check-key"
# The deliberate skew: minutes sent as seconds in two features, a renamed category.
SCALED, SPARED, RENAMED = "total_day_minutes", "total_eve_minutes", "area_code"
RENAME = ("area_code_415", "415")
# SPARED drifts as much as SCALED, but its own limits are out of reach: no verdict, no alert.
SKEW_SETTINGS: dict[str, Any] = {"min_sample": 200, "interval_seconds": 0.2, "features": {SPARED: {"psi": 1000.0, "js_distance": 1.0}}}
BATCH = 5  # rows per predict request
HISTORIES = Path(__file__).resolve().parents[1] / "data" / "histories"
_UNITS = itertools.count(1)


def skewed(row: dict) -> dict:
    row = {**row, SCALED: row[SCALED] * 60, SPARED: row[SPARED] * 60}
    if row[RENAMED] == RENAME[0]:
        row[RENAMED] = RENAME[1]
    return row


@dataclass
class LiveStack:
    prometheus: PrometheusServer
    serving: httpx.Client
    skew: httpx.Client
    rows: Iterator[dict]
    processes: list[Process] = field(default_factory=list)
    decisions: DecisionMetrics = field(default_factory=DecisionMetrics)
    decision_server: Any = None  # (WSGI server, thread) of start_http_server

    def decide(self, analysis: Analysis) -> None:
        """Export `analysis` as the serving experiment's decision (stamped now unless it has a time)."""
        if analysis.time is None:
            analysis = dataclasses.replace(analysis, time=datetime.now(timezone.utc))
        self.decisions.update(dataclasses.replace(analysis, experiment=SERVING_EXPERIMENT))

    def serving_traffic(self, n: int = 8) -> None:
        """Predict requests from distinct units, and an outcome for each (every third a failure)."""
        outcomes = []
        for unit in itertools.islice(_UNITS, n):
            r = self.serving.post(f"/v1/models/{MODEL}:predict", json={"instances": [next(self.rows)]}, headers={"X-Unit-Id": f"u{unit}"})
            assert r.status_code == 200, r.text
            outcomes.append({"request_id": r.headers["X-Modelramp-Outcome-Id"], "success": unit % 3 != 0})
        assert self.serving.post("/v1/outcomes", json=outcomes).status_code < 300

    def skew_traffic(self, requests: int = 4) -> None:
        """Skewed test-split rows, BATCH per request, to the router that sketches them."""
        for _ in range(requests):
            batch = [skewed(next(self.rows)) for _ in range(BATCH)]
            r = self.skew.post(f"/v1/models/{MODEL}:predict", content=json.dumps({"instances": batch}),
                               headers={"X-Unit-Id": f"s{next(_UNITS)}", "Content-Type": "application/json"})
            assert r.status_code == 200, r.text

    def traffic(self) -> None:
        """Both routers' counters move, so rates and ratios over short windows are defined."""
        self.serving_traffic()
        self.skew_traffic()

    def close(self) -> None:
        for client in (self.serving, self.skew):
            client.close()
        self.prometheus.stop()
        if self.decision_server is not None:
            server, thread = self.decision_server
            server.shutdown()
            server.server_close()
            thread.join()
        for proc in self.processes:
            proc.stop()


def _router(tmp: Path, name: str, config: dict, *extra: str) -> tuple[Process, str]:
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = Process(["router", "--config", str(tmp / f"{name}.yaml"), "--host", "127.0.0.1", "--http-port", str(port),
                    "--grpc-port", str(free_port()), *extra], tmp / f"{name}.log", env={"MODELRAMP_SIGNING_KEY": SIGNING_KEY})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout=60, what=f"{name} router up", proc=proc.proc)
    except Exception:
        print(proc.log())
        proc.stop()
        raise
    return proc, url


def recorded_decision(name: str) -> Analysis:
    """The analyzer's decision on a recorded history (tests/data/histories/<name>.json), stamped now."""
    analysis = analyze(load_history(HISTORIES / f"{name}.json", allow_resets=True), load_config(HISTORIES / "experiment.yaml"))
    return dataclasses.replace(analysis, time=datetime.now(timezone.utc))


def _decision_exporter(decisions: DecisionMetrics) -> tuple[tuple[Any, threading.Thread], str]:
    port = free_port()
    return start_http_server(port, addr="127.0.0.1", registry=decisions.registry), f"127.0.0.1:{port}"


def start(tmp: Path, models_dir: Path, model_target: str, legacy_url: str, rows: list[dict]) -> LiveStack:
    legacy = {"kind": "legacy_http", "url": legacy_url}
    serving = {"name": SERVING_EXPERIMENT, "salt": "dash-salt", "model_name": MODEL,
               "arms": {"legacy": {"weight": 0.5, "backend": legacy},
                        # Nobody listens there: every model-arm call fails and falls back to legacy.
                        "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": f"127.0.0.1:{free_port()}",
                                                             "model_name": MODEL, "timeout_ms": 200}}},
               "fallback": {"policy": "legacy", "circuit_breaker": {"enabled": False}}}
    skew = {"name": SKEW_EXPERIMENT, "salt": "skew-salt", "model_name": MODEL,
            "arms": {"legacy": {"weight": 0.5, "backend": legacy},
                     "model": {"weight": 0.5, "backend": {"kind": "tfserving_grpc", "target": model_target,
                                                          "model_name": MODEL, "version": 2}}},
            "skew": SKEW_SETTINGS}
    baseline = models_dir / MODEL / "2" / "modelramp" / "baseline.json"
    processes: list[tuple[Process, str]] = []  # (router, its URL)
    decisions = DecisionMetrics()
    decision_server, decision_target = _decision_exporter(decisions)
    try:
        for name, config, extra in (("serving", serving, ()), ("skew", skew, ("--baseline", str(baseline)))):
            processes.append(_router(tmp, name, config, *extra))
        urls = [url for _, url in processes]
        prometheus = PrometheusServer([*(url.removeprefix("http://") for url in urls), decision_target])
    except BaseException:  # pytest.skip (no prometheus on a laptop) too: it is not an Exception
        for proc, _ in processes:
            proc.stop()
        decision_server[0].shutdown()
        decision_server[0].server_close()
        raise
    stack = LiveStack(prometheus, httpx.Client(base_url=urls[0], timeout=10), httpx.Client(base_url=urls[1], timeout=10),
                      itertools.cycle(rows), [proc for proc, _ in processes], decisions, decision_server)
    stack.decide(recorded_decision("hold"))
    return stack
