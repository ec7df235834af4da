"""The ramp controller on real parts: router exporters over HTTP, the YAML file store, SQLite, Prometheus."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from experiments.config import load_config
from experiments.live import controller as controller_module
from experiments.live.controller import Controller
from experiments.live.decision_metrics import DecisionMetrics
from experiments.live.sources import PrometheusSource, RouterMetricsSource
from experiments.live.sources.base import Reading
from experiments.live.warmup import WARMUP_LIMIT_SECONDS
from experiments.live.weights import FileWeightStore, NopWeightStore
from experiments.store import Store
from tests.support.experiment import write_config
from tests.support.processes import free_port
from tests.support.prometheus import PrometheusServer, Pushgateway, RouterExporter

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
EXP = "clf-v2-vs-legacy"
STAGES = {"stages": [{"percent": 1, "min_duration_seconds": 0, "min_samples": 50},
                     {"percent": 5, "min_duration_seconds": 0, "min_samples": 50},
                     {"percent": 100, "min_duration_seconds": 0, "min_samples": 50}]}
CRITERIA = {"non_inferiority_margin": 0.05}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def routers():
    pair = [RouterExporter(), RouterExporter()]
    yield pair
    for r in pair:
        r.close()


@pytest.fixture
def config_path(tmp_path):
    return write_config(tmp_path / "experiment.yaml", EXP, 0.01, ramp=STAGES, criteria=CRITERIA)


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "audit.db")
    yield s
    s.close()


def make(routers, config_path, store, *, holder="ctl-a", dry_run=False, clock=None, source=None) -> Controller:
    weights = FileWeightStore(config_path)
    return Controller(source or RouterMetricsSource([r.url for r in routers]),
                      NopWeightStore(weights) if dry_run else weights, store, holder=holder,
                      lease_ttl_seconds=600, clock=clock or Clock())


def traffic(router: RouterExporter, model_share: float, n: int = 20_000, model_rate: float = 0.8) -> None:
    """n requests split by model_share, all with outcomes; legacy succeeds 80% of the time."""
    m = round(n * model_share)
    router.serve(EXP, "legacy", n - m, successes=round((n - m) * 0.8), failures=(n - m) - round((n - m) * 0.8))
    router.serve(EXP, "model", m, successes=round(m * model_rate), failures=m - round(m * model_rate))


def test_ramps_stage_by_stage_and_records_every_decision(routers, config_path, store):
    ctl = make(routers, config_path, store)
    traffic(routers[0], 0.01, 60_000)
    traffic(routers[1], 0.01, 60_000)
    first = ctl.step()
    assert first.decision == "ramp" and first.applied, first.reason
    assert load_config(config_path).weights == {"legacy": 0.95, "model": 0.05}
    assert first.weights_before == {"legacy": 0.99, "model": 0.01} and first.weights_after == {"legacy": 0.95, "model": 0.05}
    assert first.stage_percent == 1 and first.applied_by == "ctl-a"
    assert first.counts["model"]["exposures"] == 1200 and first.statistics["decision"] == "ramp"
    assert first.statistics["difference"]["method"].startswith("Mantel-Haenszel")

    second = ctl.step()  # no new traffic in the 5% stage yet
    assert second.decision == "hold" and not second.applied
    assert "0 of 50 model-arm exposures" in second.reason

    traffic(routers[0], 0.05, 20_000)
    third = ctl.step()
    assert third.decision == "ramp" and third.applied, third.reason
    assert load_config(config_path).weights == {"legacy": 0.0, "model": 1.0}
    settle = ctl.step()  # the first look after a change is a transition: its counts are not compared
    assert settle.decision == "hold" and not settle.applied
    traffic(routers[1], 1.0, 2_000)
    fourth = ctl.step()
    assert fourth.decision == "ship" and not fourth.applied and "weights already in force" in fourth.reason
    assert [d.decision for d in store.decisions(EXP)] == ["ramp", "hold", "ramp", "hold", "ship"]
    assert len(store.looks(EXP)) == 5


def test_rolls_back_a_worse_model(routers, config_path, store):
    traffic(routers[0], 0.01, 100_000, model_rate=0.5)
    record = make(routers, config_path, store).step()
    assert record.decision == "rollback" and record.applied
    assert "significantly worse" in record.reason
    assert load_config(config_path).weights == {"legacy": 1.0, "model": 0.0}


def _warming(router: RouterExporter, n: int = 20_000) -> None:
    """A look of a rollout whose TF Serving pods are not ready: every model-arm request fell back."""
    m = n // 100
    router.serve(EXP, "legacy", n - m, successes=round((n - m) * 0.8), failures=(n - m) - round((n - m) * 0.8))
    router.serve(EXP, "model", m, fallbacks=m)


def test_holds_while_the_model_arm_warms_up_then_counts_from_its_first_answer(routers, config_path, store):
    _warming(routers[0])
    ctl = make(routers, config_path, store)
    ctl.metrics = DecisionMetrics()
    record = ctl.step()
    # The whole history says rollback (every model-arm request fell back); these are the rollout's fallbacks.
    assert record.decision == "hold" and not record.applied, record.reason
    assert "warming up" in record.reason and "whole history said rollback" in record.reason
    assert record.statistics["code"] == "warming_up" and record.statistics["analysis_decision"] == "rollback"
    # The analysis' own hold, exported as such: not controller_hold, which ModelrampControllerFailing watches.
    exported = _samples(ctl.metrics.exposition().decode())
    assert exported[("modelramp_decision_reason", (("code", "warming_up"), ("experiment", EXP)))] == 1
    assert exported[("modelramp_decision_reason", (("code", "controller_hold"), ("experiment", EXP)))] == 0
    assert exported[("modelramp_decision", (("decision", "hold"), ("experiment", EXP)))] == 1
    assert load_config(config_path).weights == {"legacy": 0.99, "model": 0.01}
    assert record.statistics["warmup_end"] is None
    # The pods are ready: the model answers (as well as legacy). Counted from this look on, no fallback.
    traffic(routers[0], 0.01, 100_000)
    record = ctl.step()
    assert record.decision == "hold" and "started answering at this look" in record.reason, record.reason
    first_answer = record.statistics["warmup_end"]
    assert first_answer == record.time.isoformat()
    traffic(routers[0], 0.01, 100_000)
    record = ctl.step()
    assert record.decision == "ramp" and record.applied, record.reason
    assert record.statistics["warmup_end"] == first_answer
    assert load_config(config_path).weights == {"legacy": 0.95, "model": 0.05}


def test_a_model_arm_that_never_answers_is_rolled_back_after_the_warm_up_limit(routers, config_path, store):
    clock = Clock()
    decisions = []
    while not decisions or decisions[-1] != "rollback":
        _warming(routers[0], 2_000)
        record = make(routers, config_path, store, clock=clock).step()
        decisions.append(record.decision)
        assert len(decisions) < 40, decisions
    elapsed = clock.now - T0
    assert set(decisions[:-1]) == {"hold"} and elapsed.total_seconds() > WARMUP_LIMIT_SECONDS, (decisions, elapsed)
    assert record.applied and "fallback" in record.reason, record.reason
    assert load_config(config_path).weights == {"legacy": 1.0, "model": 0.0}


def test_dry_run_decides_but_writes_nothing(routers, config_path, store):
    text = config_path.read_text()
    traffic(routers[0], 0.01, 100_000)
    record = make(routers, config_path, store, dry_run=True).step()
    assert record.decision == "ramp" and not record.applied
    assert "dry run: would write" in record.reason and record.applied_by == "dry-run:ctl-a"
    assert config_path.read_text() == text


def test_unreachable_routers_hold(routers, config_path, store):
    ctl = make([], config_path, store, source=RouterMetricsSource([f"http://127.0.0.1:{free_port()}"]))
    record = ctl.step()
    assert record.decision == "hold" and "cannot read counters" in record.reason and "unreachable" in record.reason
    assert store.looks(EXP) == []


def test_prometheus_down_holds(config_path, store):
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=2)
    record = make([], config_path, store, source=source).step()
    source.close()
    assert record.decision == "hold"
    assert "cannot read counters: Prometheus at" in record.reason and "is unreachable" in record.reason


def test_empty_counters_hold(routers, config_path, store):
    routers[0].serve("another-experiment", "model", 100, successes=100)
    record = make(routers, config_path, store).step()
    assert record.decision == "hold" and "no counters for experiment" in record.reason


def test_router_restart_holds_once_then_continues(routers, config_path, store):
    ctl = make(routers, config_path, store)
    routers[0].serve(EXP, "legacy", 990, successes=800, failures=190)
    routers[0].serve(EXP, "model", 10, successes=8, failures=2)
    routers[1].serve(EXP, "legacy", 990, successes=800, failures=190)
    routers[1].serve(EXP, "model", 10, successes=8, failures=2)
    assert ctl.step().decision == "hold"  # too few samples
    routers[1].restart()
    traffic(routers[1], 0.01, 100_000)
    reset = ctl.step()
    assert reset.decision == "hold" and "counters reset on" in reset.reason and routers[1].url in reset.reason
    assert "analysis said ramp" in reset.reason
    assert load_config(config_path).weights["model"] == 0.01
    after = ctl.step()
    assert after.decision == "ramp" and after.applied
    # The history kept growing: 20 model exposures before the restart, 1,000 after.
    assert store.looks(EXP)[-1].look["arms"]["model"]["exposures"] == 1020


def test_second_controller_only_watches(routers, config_path, store):
    traffic(routers[0], 0.01, 100_000)
    clock = Clock()
    a = make(routers, config_path, store, holder="ctl-a", clock=clock)
    b = make(routers, config_path, store, holder="ctl-b", clock=clock)
    assert a.step().decision == "ramp"
    watched = b.step()
    assert watched.decision == "hold" and not watched.applied
    assert "another controller holds the lease: ctl-a until" in watched.reason
    assert len(store.looks(EXP)) == 1  # the watcher adds nothing to the history


def test_lost_lease_before_applying_holds(routers, config_path, store):
    traffic(routers[0], 0.01, 100_000)
    clock = Clock()
    real = RouterMetricsSource([r.url for r in routers])

    class Paused:
        """Reads the routers, but the controller 'pauses' past its lease and ctl-b takes over."""

        description = real.description

        def read(self, experiment, now=None):
            reading = real.read(experiment, now)
            clock.now += timedelta(hours=1)
            assert store.acquire_lease(f"ramp/{EXP}", "ctl-b", 600, clock.now)
            return reading

    record = make(routers, config_path, store, clock=clock, source=Paused()).step()
    real.close()
    assert record.decision == "hold" and "lost the lease before applying ramp" in record.reason
    assert load_config(config_path).weights["model"] == 0.01


def test_weights_changed_under_us_hold(routers, config_path, store):
    traffic(routers[0], 0.01, 100_000)
    real = RouterMetricsSource([r.url for r in routers])

    class EditedMeanwhile:
        description = real.description

        def read(self, experiment, now=None):
            reading = real.read(experiment, now)
            FileWeightStore(config_path).apply({"legacy": 0.8, "model": 0.2})  # someone else ramps by hand
            return reading

    record = make(routers, config_path, store, source=EditedMeanwhile()).step()
    real.close()
    assert record.decision == "hold" and "could not apply ramp" in record.reason
    assert "somebody else changed them" in record.reason
    assert load_config(config_path).weights["model"] == 0.2


def test_analysis_failure_holds(routers, config_path, store, monkeypatch):
    traffic(routers[0], 0.01, 100_000)

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(controller_module, "analyze", broken)
    record = make(routers, config_path, store).step()
    assert record.decision == "hold" and "the analysis failed (ZeroDivisionError" in record.reason


def test_a_new_controller_continues_the_stored_history(routers, config_path, store):
    routers[0].serve(EXP, "legacy", 990, successes=800, failures=190)
    routers[0].serve(EXP, "model", 10, successes=8, failures=2)
    clock = Clock()
    assert make(routers, config_path, store, clock=clock).step().decision == "hold"
    traffic(routers[0], 0.01, 100_000)
    ctl = make(routers, config_path, store, holder="ctl-a", clock=clock)  # e.g. after a restart
    assert ctl.step().decision == "ramp"
    assert [s.look["arms"]["model"]["exposures"] for s in store.looks(EXP)] == [10, 1010]


def test_run_loops_and_releases_the_lease(routers, config_path, store):
    routers[0].serve(EXP, "model", 5, successes=5)
    routers[0].serve(EXP, "legacy", 495, successes=400, failures=95)
    seen = []
    make(routers, config_path, store).run(interval_seconds=0, max_steps=3, on_step=seen.append)
    assert [r.decision for r in seen] == ["hold", "hold", "hold"]
    assert store.lease_holder(f"ramp/{EXP}") is None


def test_ramps_from_a_real_prometheus(routers, config_path, store):
    prometheus = PrometheusServer([r.target for r in routers])
    try:
        traffic(routers[0], 0.01, 50_000)
        traffic(routers[1], 0.01, 50_000)
        prometheus.wait_for(f'sum(modelramp_requests_total{{experiment="{EXP}"}})',
                            lambda r: r and float(r[0]["value"][1]) == 100_000, "both routers scraped")
        with PrometheusSource(prometheus.url) as source:
            ctl = Controller(source, FileWeightStore(config_path), store, holder="ctl-prom")
            record = ctl.step()
    finally:
        prometheus.stop()
    assert record.decision == "ramp" and record.applied, record.reason
    assert record.counts["model"]["exposures"] == 1000
    assert load_config(config_path).weights == {"legacy": 0.95, "model": 0.05}


def test_reading_is_what_the_controller_records():
    # The raw per-replica counters stored with each look are plain JSON.
    reading = Reading(T0, {"r1": {"model": {"exposures": 1}}})
    assert reading.totals()["model"]["exposures"] == 1 and not reading.empty


# The CLI, as real processes ----------------------------------------------------------------------


def _modelramp(*args: str):
    import subprocess
    import sys

    from tests.support.processes import REPO

    return subprocess.run([sys.executable, "-m", "experiments.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_ramp_cli_once_then_log(routers, config_path, tmp_path):
    traffic(routers[0], 0.01, 100_000)
    db = str(tmp_path / "cli.db")
    dry = _modelramp("ramp", "--config", str(config_path), "--metrics-url", routers[0].url, "--db", db, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "ramp" in dry.stdout and "not applied" in dry.stdout and "dry run: would write" in dry.stdout
    assert load_config(config_path).weights["model"] == 0.01
    once = _modelramp("ramp", "--config", str(config_path), "--metrics-url", routers[0].url, "--db", db, "--once",
                      "--who", "ci-bot")
    assert once.returncode == 0, once.stderr
    assert load_config(config_path).weights["model"] == 0.05
    log = _modelramp("ramp", "--config", str(config_path), "--db", db, "--log")
    assert "2 decision(s)" in log.stdout and "by ci-bot" in log.stdout and "by dry-run:" in log.stdout
    rows = [json.loads(line) for line in _modelramp("ramp", "--config", str(config_path), "--db", db, "--log", "--json").stdout.splitlines()]
    assert [(r["decision"], r["applied"]) for r in rows] == [("ramp", False), ("ramp", True)]
    assert rows[1]["weights_after"] == {"legacy": 0.95, "model": 0.05} and rows[1]["statistics"]["srm"]["mismatch"] is False


def test_ramp_cli_errors_are_one_line(config_path, tmp_path):
    missing = _modelramp("ramp", "--config", str(tmp_path / "nope.yaml"), "--db", str(tmp_path / "a.db"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "modelramp ramp: error: cannot read experiment config" in missing.stderr
    bad_db = _modelramp("ramp", "--config", str(config_path), "--db", str(tmp_path / "no" / "dir" / "a.db"))
    assert bad_db.returncode == 2 and "cannot open the audit database" in bad_db.stderr and "Traceback" not in bad_db.stderr
    neither = _modelramp("ramp")
    assert neither.returncode == 2 and "needs --config FILE" in neither.stderr
    down = _modelramp("ramp", "--config", str(config_path), "--metrics-url", f"http://127.0.0.1:{free_port()}",
                      "--db", str(tmp_path / "b.db"))
    assert down.returncode == 0 and "hold" in down.stdout and "unreachable" in down.stdout


def test_ramp_cli_writes_a_configmap_through_kubeconfig(routers, tmp_path):
    """`ramp --configmap` with the official client, pointed by a kubeconfig at the stand-in API server."""
    from tests.support.experiment import config_dict
    from tests.support.kube_standin import KubeStandin

    kube = KubeStandin(token="t0ken")
    try:
        kube.put_configmap("prod", "modelramp-experiment",
                           {"experiment.yaml": yaml.safe_dump(config_dict(EXP, 0.01, ramp=STAGES, criteria=CRITERIA))})
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": kube.url}}],
            "users": [{"name": "ramp", "user": {"token": "t0ken"}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "ramp"}}],
        }))
        traffic(routers[0], 0.01, 100_000)
        import os
        import subprocess
        import sys

        from tests.support.processes import REPO

        done = subprocess.run(
            [sys.executable, "-m", "experiments.cli", "ramp", "--configmap", "prod/modelramp-experiment",
             "--metrics-url", routers[0].url, "--db", str(tmp_path / "k.db")],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            # Not in a pod: without KUBERNETES_* the client falls back to the kubeconfig.
            env={**{k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}, "KUBECONFIG": str(kubeconfig)},
        )
        assert done.returncode == 0, done.stderr
        assert "ramp" in done.stdout and "not applied" not in done.stdout
        stored = yaml.safe_load(kube.configmaps[("prod", "modelramp-experiment")]["data"]["experiment.yaml"])
        assert stored["arms"]["model"]["weight"] == 0.05
        assert [r["method"] for r in kube.requests].count("PATCH") == 1
    finally:
        kube.close()


def test_every_step_exports_the_decision_as_metrics(routers, config_path, store, tmp_path):
    published: list[bytes] = []
    weights = FileWeightStore(config_path)
    ctl = Controller(RouterMetricsSource([r.url for r in routers]), weights, store, holder="ctl-a", lease_ttl_seconds=600,
                     clock=Clock(), publish=lambda m: published.append(m.exposition()))
    traffic(routers[0], 0.01, 60_000)
    record = ctl.step()
    assert record.decision == "ramp" and len(published) == 1
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(published[0].decode()) for s in f.samples}
    assert samples[("modelramp_decision", (("decision", "ramp"), ("experiment", EXP)))] == 1
    assert samples[("modelramp_decision", (("decision", "hold"), ("experiment", EXP)))] == 0
    assert samples[("modelramp_decision_reason", (("code", "ramp"), ("experiment", EXP)))] == 1
    assert samples[("modelramp_decision_stage_percent", (("experiment", EXP),))] == 1
    assert samples[("modelramp_decision_model_exposures", (("experiment", EXP),))] == 600
    assert samples[("modelramp_decision_min_samples", (("experiment", EXP),))] == 50
    assert ("modelramp_decision_difference", (("bound", "harm_upper"), ("experiment", EXP))) in samples
    assert 0 < samples[("modelramp_decision_srm_p_value", (("experiment", EXP),))] <= 1
    # A step that cannot read the source is the controller's own hold; the textfile form says so too.
    routers[0].close()
    routers[1].close()
    ctl.step()
    path = ctl.metrics.write_textfile(tmp_path / "decisions.prom")
    text = path.read_text()
    assert 'modelramp_decision_reason{code="controller_hold",experiment="clf-v2-vs-legacy"} 1.0' in text
    assert 'modelramp_decision{decision="hold",experiment="clf-v2-vs-legacy"} 1.0' in text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_ramp_cli_pushes_each_decision_to_a_real_pushgateway(routers, config_path, tmp_path):
    from experiments.cli import main

    gateway = Pushgateway()
    try:
        traffic(routers[0], 0.01, 100_000)
        code = main(["ramp", "--config", str(config_path), "--metrics-url", routers[0].url, "--db", str(tmp_path / "a.db"),
                     "--once", "--pushgateway", gateway.url])
        assert code == 0
        pushed = _samples(gateway.metrics())
        job = (("experiment", EXP), ("instance", ""), ("job", "modelramp-ramp"))
        assert pushed[("modelramp_decision", tuple(sorted((*job, ("decision", "ramp")))))] == 1
        assert pushed[("modelramp_decision_stage_percent", job)] == 1
        assert pushed[("modelramp_decision_model_exposures", job)] == 1000
        # The next step replaces the group (PUT): the stage moved on and no stale value is left.
        traffic(routers[0], 0.05, 100_000)
        assert main(["ramp", "--config", str(config_path), "--metrics-url", routers[0].url, "--db", str(tmp_path / "a.db"),
                     "--once", "--pushgateway", gateway.url]) == 0
        again = _samples(gateway.metrics())
        assert again[("modelramp_decision_stage_percent", job)] == 5
    finally:
        gateway.stop()


def test_ramp_cli_writes_the_decision_for_the_textfile_collector(routers, config_path, tmp_path):
    from experiments.cli import main

    traffic(routers[0], 0.01, 100_000)
    out = tmp_path / "modelramp.prom"
    assert main(["ramp", "--config", str(config_path), "--metrics-url", routers[0].url, "--db", str(tmp_path / "a.db"),
                 "--dry-run", "--metrics-textfile", str(out)]) == 0
    written = _samples(out.read_text())
    assert written[("modelramp_decision", (("decision", "ramp"), ("experiment", EXP)))] == 1
    assert main(["ramp", "--config", str(config_path), "--db", str(tmp_path / "a.db"),
                 "--metrics-textfile", str(tmp_path / "no" / "such.prom")]) == 2
