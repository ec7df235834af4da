"""Backends of the router's arms, one file per implementation, and the factory that picks one."""

from __future__ import annotations

from router.backends.base import (
    FORWARDED_HEADERS,
    Backend,
    BadResponse,
    ColumnOutputs,
    ModelMetadata,
    NonFiniteOutput,
    PredictCall,
    Prediction,
    PredictRequest,
    check_finite,
    failure_reason,
    forwardable,
    forwarded,
    forwarding,
)
from router.backends.nop import NopBackend


def make_backend(config) -> Backend:
    """The backend for an arm's `backend:` config (by its `kind`)."""
    if config.kind == "legacy_http":
        from router.backends.legacy_http import LegacyHttpBackend  # noqa: PLC0415 - only the configured kinds are loaded

        return LegacyHttpBackend(config)
    if config.kind == "tfserving_grpc":
        from router.backends.tfserving_grpc import TfServingGrpcBackend  # noqa: PLC0415

        return TfServingGrpcBackend(config)
    if config.kind == "tfserving_rest":
        from router.backends.tfserving_rest import TfServingRestBackend  # noqa: PLC0415 - only for this kind

        return TfServingRestBackend(config)
    raise ValueError(f"unknown backend kind {config.kind!r}")


__all__ = ["FORWARDED_HEADERS", "Backend", "BadResponse", "ColumnOutputs", "ModelMetadata", "NonFiniteOutput", "NopBackend", "PredictCall",
           "PredictRequest", "Prediction", "check_finite", "failure_reason", "forwardable", "forwarded", "forwarding", "make_backend"]
