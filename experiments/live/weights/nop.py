"""A weight store that writes nothing: `--dry-run` reads the real config and only says what it would do."""

from __future__ import annotations

from collections.abc import Mapping

from experiments.config import ExperimentConfig
from experiments.live.weights.base import WeightStore, WeightStoreError, check_expected
from router.config import ConfigError


class NopWeightStore(WeightStore):
    """Reads through `inner` (the real store); `apply` validates and returns the result, unwritten."""

    def __init__(self, inner: WeightStore):
        self.inner = inner
        self.description = f"dry run of {inner.description}"
        self.would_apply: list[dict[str, float]] = []

    def load(self) -> ExperimentConfig:
        return self.inner.load()

    def apply(self, weights: Mapping[str, float], expected: Mapping[str, float] | None = None) -> ExperimentConfig:
        current = self.load()
        check_expected(current, expected, self.inner.description)
        try:
            updated = current.with_weights(dict(weights))
        except ConfigError as err:
            raise WeightStoreError(f"refusing weights {dict(weights)}: {err}") from None
        self.would_apply.append(dict(weights))
        return updated
