"""The analysis over HTTP as Argo Rollouts (web metric) and Flagger (webhooks) see it, and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from experiments.config import load_config
from experiments.live.controller import Controller
from experiments.live.history import load_history, parse_history
from experiments.live.service import Feed, analysis_document, create_app
from experiments.live.sources import RouterMetricsSource
from experiments.live.weights import FileWeightStore, NopWeightStore
from experiments.store import Store
from tests.support.asgi_server import serve_app
from tests.support.experiment import write_config
from tests.support.processes import REPO, Process, free_port, wait_until
from tests.support.prometheus import RouterExporter

DATA = Path(__file__).resolve().parents[1] / "data" / "histories"
CONFIG = DATA / "experiment.yaml"
FLAGGER_PAYLOAD = {"name": "churn-router", "namespace": "prod", "phase": "Progressing", "metadata": {}}


def _file_feed(name: str) -> Feed:
    return Feed(lambda: load_config(CONFIG), lambda: load_history(DATA / f"{name}.json", allow_resets=True), live=False)


@pytest.fixture(scope="module")
def client():
    feeds = {name: _file_feed(name) for name in ("ramp", "ship", "hold", "rollback", "blocked_srm")}
    feeds["broken"] = Feed(lambda: load_config(DATA / "missing.yaml"), lambda: load_history(DATA / "hold.json"))
    with serve_app(create_app(feeds)) as url, httpx.Client(base_url=url) as c:
        yield c


@pytest.mark.parametrize("name, decision, go, rollback", [
    ("ramp", "ramp", True, False), ("ship", "ship", True, False), ("hold", "hold", False, False),
    ("rollback", "rollback", False, True), ("blocked_srm", "blocked", False, False),
])
def test_argo_web_metric_reads_the_decision(client, name, decision, go, rollback):
    r = client.get(f"/v1/analysis/{name}")
    assert r.status_code == 200  # Argo evaluates the conditions only on a 2xx answer
    doc = r.json()
    assert (doc["decision"], doc["go"], doc["rollback"]) == (decision, go, rollback)
    assert doc["reason"] and doc["experiment"] == "clf-v2-vs-legacy"
    # Argo's successCondition `result.go` / `result.decision in [...]` work on this document.
    expected = analysis_document(_file_feed(name), datetime.now(timezone.utc))
    assert doc == expected


@pytest.mark.parametrize("name, promote, rollback", [
    ("ramp", 200, 412), ("ship", 200, 412), ("hold", 412, 412), ("rollback", 412, 200), ("blocked_srm", 412, 412),
])
def test_flagger_webhooks_gate_on_the_status_code(client, name, promote, rollback):
    r = client.post(f"/v1/gates/{name}/promote", json=FLAGGER_PAYLOAD)
    assert r.status_code == promote
    assert r.json()["reason"]  # Flagger logs the body of a halt
    assert client.post(f"/v1/gates/{name}/rollback", json=FLAGGER_PAYLOAD).status_code == rollback
    assert client.get(f"/v1/gates/{name}/promote").status_code == promote


def test_unknown_or_unreadable_experiments_are_errors_not_gos(client):
    assert client.get("/v1/analysis/nope").status_code == 404
    broken = client.post("/v1/gates/broken/promote", json=FLAGGER_PAYLOAD)
    assert broken.status_code == 503 and "cannot read experiment config" in broken.json()["detail"]
    listing = client.get("/v1/analysis").json()["experiments"]
    assert [d.get("decision") for d in listing] == ["blocked", None, "hold", "ramp", "rollback", "ship"]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_live_feed_from_a_recording_controller_and_stale_data(tmp_path):
    router = RouterExporter()
    try:
        path = write_config(tmp_path / "experiment.yaml", "live", 0.01, criteria={"non_inferiority_margin": 0.05},
                            ramp={"stages": [{"percent": 1, "min_duration_seconds": 0, "min_samples": 50},
                                             {"percent": 100, "min_duration_seconds": 0, "min_samples": 50}]})
        router.serve("live", "legacy", 99_000, successes=79_200, failures=19_800)
        router.serve("live", "model", 1_000, successes=800, failures=200)
        store = Store.open(tmp_path / "audit.db")
        t0 = datetime.now(timezone.utc)
        with RouterMetricsSource([router.url]) as source:
            Controller(source, NopWeightStore(FileWeightStore(path)), store, clock=lambda: t0).step()
        feed = Feed(lambda: load_config(path), lambda: parse_history(store.history_document("live"), allow_resets=True),
                    live=True, max_age_seconds=180)
        fresh = analysis_document(feed, t0 + timedelta(seconds=30))
        assert fresh["decision"] == "ramp" and fresh["go"] and fresh["data_age_seconds"] == 30
        stale = analysis_document(feed, t0 + timedelta(minutes=10))
        assert stale["decision"] == "hold" and not stale["go"] and stale["analysis_decision"] == "ramp"
        assert "600 s old" in stale["reason"]
        store.close()
    finally:
        router.close()


# The CLI, as real processes ----------------------------------------------------------------------


def test_serve_a_recorded_history_over_http(tmp_path):
    port = free_port()
    proc = Process(["analyze", "--serve", "--history", str(DATA / "ramp.json"), "--config", str(CONFIG),
                    "--port", str(port)], tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=60, what="analysis service", proc=proc.proc)
        doc = httpx.get(f"{base}/v1/analysis/clf-v2-vs-legacy").json()
        assert doc["decision"] == "ramp" and doc["go"] is True
        assert httpx.post(f"{base}/v1/gates/clf-v2-vs-legacy/promote", json=FLAGGER_PAYLOAD).status_code == 200
    finally:
        proc.stop()


def test_live_analyze_builds_a_replayable_history_file(tmp_path):
    router = RouterExporter()
    try:
        config = write_config(tmp_path / "experiment.yaml", "live-cli", 0.01)
        saved = tmp_path / "history.json"
        router.serve("live-cli", "legacy", 990, successes=800, failures=190)
        router.serve("live-cli", "model", 10, successes=8, failures=2)
        args = [sys.executable, "-m", "experiments.cli", "analyze", "--metrics-url", router.url, "--config", str(config),
                "--save-history", str(saved), "--json"]
        first = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["looks"] == 1
        router.serve("live-cli", "model", 10, successes=9, failures=1)
        second = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert json.loads(second.stdout)["looks"] == 2
        history = load_history(saved)
        assert [look.arms["model"].exposures for look in history.looks] == [10, 20]
        replay = subprocess.run([sys.executable, "-m", "experiments.cli", "analyze", "--history", str(saved),
                                 "--config", str(config), "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert json.loads(replay.stdout)["decision"] == json.loads(second.stdout)["decision"]
    finally:
        router.close()


def test_live_analyze_with_routers_down_is_one_clear_line(tmp_path):
    config = write_config(tmp_path / "experiment.yaml", "down", 0.01)
    r = subprocess.run([sys.executable, "-m", "experiments.cli", "analyze", "--metrics-url", f"http://127.0.0.1:{free_port()}",
                        "--config", str(config)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "modelramp analyze: error: router metrics at" in r.stderr and "unreachable" in r.stderr


def test_metrics_are_the_decisions_for_prometheus():
    feeds = {"rollback": _file_feed("rollback")}
    with serve_app(create_app(feeds)) as url, httpx.Client(base_url=url) as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(r.text) for s in f.samples}
    exp = ("experiment", "clf-v2-vs-legacy")
    assert samples[("modelramp_decision", (("decision", "rollback"), exp))] == 1
    assert samples[("modelramp_decision_reason", (("code", "harm"), exp))] == 1
    assert samples[("modelramp_decision_difference", (("bound", "ci_upper"), exp))] < 0
    assert samples[("modelramp_decision_buckets", (exp,))] == 1  # the recorded history is request-level
