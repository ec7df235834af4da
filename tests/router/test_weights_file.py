"""The weights file (`modelramp router --weights FILE`): overrides the config's weights while it names the config's
experiment (and salt), watched like the config; a file for another experiment or salt is rejected and counted.

Unit tests look once per file (`settle_seconds=0`); the last test runs a real router process.
"""

from __future__ import annotations

import os

import httpx
import pytest
import yaml

from router.config import ConfigError, parse_config
from router.core import Router
from router.reload import ConfigFile
from router.signing import Signer
from router.weights_file import Weights, parse_weights, weights_of, write_atomically
from tests.router.fakes import config_dict, fake_factory
from tests.router.stack import SIGNING_KEY, TOKEN, experiment
from tests.support.processes import Process, free_port, wait_until


def rejected(router: Router) -> float:
    return router.metrics.registry.get_sample_value("modelramp_config_reloads_total", {"source": "file", "result": "rejected"}) or 0.0


def put(path, doc) -> None:
    """Rename into place, as the ramp controller and a ConfigMap's symlink swap do."""
    write_atomically(path, doc if isinstance(doc, str) else yaml.safe_dump(doc))


def weights_doc(model: float, experiment: str = "churn-test", salt: str | None = "salt-1") -> dict:
    doc: dict = {"experiment": experiment, "weights": {"legacy": round(1 - model, 12), "model": model}}
    if salt is not None:
        doc["salt"] = salt
    return doc


@pytest.fixture
def files(tmp_path):
    config, weights = tmp_path / "exp.yaml", tmp_path / "weights.yaml"
    config.write_text(yaml.safe_dump(config_dict(0.01)))
    return config, weights


def test_parse_refuses_what_is_not_a_weights_document():
    assert parse_weights(b'{"experiment": "e", "weights": {"legacy": 0.9, "model": 0.1}}', "w").weights == {"legacy": 0.9, "model": 0.1}
    for text, why in [("[1, 2]", "mapping"), ("experiment: e\nweights: {model: 1.0}", "both arms"),
                      ("experiment: e\nweights: {legacy: 0.5, model: 0.2}", "sum to 1"),
                      ("experiment: e\nweights: {legacy: .nan, model: 1.0}", "from 0 to 1"),
                      ("weights: {legacy: 0.5, model: 0.5}", "experiment must"),
                      ("experiment: e\nweight: {legacy: 0.5, model: 0.5}", "unknown keys"),
                      ("experiment: e\nweights: {legacy: true, model: 0.0}", "number"),
                      ("experiment: [unclosed", "not valid YAML")]:
        with pytest.raises(ConfigError, match=why):
            parse_weights(text, "w")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_weights(b"\xff\xfe", "w")
    config = parse_config(config_dict(0.01))
    assert parse_weights(weights_of(config.with_weights({"legacy": 0.8, "model": 0.2})).dump(), "w") == \
        Weights("churn-test", {"legacy": 0.8, "model": 0.2}, "salt-1")


def test_weights_file_overrides_the_config_and_follows_its_changes(files):
    config, weights = files
    put(weights, weights_doc(0.05))
    source = ConfigFile(config, settle_seconds=0, weights=weights)
    loaded = source.load()
    assert loaded.weights == {"legacy": 0.95, "model": 0.05} and not source.load_rejections
    router = Router(loaded, signer=Signer(b"k"), backend_factory=fake_factory)
    assert not source.check(router), "nothing changed"

    put(weights, weights_doc(0.2))
    assert source.check(router) and router.state.weights == {"legacy": 0.8, "model": 0.2}
    applied = router.metrics.registry.get_sample_value("modelramp_config_reloads_total",
                                                       {"source": f"file {weights}", "result": "applied"})
    assert applied == 1

    # The config changes (a guardrail, a timeout): the weights file's weights stay in force.
    config.write_text(yaml.safe_dump(config_dict(0.01, router={"request_timeout_ms": 900})))
    os.utime(config, ns=(0, os.stat(config).st_mtime_ns + 1))
    assert source.check(router)
    assert router.state.weights["model"] == 0.2 and router.state.config.router.request_timeout_ms == 900

    weights.unlink()  # its ConfigMap deleted: back to the config's weights, the starting point
    assert source.check(router) and router.state.weights["model"] == 0.01
    assert rejected(router) == 0


def test_a_weights_file_for_another_experiment_or_salt_is_rejected_and_counted(files):
    config, weights = files
    source = ConfigFile(config, settle_seconds=0, weights=weights)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    assert router.state.weights["model"] == 0.01, "no weights file: the config's weights"
    put(weights, weights_doc(0.05))
    assert source.check(router) and router.state.weights["model"] == 0.05

    put(weights, weights_doc(0.5, experiment="another"))
    source.check(router)
    assert router.state.weights["model"] == 0.01, "a file for another experiment never applies; the config's weights do"
    assert rejected(router) == 1

    put(weights, weights_doc(0.5, salt="an-earlier-run"))
    source.check(router)
    assert router.state.weights["model"] == 0.01 and rejected(router) == 2

    put(weights, weights_doc(0.5, salt=None))  # no salt: checked by experiment only
    assert source.check(router) and router.state.weights["model"] == 0.5

    put(weights, "experiment: churn-test\nweights: {legacy: 0.5, model: 0.2}\n")  # does not parse: the last good stays
    assert not source.check(router)
    assert router.state.weights["model"] == 0.5 and rejected(router) == 3


def test_a_bad_weights_file_at_start_is_counted_and_the_config_weights_apply(files):
    config, weights = files
    put(weights, weights_doc(0.05, experiment="another"))
    source = ConfigFile(config, settle_seconds=0, weights=weights)
    assert source.load().weights["model"] == 0.01
    assert len(source.load_rejections) == 1 and "another" in source.load_rejections[0]


def test_a_new_experiment_in_the_config_starts_from_its_own_weights(files):
    config, weights = files
    put(weights, weights_doc(0.2))
    source = ConfigFile(config, settle_seconds=0, weights=weights)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    assert router.state.weights["model"] == 0.2
    put(config, config_dict(0.01, name="churn-v3"))
    assert source.check(router)
    assert router.state.config.name == "churn-v3" and router.state.weights["model"] == 0.01
    assert rejected(router) == 1  # the weights file, for the old experiment


def test_a_real_router_follows_its_weights_file_and_rejects_one_for_another_experiment(tmp_path):
    """A router process (`--weights`, watching every 0.1 s) with no backends running: weights only."""
    config_path, weights_path = tmp_path / "experiment.yaml", tmp_path / "weights" / "weights.yaml"
    weights_path.parent.mkdir()
    doc = experiment(f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", 0.01)
    config_path.write_text(yaml.safe_dump(doc))
    http_port = free_port()
    proc = Process(["router", "--config", str(config_path), "--weights", str(weights_path), "--host", "127.0.0.1",
                    "--http-port", str(http_port), "--grpc-port", str(free_port()), "--watch-interval", "0.1",
                    "--outcome-ledger", f"sqlite:///{tmp_path / 'outcomes.db'}"],
                   tmp_path / "router.log", env={"MODELRAMP_SIGNING_KEY": SIGNING_KEY, "MODELRAMP_WEIGHTS_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{http_port}"

    def model_weight() -> float:
        return httpx.get(f"{url}/v1/experiments/churn-it", timeout=5).json()["weights"]["model"]

    def reloads(result: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        return sum(s.value for f in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
                   for s in f.samples if s.name == "modelramp_config_reloads_total" and s.labels.get("result") == result)

    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout=60, what="router up", proc=proc.proc)
        assert model_weight() == 0.01, "no weights file yet: the config's weights"
        put(weights_path, {"experiment": "churn-it", "salt": "it-salt", "weights": {"legacy": 0.95, "model": 0.05}})
        wait_until(lambda: model_weight() == 0.05, timeout=30, what="the weights file applied")
        assert reloads("rejected") == 0

        put(weights_path, {"experiment": "churn-other", "weights": {"legacy": 0.5, "model": 0.5}})
        wait_until(lambda: reloads("rejected") == 1, timeout=30, what="the other experiment's weights rejected")
        assert model_weight() == 0.01, "the config's weights, never the other experiment's"

        put(weights_path, {"experiment": "churn-it", "salt": "it-salt", "weights": {"legacy": 0.8, "model": 0.2}})
        wait_until(lambda: model_weight() == 0.2, timeout=30, what="a good weights file applied again")
        assert "weights not applied" in proc.log()
    finally:
        proc.stop()
