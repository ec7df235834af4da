"""Weight stores: the YAML file (atomic rename), the no-op dry run, and a ConfigMap via the real client.

No Kubernetes API server can run here: the ConfigMap store is tested with the official
`kubernetes` client against `tests.support.kube_standin`, which speaks the ConfigMap REST API.
"""

from __future__ import annotations

import json
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
from experiments.live.weights.configmap import WEIGHTS_ANNOTATION, parse_target
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


# Weights in their own ConfigMap, beside the Helm-owned experiment ConfigMap -----------------------

WEIGHTS_CM = ("prod", "clf-weights")


def _put_annotated(kube: KubeStandin, model_weight: float = 0.01, **extra) -> None:
    kube.put_configmap("prod", "clf", {"experiment.yaml": yaml.safe_dump(config_dict(model_weight=model_weight, **extra))},
                       annotations={WEIGHTS_ANNOTATION: "clf-weights"})


def _weights_doc(kube: KubeStandin) -> dict:
    return yaml.safe_load(kube.configmaps[WEIGHTS_CM]["data"]["weights.yaml"])


def test_configmap_store_creates_then_patches_a_weights_configmap_and_never_writes_the_experiments(kube):
    _put_annotated(kube)
    experiment_cm = json.dumps(kube.configmaps[("prod", "clf")], sort_keys=True)
    store = ConfigMapWeightStore("prod", "clf", api=_api(kube.url))
    assert store.load().weights == START, "no weights ConfigMap yet: the experiment's weights"
    assert "weights in ConfigMap prod/clf-weights (key weights.yaml)" in store.description

    assert store.apply(RAMPED, expected=START).weights == RAMPED
    created = kube.configmaps[WEIGHTS_CM]
    config = config_dict()
    assert _weights_doc(kube) == {"experiment": config["name"], "salt": config["salt"], "weights": RAMPED}
    labels = created["metadata"]["labels"]
    # Not Argo CD's tracking label: an application would take it for its own object missing from Git and prune it.
    assert "app.kubernetes.io/instance" not in labels and labels["app.kubernetes.io/part-of"] == "modelramp"
    assert store.load().weights == RAMPED

    later = {"legacy": 0.8, "model": 0.2}
    store.apply(later, expected=RAMPED)
    assert _weights_doc(kube)["weights"] == later
    assert json.dumps(kube.configmaps[("prod", "clf")], sort_keys=True) == experiment_cm, "the experiment ConfigMap is never written"
    writes = [(r["method"], r["path"].split("?")[0]) for r in kube.requests if r["method"] != "GET"]
    assert writes == [("POST", "/api/v1/namespaces/prod/configmaps"),
                      ("PATCH", "/api/v1/namespaces/prod/configmaps/clf-weights")]
    post = next(r for r in kube.requests if r["method"] == "POST")
    assert "fieldManager=modelramp-ramp" in post["path"]


def test_two_controllers_creating_the_weights_configmap_conflict_and_the_second_writes_nothing(kube):
    _put_annotated(kube)
    first, second = (ConfigMapWeightStore("prod", "clf", api=_api(kube.url)) for _ in range(2))
    api = _api(kube.url)

    class Racing:
        """Reads through the real client; `first` creates the weights ConfigMap between `second`'s read and write."""

        def read_namespaced_config_map(self, *args, **kwargs):
            return api.read_namespaced_config_map(*args, **kwargs)

        def create_namespaced_config_map(self, *args, **kwargs):
            first.apply(RAMPED, expected=START)
            return api.create_namespaced_config_map(*args, **kwargs)

    second._api = Racing()
    with pytest.raises(WeightConflict, match="409 Conflict|409 AlreadyExists|changed while we wrote it"):
        second.apply({"legacy": 0.5, "model": 0.5}, expected=START)
    assert _weights_doc(kube)["weights"] == RAMPED


def test_weights_configmap_of_another_experiment_or_salt_is_not_used_and_is_overwritten(kube):
    _put_annotated(kube)
    for stale in ({"experiment": "churn-old", "weights": {"legacy": 0.5, "model": 0.5}},
                  {"experiment": config_dict()["name"], "salt": "an-earlier-run", "weights": {"legacy": 0.5, "model": 0.5}}):
        kube.put_configmap(*WEIGHTS_CM, {"weights.yaml": yaml.safe_dump(stale)})
        store = ConfigMapWeightStore("prod", "clf", api=_api(kube.url))
        assert store.load().weights == START
    store = ConfigMapWeightStore("prod", "clf", api=_api(kube.url))
    store.apply(RAMPED, expected=START)
    assert _weights_doc(kube)["salt"] == config_dict()["salt"] and _weights_doc(kube)["weights"] == RAMPED


def test_a_broken_weights_configmap_is_a_clear_error_not_a_ramp(kube):
    _put_annotated(kube)
    kube.put_configmap(*WEIGHTS_CM, {"weights.yaml": "experiment: [unclosed"})
    with pytest.raises(WeightStoreError, match="ConfigMap prod/clf-weights is not valid YAML"):
        ConfigMapWeightStore("prod", "clf", api=_api(kube.url)).load()
    kube.put_configmap(*WEIGHTS_CM, {"other": "x"})
    with pytest.raises(WeightStoreError, match="has no key 'weights.yaml'"):
        ConfigMapWeightStore("prod", "clf", api=_api(kube.url)).load()


def test_an_explicit_weights_configmap_needs_no_annotation(kube):
    _put(kube)
    store = ConfigMapWeightStore("prod", "clf", api=_api(kube.url), weights_name="clf-weights")
    store.apply(RAMPED, expected=START)
    assert _weights_doc(kube)["weights"] == RAMPED
    assert yaml.safe_load(kube.configmaps[("prod", "clf")]["data"]["experiment.yaml"])["arms"]["model"]["weight"] == 0.01


def test_file_store_with_a_weights_file_writes_only_that_file(tmp_path):
    path = write_config(tmp_path / "experiment.yaml")
    text = path.read_text()
    weights = tmp_path / "weights.yaml"
    store = make_weight_store(path, weights_path=weights)
    assert isinstance(store, FileWeightStore) and store.load().weights == START
    store.apply(RAMPED, expected=START)
    assert path.read_text() == text
    assert yaml.safe_load(weights.read_text())["weights"] == RAMPED
    assert store.load().weights == RAMPED
    with pytest.raises(WeightConflict):
        store.apply(START, expected=START)
    weights.write_text(yaml.safe_dump({"experiment": "another", "weights": {"legacy": 0.5, "model": 0.5}}))
    assert store.load().weights == START, "another experiment's weights file: the experiment file's weights, as the router"
