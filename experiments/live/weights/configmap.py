"""Weights in a Kubernetes ConfigMap beside the experiment's, created and patched with the official client.

The experiment ConfigMap (the experiment YAML under one key) belongs to whatever deployed it:
Helm, `kubectl apply -k`, Argo CD or Flux write it back on every upgrade or sync, so weights
patched into it were undone by the next one. When the experiment ConfigMap carries the annotation
`modelramp.io/weights-configmap: NAME` (the chart sets it), the weights live in that ConfigMap
instead, key `weights.yaml`, as a weights document (`router/weights_file.py`) that no release
renders: the store reads the experiment from the experiment ConfigMap (never writing it), the
weights from the weights ConfigMap when it exists and names that experiment and salt (else the
config's weights, the starting point), and writes only the weights ConfigMap, creating it on the
first write. The routers mount it as an optional volume and read it with `--weights`.

Without the annotation (a ConfigMap made by hand, or by an older chart) the weights are patched
into the experiment YAML itself, as before.
"""

from __future__ import annotations

import logging
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
from router.weights_file import Weights, parse_weights, weights_of

log = logging.getLogger(__name__)

DEFAULT_KEY = "experiment.yaml"
#: The experiment ConfigMap's annotation naming the ConfigMap its weights live in.
WEIGHTS_ANNOTATION = "modelramp.io/weights-configmap"
WEIGHTS_KEY = "weights.yaml"
# Labels of the weights ConfigMap the store creates. No `app.kubernetes.io/instance`: Argo CD's
# default tracking label, with which an Argo CD application would take it for one of its own
# objects that is missing from Git, and prune it.
WEIGHTS_LABELS = {"app.kubernetes.io/name": "modelramp", "app.kubernetes.io/component": "weights",
                  "app.kubernetes.io/part-of": "modelramp", "app.kubernetes.io/managed-by": "modelramp-ramp"}
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
    """ConfigMap `namespace/name`, key `key` holding the experiment YAML the routers mount and watch.

    `weights_name`: the ConfigMap holding the weights document; default: the one the experiment
    ConfigMap's `modelramp.io/weights-configmap` annotation names, else none (weights in the
    experiment YAML).
    """

    def __init__(self, namespace: str, name: str, key: str = DEFAULT_KEY, api: Any = None, timeout: float = 10.0,
                 weights_name: str | None = None):
        self.namespace, self.name, self.key = namespace, name, key
        self.weights_name = weights_name
        self._api = api
        self._timeout = timeout
        self._describe()

    def _describe(self) -> None:
        self.description = f"ConfigMap {self.namespace}/{self.name} (key {self.key})"
        if self.weights_name:
            self.description += f", weights in ConfigMap {self.namespace}/{self.weights_name} (key {WEIGHTS_KEY})"

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = default_api()
        return self._api

    def _read(self) -> tuple[ExperimentConfig, str, str | None]:
        """(the config in force, the resourceVersion to write against, the weights ConfigMap's name or None)."""
        raw = self._call("read", self.api.read_namespaced_config_map, self.name, self.namespace,
                         _request_timeout=self._timeout)
        text = (raw.data or {}).get(self.key)
        if text is None:
            raise WeightStoreError(f"{self.description} has no key {self.key!r}; keys: {sorted(raw.data or {})}")
        try:
            config = parse_config(yaml.safe_load(text))
        except (ConfigError, yaml.YAMLError) as err:
            raise WeightStoreError(f"{self.description}: {err}") from None
        weights_name = self.weights_name or (raw.metadata.annotations or {}).get(WEIGHTS_ANNOTATION) or None
        if weights_name != self.weights_name:
            self.weights_name = weights_name
            self._describe()
        if not weights_name:
            return config, raw.metadata.resource_version, None
        doc, version = self._read_weights(weights_name)
        if doc is not None:
            why = doc.mismatch(config)
            if why is None:
                try:
                    config = config.with_weights(dict(doc.weights))
                except ConfigError as err:
                    raise WeightStoreError(f"ConfigMap {self.namespace}/{weights_name}: {err}") from None
            else:  # the routers ignore it as well: the config's weights are in force
                log.warning("ConfigMap %s/%s is not used: %s", self.namespace, weights_name, why)
        return config, version, weights_name

    def _read_weights(self, name: str) -> tuple[Weights | None, str]:
        """The weights document and the resourceVersion of ConfigMap `name`; (None, "") when it does not exist yet."""
        where = f"ConfigMap {self.namespace}/{name}"
        raw = self._call("read", self.api.read_namespaced_config_map, name, self.namespace, missing_ok=True,
                         _request_timeout=self._timeout, what=where)
        if raw is None:
            return None, ""  # no weights written yet
        text = (raw.data or {}).get(WEIGHTS_KEY)
        if text is None:
            raise WeightStoreError(f"{where} has no key {WEIGHTS_KEY!r}; keys: {sorted(raw.data or {})}")
        try:
            return parse_weights(text, where), raw.metadata.resource_version
        except ConfigError as err:
            raise WeightStoreError(str(err)) from None

    def load(self) -> ExperimentConfig:
        return self._read()[0]

    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        current, resource_version, weights_name = self._read()
        check_expected(current, expected, self.description)
        try:
            updated = current.with_weights(dict(weights))
        except ConfigError as err:
            raise WeightStoreError(f"refusing to write weights {dict(weights)}: {err}") from None
        body: dict[str, Any]
        if weights_name is None:
            body = {"metadata": {"resourceVersion": resource_version}, "data": {self.key: dump_config(updated)}}
            self._call("patch", self.api.patch_namespaced_config_map, self.name, self.namespace, body,
                       field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH, _request_timeout=self._timeout)
            return updated
        data = {WEIGHTS_KEY: weights_of(updated).dump()}
        if resource_version:
            body = {"metadata": {"resourceVersion": resource_version}, "data": data}
            self._call("patch", self.api.patch_namespaced_config_map, weights_name, self.namespace, body,
                       field_manager=FIELD_MANAGER, _content_type=MERGE_PATCH, _request_timeout=self._timeout,
                       what=f"ConfigMap {self.namespace}/{weights_name}")
        else:  # the first write; two controllers racing here: the second gets 409 AlreadyExists, a conflict
            body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                    "metadata": {"name": weights_name, "namespace": self.namespace, "labels": WEIGHTS_LABELS,
                                 "annotations": {"modelramp.io/experiment-configmap": self.name}}}
            self._call("create", self.api.create_namespaced_config_map, self.namespace, body,
                       field_manager=FIELD_MANAGER, _request_timeout=self._timeout,
                       what=f"ConfigMap {self.namespace}/{weights_name}")
        return updated

    def _call(self, verb: str, method: Any, *args: Any, missing_ok: bool = False, what: str | None = None, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)`, its failures as WeightStoreError naming `what` (default: this store); None for 404 if `missing_ok`."""
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        what = what or self.description
        try:
            return method(*args, **kwargs)
        except ApiException as err:
            if err.status == 404 and missing_ok:
                return None
            if err.status == 409:
                raise WeightConflict(f"{what} changed while we wrote it (409 {err.reason}); nothing written") from None
            raise WeightStoreError(f"cannot {verb} {what}: HTTP {err.status} {err.reason}: {_message(err)}") from None
        except HTTPError as err:
            raise WeightStoreError(f"cannot {verb} {what}: API server unreachable: {err}") from None


def _message(err: Any) -> str:
    # The API server answers errors as a Status object; its `message` is the useful part.
    try:
        return str(yaml.safe_load(err.body).get("message", ""))
    except Exception:  # noqa: BLE001 - a body that is not a Status: say nothing more
        return ""
