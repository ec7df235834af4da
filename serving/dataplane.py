"""The model server's one core, shared by its gRPC and REST fronts.

Fronts parse their protocol into plain arguments and numpy arrays, call the data plane, and
format its answer; errors are `serving.errors` classes mapped once per protocol. Inference runs
in a thread pool (TensorFlow releases the GIL while it computes), so the event loop that accepts
requests never blocks on a model.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.model_registry import ModelRegistry, VersionStatus
from serving.servable import Servable


class DataPlane:
    def __init__(self, registry: ModelRegistry, workers: int = 4):
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        return self.registry.get(name, version, label)

    async def predict(self, servable: Servable, signature_name: str | None, inputs: dict[str, np.ndarray],
                      output_filter: list[str] | None = None) -> tuple[str, dict[str, np.ndarray]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, servable.predict, signature_name, inputs, output_filter)

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        return self.registry.statuses(name, version)

    async def poll(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.registry.poll)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
