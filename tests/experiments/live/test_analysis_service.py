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

DATA = Path(__file__).resolve().parents[2] / "data" / "histories"
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


def test_live_analyze_records_the_weights_document_over_the_config(tmp_path):
    """As the routers read them: a weights document for the experiment wins, one for another is ignored."""
    router = RouterExporter()
    try:
        config = write_config(tmp_path / "experiment.yaml", "live-w", 0.01)
        router.serve("live-w", "legacy", 950, successes=800, failures=150)
        router.serve("live-w", "model", 50, successes=40, failures=10)
        weights = tmp_path / "weights.yaml"

        def recorded(doc: str) -> dict:
            weights.write_text(doc)
            saved = tmp_path / f"history-{len(doc)}.json"
            r = subprocess.run([sys.executable, "-m", "experiments.cli", "analyze", "--metrics-url", router.url, "--config",
                                str(config), "--weights", str(weights), "--save-history", str(saved), "--json"],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            return dict(load_history(saved).looks[-1].weights)

        assert recorded("experiment: live-w\nweights: {legacy: 0.95, model: 0.05}\n") == {"legacy": 0.95, "model": 0.05}
        assert recorded("experiment: another\nweights: {legacy: 0.8, model: 0.2}\n") == {"legacy": 0.99, "model": 0.01}
        alone = subprocess.run([sys.executable, "-m", "experiments.cli", "analyze", "--history", str(DATA / "hold.json"),
                                "--weights", str(weights)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert alone.returncode == 2 and "--weights FILE goes with --config FILE" in alone.stderr
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


# The model arm's warm-up: fallbacks while no TF Serving pod of the new version is ready ---------


def _warmup_history(warm_looks: int, answered_looks: int, later_fallbacks: int = 0) -> dict:
    """`warm_looks` looks at 1%, 4 minutes apart, in which every model-arm request fell back (no ready
    endpoint), then `answered_looks` of ship.json's hourly looks on top of them (the first at 11:00,
    4 minutes after the last warm one): the first with 300 fallbacks more (the pods became ready
    during it), each later one with `later_fallbacks` more (the model's own)."""
    ship = json.loads((DATA / "ship.json").read_text())
    looks = [{"time": f"2026-11-23T10:{60 - 4 * (warm_looks - i):02d}:00Z", "weights": {"legacy": 0.99, "model": 0.01},
              "arms": {"legacy": {"exposures": 99_000 * (i + 1), "successes": 87_120 * (i + 1)},
                       "model": {"exposures": 1000 * (i + 1), "successes": 881 * (i + 1), "fallbacks": 1000 * (i + 1)}}}
             for i in range(warm_looks)]
    base = looks[-1]["arms"] if looks else {arm: {"exposures": 0, "successes": 0, "fallbacks": 0} for arm in ("legacy", "model")}
    for j, look in enumerate(ship["looks"][:answered_looks]):
        for arm in ("legacy", "model"):
            for name in ("exposures", "successes"):
                look["arms"][arm][name] += base[arm][name]
        look["arms"]["model"]["fallbacks"] = base["model"]["fallbacks"] + 300 + later_fallbacks * j
        looks.append(look)
    return {"experiment": "clf-v2-vs-legacy", "looks": looks}


def _warmup_feed(*args: int) -> Feed:
    document = _warmup_history(*args)
    return Feed(lambda: load_config(CONFIG), lambda: parse_history(document), live=False)


@pytest.fixture(scope="module")
def warmup_client():
    feeds = {"warming": _warmup_feed(2, 0), "first-answer": _warmup_feed(2, 1), "warmed": _warmup_feed(2, 2),
             "warmed-then-failing": _warmup_feed(2, 3, 200), "ready-in-first-look": _warmup_feed(0, 2),
             "never-ready": _warmup_feed(5, 0), "ready-too-late": _warmup_feed(5, 2)}
    with serve_app(create_app(feeds)) as url, httpx.Client(base_url=url) as c:
        yield c


# Gate -> open while warming up: Flagger's confirm-rollout, pre-rollout and rollout hooks keep the
# canary starting (a 412 would stop the very pods that end the warm-up); nothing ships, promotes or rolls back.
WAIT_OPENS = {"continue": 200, "ship": 412, "promote": 412, "rollback": 412}


@pytest.mark.parametrize("name", ["warming", "first-answer"])
def test_gates_wait_while_the_model_arm_has_not_answered(warmup_client, name):
    doc = warmup_client.get(f"/v1/analysis/{name}").json()
    # The whole history would roll back on the fallback guardrail: the rollout's fallbacks, not the model's.
    assert doc["analysis_decision"] == "rollback"
    assert (doc["decision"], doc["go"], doc["rollback"]) == ("wait", False, False)
    if name == "warming":
        assert "warming up" in doc["reason"] and "not counted against the model" in doc["reason"], doc["reason"]
    else:  # the look that ends the warm-up: counted from here on
        assert "started answering at this look" in doc["reason"] and "without those fallbacks" in doc["reason"], doc["reason"]
    for gate, status in WAIT_OPENS.items():
        assert warmup_client.post(f"/v1/gates/{name}/{gate}", json=FLAGGER_PAYLOAD).status_code == status, gate
        assert warmup_client.get(f"/v1/gates/{name}/{gate}").status_code == status, gate


@pytest.mark.parametrize("name", ["never-ready", "ready-too-late"])
def test_a_warm_up_longer_than_the_tools_progress_deadline_is_counted_against_the_model(warmup_client, name):
    """Five warm looks span 16 minutes (more than WARMUP_LIMIT_SECONDS): a model arm that only falls back
    that long is broken, or its pods are (a model erring on every request looks the same), so the
    whole history is analysed and the fallback guardrail rolls back."""
    doc = warmup_client.get(f"/v1/analysis/{name}").json()
    assert (doc["decision"], doc["rollback"], doc["warmup_end"]) == ("rollback", True, None), doc["reason"]
    assert "analysis_decision" not in doc and "fallback_rate" in doc["reason"]
    assert warmup_client.post(f"/v1/gates/{name}/rollback", json=FLAGGER_PAYLOAD).status_code == 200
    assert warmup_client.post(f"/v1/gates/{name}/continue", json=FLAGGER_PAYLOAD).status_code == 412


def test_after_the_warm_up_its_fallbacks_are_not_counted():
    from experiments.live.analysis import analyze

    history = parse_history(_warmup_history(2, 2))
    whole = analyze(history, load_config(CONFIG))
    assert whole.decision == "rollback" and any(g.name == "fallback_rate" and g.breached for g in whole.guardrails)
    doc = analysis_document(_warmup_feed(2, 2), datetime.now(timezone.utc))
    # Counted from the model's first answer, stage 1% has its hour and its 1,000 samples: ramp.
    assert doc["decision"] == "ramp" and doc["go"] and "analysis_decision" not in doc
    assert doc["warmup_end"] == "2026-11-23T11:00:00+00:00"  # the look at which the model first answered
    # None of those 1,000 model-arm requests fell back; the stage starts at the warm-up's end.
    fallback = next(g for g in doc["guardrails"] if g["name"] == "fallback_rate")
    assert fallback["value"] == 0 and not fallback["breached"]
    assert doc["stage"]["started"] == "2026-11-23T11:00:00+00:00"


def test_the_models_own_fallbacks_after_the_warm_up_still_roll_back(warmup_client):
    doc = warmup_client.get("/v1/analysis/warmed-then-failing").json()
    assert doc["decision"] == "rollback" and "fallback_rate" in doc["reason"]
    assert warmup_client.post("/v1/gates/warmed-then-failing/rollback", json=FLAGGER_PAYLOAD).status_code == 200
    assert warmup_client.post("/v1/gates/warmed-then-failing/continue", json=FLAGGER_PAYLOAD).status_code == 412


def test_an_experiment_without_a_warm_up_is_analysed_whole(warmup_client, client):
    from experiments.live.analysis import analyze

    # No fallback before the model's first answer: nothing is cut, the document is the plain analysis.
    doc = client.get("/v1/analysis/ship").json()
    assert doc["warmup_end"] is None and doc["decision"] == "ship"
    assert doc["decision"] == analyze(load_history(DATA / "ship.json"), load_config(CONFIG)).decision
    # Pods ready within the first look (700 answers beside 300 fallbacks): the warm-up ends at that look,
    # so that look is counted from, not counted.
    doc = warmup_client.get("/v1/analysis/ready-in-first-look").json()
    assert doc["warmup_end"] == "2026-11-23T11:00:00+00:00" and doc["decision"] == "ramp"
    assert analyze(parse_history(_warmup_history(0, 2)), load_config(CONFIG)).decision == "rollback"


def test_warm_up_metrics_say_held_not_rollback():
    with serve_app(create_app({"warming": _warmup_feed(2, 0)})) as url, httpx.Client(base_url=url) as c:
        text = c.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    exp = ("experiment", "clf-v2-vs-legacy")
    assert samples[("modelramp_decision", (("decision", "rollback"), exp))] == 0
    assert samples[("modelramp_decision", (("decision", "hold"), exp))] == 1
