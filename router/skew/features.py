"""The hook for live feature sketches (skew monitors): sampled, decoded request features go to sinks.

The core calls every sink's `observe` for a sampled share of requests (experiment option
`router.feature_sample_share`) after the response is ready, on the event loop, so a sink must be
cheap and must not block: update an in-memory sketch, or hand off to a queue. A sink that raises
is logged and otherwise ignored; a request never fails because of a sink.

Two optional methods, called when a sink has them (`router.skew.sink.SkewSink` does):
`observe_rows(experiment, arm, rows)` instead of `observe` for REST row-format requests (the rows
as parsed JSON, so sampling builds no numpy arrays), and `observe_outputs(experiment, outputs)`
with the model's outputs when the model itself answered (not legacy, not a fallback): prediction drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class FeatureSink(Protocol):
    """Receives sampled request features; implement this for skew sketches."""

    def observe(self, experiment: str, arm: str, features: Mapping[str, np.ndarray]) -> None:
        """One request's decoded inputs (name -> array with one value per example), validated."""


class NopFeatureSink:
    """Drops everything: the default."""

    def observe(self, experiment: str, arm: str, features: Mapping[str, np.ndarray]) -> None:
        return None


class RecordingFeatureSink:
    """Keeps what it is given, for tests and debugging."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, np.ndarray]]] = []

    def observe(self, experiment: str, arm: str, features: Mapping[str, np.ndarray]) -> None:
        self.seen.append((experiment, arm, dict(features)))
