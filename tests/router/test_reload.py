"""Config reload: file changes applied without restart, invalid files rejected (last good stays), address overrides.

These look at each file once (`settle_seconds=0`); waiting for a file changed in place to settle is
tests/router/test_reload_robust.py's."""

from __future__ import annotations

import os

import yaml

from router.core import Router
from router.reload import ConfigFile, put_weights, with_addresses
from router.signing import Signer
from tests.router.fakes import config_dict, fake_factory


def write(path, doc) -> None:
    text = yaml.safe_dump(doc)
    path.write_text(text)
    # Same-second rewrites of equal size still differ in content: the fingerprint hashes it.
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1))


def test_file_change_is_applied_and_bad_file_rejected(tmp_path, caplog):
    path = tmp_path / "exp.yaml"
    write(path, config_dict(0.01))
    source = ConfigFile(path, settle_seconds=0)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    assert not source.check(router), "unchanged file: nothing to do"

    write(path, config_dict(0.05))
    caplog.set_level("INFO", logger="router")
    assert source.check(router)
    assert router.state.weights == {"legacy": 0.95, "model": 0.05}
    assert "model 0.01->0.05" in caplog.text

    write(path, config_dict(0.2) | {"salt": ""})  # invalid: empty salt
    assert not source.check(router)
    assert router.state.weights["model"] == 0.05, "the last good config stays"
    assert "rejected" in caplog.text and "salt" in caplog.text
    path.write_text("arms: [unclosed")
    assert not source.check(router)
    path.unlink()
    assert not source.check(router)
    assert router.metrics.registry.get_sample_value("modelramp_config_reloads_total", {"source": "file", "result": "rejected"}) == 3


def test_put_weights_writes_the_file_then_the_file_wins_on_its_next_change(tmp_path):
    path = tmp_path / "exp.yaml"
    write(path, config_dict(0.01))
    source = ConfigFile(path, settle_seconds=0)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    put_weights(router, "churn-test", {"weights": {"model": 0.2}}, source)
    assert router.state.weights == {"legacy": 0.8, "model": 0.2}
    assert yaml.safe_load(path.read_text())["arms"]["model"]["weight"] == 0.2, "written through the file (tests/router/test_weights_api.py)"
    source.check(router)
    assert router.state.weights["model"] == 0.2, "the file holds the API's weights: its next look keeps them"
    write(path, config_dict(0.5))
    assert source.check(router) and router.state.weights["model"] == 0.5


def test_address_overrides_survive_reloads(tmp_path):
    path = tmp_path / "exp.yaml"
    write(path, config_dict(0.01))
    source = ConfigFile(path, lambda c: with_addresses(c, "http://127.0.0.1:1234", "127.0.0.1:4321"), settle_seconds=0)
    cfg = source.load()
    assert cfg.arms["legacy"].backend.url == "http://127.0.0.1:1234"
    assert cfg.arms["model"].backend.target == "127.0.0.1:4321"
    router = Router(cfg, signer=Signer(b"k"), backend_factory=fake_factory)
    write(path, config_dict(0.05))
    source.check(router)
    assert router.state.config.arms["model"].backend.target == "127.0.0.1:4321"


def test_a_new_outcome_ttl_reaches_the_ledger_at_once(tmp_path):
    """Pruning follows the TTL in force without waiting for the next outcome report."""
    from router.ledger import MemoryLedger
    from router.outcomes import OutcomeIntake

    path = tmp_path / "exp.yaml"
    write(path, config_dict(0.01, router={"outcome_ttl_seconds": 3600}))
    source = ConfigFile(path, settle_seconds=0)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    router.outcomes = OutcomeIntake(router.signer, router.metrics, MemoryLedger(ttl_seconds=3600))
    write(path, config_dict(0.01, router={"outcome_ttl_seconds": 86_400}))
    assert source.check(router)
    assert router.outcomes.ledger.ttl_seconds == 86_400 == router.signer.ttl_seconds
