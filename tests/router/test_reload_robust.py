"""A config file is applied only when complete: one caught mid-write is never applied, even when its
prefix is a valid experiment; every rejected file is counted, random bytes included."""

from __future__ import annotations

import os
import time

import httpx
import pytest
import yaml

from router.config import parse_config
from router.core import Router
from router.reload import SETTLE_SECONDS, ConfigFile
from router.signing import Signer
from tests.router.fakes import config_dict, fake_factory
from tests.router.stack import TOKEN, start_router
from tests.support.processes import free_port, wait_until


def rejected(router: Router) -> float:
    return router.metrics.registry.get_sample_value("modelramp_config_reloads_total", {"source": "file", "result": "rejected"}) or 0.0


@pytest.fixture
def watched(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_dict(0.01)))
    source = ConfigFile(path)
    return path, source, Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)


def test_a_file_changed_in_place_is_applied_once_it_settled(watched):
    path, source, router = watched
    path.write_text(yaml.safe_dump(config_dict(0.05)))
    assert not source.check(router, now=100.0), "first look: it may still be being written"
    assert not source.check(router, now=100.0 + SETTLE_SECONDS / 2)
    path.write_text(yaml.safe_dump(config_dict(0.2)))  # it was: the settling starts again
    assert not source.check(router, now=100.0 + SETTLE_SECONDS)
    assert router.state.weights["model"] == 0.01
    assert source.check(router, now=100.0 + 2 * SETTLE_SECONDS + 0.01)
    assert router.state.weights["model"] == 0.2


def test_a_file_renamed_into_place_is_applied_at_once(watched, tmp_path):
    path, source, router = watched
    staged = tmp_path / "exp.yaml.tmp"
    staged.write_text(yaml.safe_dump(config_dict(0.05)))
    os.replace(staged, path)
    assert source.check(router, now=100.0) and router.state.weights["model"] == 0.05


def test_random_bytes_and_every_other_bad_file_are_counted(watched):
    path, source, router = watched
    for n, content in enumerate([os.urandom(4096) + b"\xff\xfe", b"arms: [unclosed", b"- just\n- a list\n", b"[" * 5000], 1):
        path.write_bytes(content)
        assert not source.check(router, now=10.0 * n)
        assert not source.check(router, now=10.0 * n + SETTLE_SECONDS)
        assert rejected(router) == n, content[:20]
    assert router.state.weights["model"] == 0.01


def full_text(model_target: str, legacy_url: str) -> tuple[str, str]:
    """An experiment file in two halves; the first is valid on its own, with a model timeout of 2 ms cut from 200."""
    first = (f"name: churn-it\nsalt: it-salt\nmodel_name: churn\narms:\n  legacy:\n    weight: 1.0\n"
             f"    backend: {{kind: legacy_http, url: '{legacy_url}'}}\n  model:\n    weight: 0.0\n    backend:\n"
             f"      kind: tfserving_grpc\n      target: '{model_target}'\n      model_name: churn\n      timeout_ms: 2")
    return first, "00\nrouter:\n  request_timeout_ms: 900\n"


def test_a_file_written_in_two_halves_is_never_applied_half(tmp_path):
    """On a real router watching every 0.1 s: the half stays on disk for ten looks and is never applied."""
    legacy, model = f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    first, second = full_text(model, legacy)
    assert parse_config(yaml.safe_load(first)).arms["model"].backend.timeout_ms == 2  # the half alone is a valid experiment
    router = start_router(tmp_path, yaml.safe_load(first + "00\n"), ready_path="/healthz")
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def config(timeout: float = 5.0) -> dict:
            return httpx.get(f"{router.url}/v1/experiments/churn-it", headers=auth, timeout=timeout).json()["config"]

        assert router.metric("modelramp_config_reloads_total", result="applied") == 0
        with open(router.config_path, "w") as f:  # in place, as `>` or write_text would
            f.write(first)
            f.flush()
            # The writer stalls (this is the behaviour under test, not a wait for the router): ten watch
            # intervals, and less than SETTLE_SECONDS.
            start = time.monotonic()
            while time.monotonic() < start + min(1.0, SETTLE_SECONDS / 2):
                try:
                    timeout_ms = config(timeout=0.2)["arms"]["model"]["backend"]["timeout_ms"]
                except httpx.HTTPError:  # a busy machine: the look is what matters, not this poll
                    continue
                assert timeout_ms == 200.0, "the half file was applied"
            f.write(second)
            stalled = time.monotonic() - start
        assert stalled < SETTLE_SECONDS, f"the machine was too busy to test this: the writer stalled {stalled:.1f}s"
        wait_until(lambda: config()["router"]["request_timeout_ms"] == 900.0, timeout=30, what="the whole file applied")
        assert config()["arms"]["model"]["backend"]["timeout_ms"] == 200.0
        assert router.metric("modelramp_config_reloads_total", result="applied") == 1  # the whole file, once; never its half
        assert router.metric("modelramp_config_reloads_total", result="rejected") == 0

        router.config_path.write_bytes(os.urandom(2048) + b"\xff")
        wait_until(lambda: router.metric("modelramp_config_reloads_total", result="rejected") == 1, timeout=30,
                   what="random bytes counted as a rejected file")
        assert config()["router"]["request_timeout_ms"] == 900.0
    finally:
        router.process.stop()
