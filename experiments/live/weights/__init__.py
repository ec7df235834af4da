"""Weight stores: the `WeightStore` interface (`base.py`), one file per implementation, and a factory."""

from __future__ import annotations

from pathlib import Path

from experiments.live.weights.base import (
    WeightConflict,
    WeightStore,
    WeightStoreError,
    same_weights,
)
from experiments.live.weights.configmap import ConfigMapWeightStore, parse_target
from experiments.live.weights.file import FileWeightStore
from experiments.live.weights.nop import NopWeightStore

__all__ = [
    "ConfigMapWeightStore", "FileWeightStore", "NopWeightStore", "WeightConflict", "WeightStore",
    "WeightStoreError", "make_weight_store", "same_weights",
]


def make_weight_store(config_path: str | Path | None = None, configmap: str | None = None,
                      dry_run: bool = False, weights_path: str | Path | None = None) -> WeightStore:
    """The ConfigMap `NAMESPACE/NAME` if given, else the config file (its weights in `weights_path` if given); read-only for a dry run.

    A ConfigMap's weights live where its `modelramp.io/weights-configmap` annotation says (the chart's
    `<release>-weights`), see `experiments.live.weights.configmap`.
    """
    if configmap:
        store: WeightStore = ConfigMapWeightStore(*parse_target(configmap))
    elif config_path:
        store = FileWeightStore(config_path, weights_path)
    else:
        raise ValueError("a weight store needs --config FILE or --configmap NAMESPACE/NAME")
    return NopWeightStore(store) if dry_run else store
