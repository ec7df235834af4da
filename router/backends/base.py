"""The backend interface: one arm's answering system (legacy HTTP, TF Serving gRPC or REST).

A backend turns decoded, validated inputs into named output arrays within a timeout, or raises
a `serving.errors` error. The core never sees HTTP or protobuf; fronts never see backends.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from router.signature import Signature, TensorSpec
from serving import errors


@dataclass
class PredictCall:
    """One validated predict request, as every backend receives it."""

    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, TensorSpec] | None = None  # the signature's outputs, when known
    signature_name: str | None = None
    output_filter: list[str] = field(default_factory=list)


@dataclass
class Prediction:
    """Named output arrays and, for a model, the version that answered."""

    outputs: dict[str, np.ndarray]
    model_version: int | None = None


@dataclass
class ModelMetadata:
    """A model backend's signature and the raw GetModelMetadataResponse (passed on by the gRPC front)."""

    signature: Signature
    raw: Any = None


class Backend(ABC):
    """One arm's backend. Implementations raise `serving.errors` subclasses, never transport errors."""

    kind = "backend"

    @abstractmethod
    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        """Answer `call` within `timeout` seconds."""

    async def metadata(self, timeout: float) -> ModelMetadata | None:
        """The model's signature; None for backends that have none (legacy)."""
        return None

    @abstractmethod
    async def ready(self, timeout: float) -> bool:
        """True when the backend answers a cheap call now."""

    async def close(self) -> None:
        """Release connections."""


def failure_reason(err: BaseException) -> str:
    """The `reason` label of `modelramp_backend_errors_total` for a backend failure."""
    if isinstance(err, (errors.DeadlineExceeded, asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(err, errors.Unavailable):
        return "unavailable"
    if isinstance(err, errors.InvalidArgument):
        return "rejected"
    if isinstance(err, errors.NotFound):
        return "not_found"
    if isinstance(err, BadResponse):
        return "bad_response"
    return "error"


class BadResponse(errors.Unavailable):
    """The backend answered, but not with something the router can pass on."""
