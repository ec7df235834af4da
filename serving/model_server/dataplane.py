"""The model server's one core, shared by its gRPC and REST fronts.

Fronts parse their protocol into plain arguments and numpy arrays, call the data plane, and
format its answer; errors are `serving.tfserving.errors` classes mapped once per protocol. Small requests
(the router's one-row predictions) run inline on the event loop: the call takes under a
millisecond, less than a thread-pool hop and wake-up costs under load. Larger batches run in a
thread pool (TensorFlow releases the GIL while it computes), so the loop that accepts requests
never blocks on a long model call.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.model_server.registry import ModelRegistry, VersionStatus
from serving.model_server.servable import Servable

INLINE_MAX_ROWS = 8  # measured: one row costs about 0.8 ms in the signature call here (loadtests/bench_model_server.py)


class DataPlane:
    def __init__(self, registry: ModelRegistry, workers: int = 4, inline_max_rows: int = INLINE_MAX_ROWS):
        self.registry = registry
        self.inline_max_rows = inline_max_rows
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        return self.registry.get(name, version, label)

    async def predict(self, servable: Servable, signature_name: str | None, inputs: dict[str, np.ndarray],
                      output_filter: list[str] | None = None) -> tuple[str, dict[str, np.ndarray]]:
        if _rows(inputs) <= self.inline_max_rows:
            return servable.predict(signature_name, inputs, output_filter)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, servable.predict, signature_name, inputs, output_filter)

    def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        return self.registry.statuses(name, version)

    async def poll(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self.registry.poll)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _rows(inputs: dict[str, np.ndarray]) -> int:
    """The batch size (largest leading dimension; a scalar counts as one row)."""
    return max((a.shape[0] if a.ndim else 1 for a in inputs.values()), default=0)
