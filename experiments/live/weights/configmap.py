"""Weights in a Kubernetes ConfigMap (the experiment YAML under one key), patched with the official client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from experiments.config import ExperimentConfig, dump_config, parse_config
from experiments.live.weights.base import (
    WeightConflict,
    WeightStore,
    WeightStoreError,
    check_expected,
)
from router.config import ConfigError

DEFAULT_KEY = "experiment.yaml"
FIELD_MANAGER = "modelramp-ramp"
# A JSON merge patch: the `data` map merges key by key, and `metadata.resourceVersion` makes the
# API server refuse (409) if the ConfigMap changed since we read it.
MERGE_PATCH = "application/merge-patch+json"


def parse_target(text: str) -> tuple[str, str]:
    """`NAMESPACE/NAME` -> (namespace, name), with a clear error otherwise."""
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"--configmap takes NAMESPACE/NAME, got {text!r}")
    return namespace, name


def default_api() -> Any:
    """A CoreV1Api from the in-cluster service account, or else from ~/.kube/config."""
    from kubernetes import client, config  # noqa: PLC0415 - the Kubernetes client only for a ConfigMap store (0.5 s)

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as err:
            raise WeightStoreError(f"no Kubernetes credentials (not in a pod, no usable kubeconfig): {err}") from None
    return client.CoreV1Api(client.ApiClient(configuration))


class ConfigMapWeightStore(WeightStore):
    """ConfigMap `namespace/name`, key `key` holding the experiment YAML the routers mount and watch."""

    def __init__(self, namespace: str, name: str, key: str = DEFAULT_KEY, api: Any = None, timeout: float = 10.0):
        self.namespace, self.name, self.key = namespace, name, key
        self.description = f"ConfigMap {namespace}/{name} (key {key})"
        self._api = api
        self._timeout = timeout

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = default_api()
        return self._api

    def _read(self) -> tuple[ExperimentConfig, str]:
        raw = self._call("read", self.api.read_namespaced_config_map, self.name, self.namespace,
                         _request_timeout=self._timeout)
        text = (raw.data or {}).get(self.key)
        if text is None:
            raise WeightStoreError(f"{self.description} has no key {self.key!r}; keys: {sorted(raw.data or {})}")
        try:
            config = parse_config(yaml.safe_load(text))
        except (ConfigError, yaml.YAMLError) as err:
            raise WeightStoreError(f"{self.description}: {err}") from None
        return config, raw.metadata.resource_version

    def load(self) -> ExperimentConfig:
        return self._read()[0]

    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        current, resource_version = self._read()
        check_expected(current, expected, self.description)
        try:
            updated = current.with_weights(dict(weights))
        except ConfigError as err:
            raise WeightStoreError(f"refusing to write weights {dict(weights)}: {err}") from None
        body = {"metadata": {"resourceVersion": resource_version}, "data": {self.key: dump_config(updated)}}
        self._call("patch", self.api.patch_namespaced_config_map, self.name, self.namespace, body,
                   field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH, _request_timeout=self._timeout)
        return updated

    def _call(self, verb: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        try:
            return method(*args, **kwargs)
        except ApiException as err:
            if err.status == 409:
                raise WeightConflict(f"{self.description} changed while we wrote it (409 Conflict); nothing written") from None
            raise WeightStoreError(f"cannot {verb} {self.description}: HTTP {err.status} {err.reason}: {_message(err)}") from None
        except HTTPError as err:
            raise WeightStoreError(f"cannot {verb} {self.description}: API server unreachable: {err}") from None


def _message(err: Any) -> str:
    # The API server answers errors as a Status object; its `message` is the useful part.
    try:
        return str(yaml.safe_load(err.body).get("message", ""))
    except Exception:  # noqa: BLE001 - a body that is not a Status: say nothing more
        return ""
