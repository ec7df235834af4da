"""Backends of the router's arms, one file per implementation, and the factory that picks one."""

from __future__ import annotations

from router.backends.base import (
    FORWARDED_HEADER_BYTES,
    FORWARDED_HEADERS,
    TRACE_HEADERS,
    Backend,
    BadResponse,
    ColumnOutputs,
    ModelMetadata,
    NonFiniteOutput,
    PredictCall,
    Prediction,
    PredictRequest,
    UnmappedAnswer,
    capture_headers,
    check_finite,
    failure_reason,
    forwardable,
    forwarded,
    forwarding,
)
from router.backends.nop import NopBackend
from router.config import LegacyHttpSpec, TfServingGrpcSpec, TfServingRestSpec


def make_backend(config: object) -> Backend:
    """The backend for an arm's `backend:` config (one class per `kind`).

    Takes any object, as `Router`'s `backend_factory` does (tests hand it stand-ins).
    """
    if isinstance(config, LegacyHttpSpec):
        from router.backends.legacy_http import LegacyHttpBackend  # noqa: PLC0415 - only the configured kinds are loaded

        return LegacyHttpBackend(config)
    if isinstance(config, TfServingGrpcSpec):
        from router.backends.tfserving_grpc import TfServingGrpcBackend  # noqa: PLC0415

        return TfServingGrpcBackend(config)
    if isinstance(config, TfServingRestSpec):
        from router.backends.tfserving_rest import TfServingRestBackend  # noqa: PLC0415 - only for this kind

        return TfServingRestBackend(config)
    raise ValueError(f"unknown backend kind {getattr(config, 'kind', None)!r}")


__all__ = ["FORWARDED_HEADERS", "FORWARDED_HEADER_BYTES", "TRACE_HEADERS", "Backend", "BadResponse", "ColumnOutputs", "ModelMetadata",
           "NonFiniteOutput", "NopBackend", "PredictCall", "PredictRequest", "Prediction", "UnmappedAnswer", "capture_headers", "check_finite",
           "failure_reason", "forwardable", "forwarded", "forwarding", "make_backend"]
