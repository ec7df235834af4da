"""Weight stores: the YAML file (atomic rename), the no-op dry run, and a ConfigMap via the real client.

No Kubernetes API server can run here: the ConfigMap store is tested with the official
`kubernetes` client against `tests.support.kube_standin`, which speaks the ConfigMap REST API.
"""

from __future__ import annotations

import os

import pytest
import yaml

from experiments.config import load_config
from experiments.live.weights import (
    ConfigMapWeightStore,
    FileWeightStore,
    NopWeightStore,
    WeightConflict,
    WeightStoreError,
    make_weight_store,
)
from experiments.live.weights.configmap import parse_target
from tests.support.experiment import config_dict, write_config
from tests.support.kube_standin import KubeStandin
from tests.support.processes import free_port

RAMPED = {"legacy": 0.95, "model": 0.05}
START = {"legacy": 0.99, "model": 0.01}


def test_file_store_rewrites_the_yaml_by_rename(tmp_path):
    path = write_config(tmp_path / "experiment.yaml")
    os.chmod(path, 0o640)
    before = os.stat(path).st_ino
    store = FileWeightStore(path)
    assert store.load().weights == START
    written = store.apply(RAMPED, expected=START)
    assert written.weights == RAMPED
    assert load_config(path).weights == RAMPED
    assert load_config(path).model_dump() == written.model_dump()
    assert os.stat(path).st_ino != before  # a new file renamed over the old: readers never see half
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.yaml"]  # no temp file left


def test_file_store_keeps_an_experiment_wrapper(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"experiment": config_dict()}))
    FileWeightStore(path).apply(RAMPED)
    assert list(yaml.safe_load(path.read_text())) == ["experiment"]
    assert load_config(path).weights == RAMPED


def test_file_store_refuses_stale_or_invalid_weights_and_writes_nothing(tmp_path):
    path = write_config(tmp_path / "experiment.yaml", model_weight=0.05)
    text = path.read_text()
    store = FileWeightStore(path)
    with pytest.raises(WeightConflict, match="somebody else changed them"):
        store.apply({"legacy": 0.8, "model": 0.2}, expected=START)
    with pytest.raises(WeightStoreError, match="must sum to 1"):
        store.apply({"legacy": 0.5, "model": 0.2})
    assert path.read_text() == text


def test_file_store_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightStoreError, match="cannot read experiment config"):
        FileWeightStore(tmp_path / "nope.yaml").load()


def test_nop_store_reads_but_never_writes(tmp_path):
    path = write_config(tmp_path / "experiment.yaml")
    text = path.read_text()
    store = NopWeightStore(FileWeightStore(path))
    assert store.apply(RAMPED, expected=START).weights == RAMPED
    assert store.would_apply == [RAMPED]
    assert path.read_text() == text
    with pytest.raises(WeightConflict):
        store.apply(RAMPED, expected=RAMPED)


def test_factory_and_target_parsing(tmp_path):
    assert isinstance(make_weight_store(tmp_path / "e.yaml"), FileWeightStore)
    assert isinstance(make_weight_store(tmp_path / "e.yaml", dry_run=True), NopWeightStore)
    cm = make_weight_store(configmap="prod/clf-experiment")
    assert isinstance(cm, ConfigMapWeightStore) and (cm.namespace, cm.name) == ("prod", "clf-experiment")
    with pytest.raises(ValueError, match="NAMESPACE/NAME"):
        parse_target("just-a-name")
    with pytest.raises(ValueError, match="needs --config FILE or --configmap"):
        make_weight_store()


# ConfigMap through the official client against the stand-in API server --------------------------


@pytest.fixture
def kube():
    server = KubeStandin(token="s3cret")
    yield server
    server.close()


def _api(url: str, token: str | None = "s3cret"):
    from kubernetes import client

    configuration = client.Configuration(host=url)
    if token:
        configuration.api_key = {"BearerToken": token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.CoreV1Api(client.ApiClient(configuration))


def _put(kube: KubeStandin, model_weight: float = 0.01) -> None:
    kube.put_configmap("prod", "clf", {"experiment.yaml": yaml.safe_dump(config_dict(model_weight=model_weight)),
                                       "other-key": "kept"})


def test_configmap_store_patches_the_weights(kube):
    _put(kube)
    store = ConfigMapWeightStore("prod", "clf", api=_api(kube.url))
    assert store.load().weights == START
    version = kube.configmaps[("prod", "clf")]["metadata"]["resourceVersion"]
    assert store.apply(RAMPED, expected=START).weights == RAMPED
    stored = kube.configmaps[("prod", "clf")]
    assert yaml.safe_load(stored["data"]["experiment.yaml"])["arms"]["model"]["weight"] == 0.05
    assert stored["data"]["other-key"] == "kept"
    assert int(stored["metadata"]["resourceVersion"]) > int(version)
    patch = [r for r in kube.requests if r["method"] == "PATCH"][-1]
    assert patch["content_type"] == "application/merge-patch+json"
    assert "fieldManager=modelramp-ramp" in patch["path"]
    assert patch["authorization"] == "Bearer s3cret"


def test_configmap_store_refuses_when_another_writer_got_there_first(kube):
    _put(kube)
    api = _api(kube.url)

    class Racing:
        """Reads through the real client, then another writer changes the ConfigMap."""

        def read_namespaced_config_map(self, *args, **kwargs):
            got = api.read_namespaced_config_map(*args, **kwargs)
            _put(kube, model_weight=0.01)  # same content, new resourceVersion: still a conflict
            return got

        def patch_namespaced_config_map(self, *args, **kwargs):
            return api.patch_namespaced_config_map(*args, **kwargs)

    with pytest.raises(WeightConflict, match="409 Conflict"):
        ConfigMapWeightStore("prod", "clf", api=Racing()).apply(RAMPED, expected=START)
    assert yaml.safe_load(kube.configmaps[("prod", "clf")]["data"]["experiment.yaml"])["arms"]["model"]["weight"] == 0.01


def test_configmap_store_errors_are_clear(kube):
    _put(kube)
    with pytest.raises(WeightStoreError, match="HTTP 404.*configmaps \"missing\" not found"):
        ConfigMapWeightStore("prod", "missing", api=_api(kube.url)).load()
    with pytest.raises(WeightStoreError, match="HTTP 401"):
        ConfigMapWeightStore("prod", "clf", api=_api(kube.url, token=None)).load()
    with pytest.raises(WeightStoreError, match="has no key 'exp.yaml'"):
        ConfigMapWeightStore("prod", "clf", key="exp.yaml", api=_api(kube.url)).load()
    with pytest.raises(WeightConflict):
        ConfigMapWeightStore("prod", "clf", api=_api(kube.url)).apply(RAMPED, expected=RAMPED)


def test_configmap_store_unreachable_api_server():
    dead = _api(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(WeightStoreError, match="API server unreachable"):
        ConfigMapWeightStore("prod", "clf", api=dead, timeout=2).load()
