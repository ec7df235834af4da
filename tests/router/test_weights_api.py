"""`PUT /v1/experiments/{name}/weights` writes through the router's weights store, so replicas, the controller and
the analyzer agree, and a `touch` of the file no longer reverts it; a router that cannot write it answers 409.

The store is the weights file when the router was given one (`--weights`), else the experiment file itself.
On Kubernetes both are read-only ConfigMap volumes; here a folder the process cannot write into (`/sys`, which even
root cannot create files in) stands for one.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

from experiments.live.weights import FileWeightStore
from router.core import Router
from router.reload import ConfigFile, WeightsReadOnly, put_weights
from router.signing import Signer
from tests.router.fakes import config_dict, fake_factory
from tests.router.stack import SIGNING_KEY, TOKEN, experiment
from tests.support.processes import Process, free_port, wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _unwritable() -> Path:
    """A file path whose folder cannot be written, like a ConfigMap volume."""
    try:
        os.close(tempfile.mkstemp(dir="/sys")[0])
    except OSError:
        return Path("/sys/modelramp-weights.yaml")
    pytest.skip("/sys is writable here: no read-only folder to stand for a ConfigMap volume")


def touch(path: Path) -> None:
    """What `touch` does: a new mtime, the same content."""
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 1_000_000_000))


def test_without_a_weights_file_the_experiment_file_is_rewritten_and_a_touch_keeps_it(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"experiment": config_dict(0.01, router={"request_timeout_ms": 900})}))
    source = ConfigFile(path, settle_seconds=0)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    put_weights(router, "churn-test", {"weights": {"model": 0.05}}, source)
    assert router.state.weights == {"legacy": 0.95, "model": 0.05}
    written = yaml.safe_load(path.read_text())
    assert list(written) == ["experiment"] and written["experiment"]["router"] == {"request_timeout_ms": 900}, "only weights change"
    assert FileWeightStore(path).load().weights == {"legacy": 0.95, "model": 0.05}, "the controller and analyze read the same"
    touch(path)
    source.check(router)
    assert router.state.weights["model"] == 0.05, "a touch of the file no longer reverts the API's change"
    assert ConfigFile(path).load().weights["model"] == 0.05, "a replica started now reads it too"


def test_with_a_weights_file_only_that_file_is_written(tmp_path):
    path, weights = tmp_path / "exp.yaml", tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump(config_dict(0.01)))
    text = path.read_text()
    source = ConfigFile(path, settle_seconds=0, weights=weights)
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    put_weights(router, "churn-test", {"weights": {"legacy": 0.8, "model": 0.2}}, source)
    assert path.read_text() == text
    assert yaml.safe_load(weights.read_text()) == {"experiment": "churn-test", "salt": "salt-1", "weights": {"legacy": 0.8, "model": 0.2}}
    assert FileWeightStore(path, weights).load().weights == {"legacy": 0.8, "model": 0.2}
    source.check(router)
    assert router.state.weights["model"] == 0.2


def test_a_router_that_cannot_write_its_weights_store_answers_409_and_changes_nothing(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config_dict(0.01)))
    source = ConfigFile(path, settle_seconds=0, weights=_unwritable())
    router = Router(source.load(), signer=Signer(b"k"), backend_factory=fake_factory)
    with pytest.raises(WeightsReadOnly, match="modelramp ramp.*weights ConfigMap") as err:
        put_weights(router, "churn-test", {"weights": {"model": 0.2}}, source)
    assert err.value.http_status == 409
    with pytest.raises(WeightsReadOnly, match="no weights store"):
        put_weights(router, "churn-test", {"weights": {"model": 0.2}}, None)
    assert router.state.weights["model"] == 0.01


def _router(tmp_path: Path, config: Path, *extra: str) -> tuple[Process, str]:
    port = free_port()
    proc = Process(["router", "--config", str(config), *extra, "--host", "127.0.0.1", "--http-port", str(port),
                    "--grpc-port", str(free_port()), "--watch-interval", "0.1",
                    "--outcome-ledger", f"sqlite:///{tmp_path / f'outcomes-{port}.db'}"],
                   tmp_path / f"router-{port}.log", env={"MODELRAMP_SIGNING_KEY": SIGNING_KEY, "MODELRAMP_WEIGHTS_TOKEN": TOKEN})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, timeout=60, what="router up", proc=proc.proc)
    except Exception:
        proc.stop()
        raise
    return proc, url


def test_two_real_replicas_of_one_file_agree_after_a_put_and_a_read_only_one_answers_409(tmp_path):
    """Two router processes watching one experiment file (as `modelramp up`'s, or a shared volume), no backends running."""
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(experiment(f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", 0.01)))
    procs = []
    try:
        first, a = _router(tmp_path, config)
        procs.append(first)
        second, b = _router(tmp_path, config)
        procs.append(second)

        def model_weight(url: str) -> float:
            return httpx.get(f"{url}/v1/experiments/churn-it", timeout=5).json()["weights"]["model"]

        r = httpx.put(f"{a}/v1/experiments/churn-it/weights", json={"weights": {"model": 0.2}}, headers=AUTH, timeout=10)
        assert r.status_code == 200 and r.json()["weights"] == {"legacy": 0.8, "model": 0.2}
        wait_until(lambda: model_weight(b) == 0.2, timeout=30, what="the other replica reads the weights from the file")
        assert FileWeightStore(config).load().weights == {"legacy": 0.8, "model": 0.2}, "the controller and analyze agree"
        touch(config)
        # A few watch intervals (0.1 s) beyond the settle time of a file changed in place (2 s).
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert model_weight(a) == 0.2 and model_weight(b) == 0.2, "a touch reverted the weights"

        ro, c = _router(tmp_path, config, "--weights", str(_unwritable()))
        procs.append(ro)
        assert model_weight(c) == 0.2, "no weights file (the ConfigMap not created yet): the config's weights"
        r = httpx.put(f"{c}/v1/experiments/churn-it/weights", json={"weights": {"model": 0.5}}, headers=AUTH, timeout=10)
        assert r.status_code == 409, r.text
        assert "modelramp ramp" in r.json()["error"] and "weights ConfigMap" in r.json()["error"]
        assert model_weight(c) == 0.2 and model_weight(a) == 0.2
    finally:
        for proc in procs:
            proc.stop()
