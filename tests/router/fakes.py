"""In-test backends and configs for router unit tests (no processes, no network)."""

from __future__ import annotations

import asyncio

import numpy as np

from experiments.config import parse_config
from router.backends import Backend, ModelMetadata, PredictCall, Prediction, PredictRequest, forwarded
from router.signature import Signature, TensorSpec
from serving.tfserving import errors
from serving.tfserving.tensors import DT_FLOAT, DT_STRING

SIGNATURE = Signature("serving_default",
                      {"state": TensorSpec(DT_STRING, (-1,)), "total_day_minutes": TensorSpec(DT_FLOAT, (-1,))},
                      {"probability": TensorSpec(DT_FLOAT, (-1,))}, model_version=2)


def config_dict(model_weight: float = 0.5, **extra) -> dict:
    doc = {
        "name": "churn-test", "salt": "salt-1", "model_name": "churn",
        "arms": {"legacy": {"weight": round(1 - model_weight, 12), "backend": {"kind": "legacy_http", "url": "http://127.0.0.1:9"}},
                 "model": {"weight": model_weight, "backend": {"kind": "tfserving_grpc", "target": "127.0.0.1:9", "model_name": "churn"}}},
    }
    doc.update(extra)
    return doc


def make_config(model_weight: float = 0.5, **extra):
    return parse_config(config_dict(model_weight, **extra))


class FakeBackend(Backend):
    """Answers `value` for every example, or raises `fail`; `gate` (an Event) holds answers back."""

    def __init__(self, value: float, metadata: bool):
        self.value = value
        self.fail: Exception | None = None
        self.calls: list[PredictCall] = []
        self.forwarded: list[dict[str, str]] = []  # per call, the headers a front asked to pass on
        self.has_metadata = metadata
        self.gate: asyncio.Event | None = None
        self.closed = False

    async def predict(self, call: PredictCall, timeout: float) -> Prediction:
        self.calls.append(call)
        self.forwarded.append(dict(forwarded()))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        batch = len(next(iter(call.inputs.values())))
        return Prediction({"probability": np.full(batch, self.value, dtype=np.float32)}, 2 if self.has_metadata else None)

    async def metadata(self, timeout: float):
        if not self.has_metadata:
            return None
        if self.fail is not None:
            raise errors.Unavailable("down")
        return ModelMetadata(SIGNATURE)

    async def ready(self, timeout: float) -> bool:
        return self.fail is None

    async def close(self) -> None:
        self.closed = True


def fake_factory(config) -> Backend:
    return FakeBackend(1.0, metadata=False) if config.kind == "legacy_http" else FakeBackend(0.25, metadata=True)


def columns(n: int = 1) -> dict[str, np.ndarray]:
    return {"state": np.array([b"KS"] * n, dtype=object), "total_day_minutes": np.full(n, 100.0, dtype=np.float32)}


def decoder(inputs=None):
    return lambda signature: PredictRequest(columns() if inputs is None else inputs, signature_name="serving_default")
