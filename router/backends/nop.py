"""A backend that answers nothing: for tests, and for an arm that must never be called."""

from __future__ import annotations

from router.backends.base import Backend, PredictCall, Prediction
from serving.tfserving import errors


class NopBackend(Backend):
    kind = "nop"

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        raise errors.Unavailable("no backend is configured for this arm")

    async def ready(self, timeout: float) -> bool:
        return True
