"""Shadow mode: a share of legacy-arm requests also goes to the model in the background.

The model's answer is discarded but counted: result, duration, and agreement with the legacy
answer. The shadow call starts after the client's answer is ready and runs as its own task, so
it never delays a response; when `shadow_max_in_flight` calls are already running, further ones
are dropped (counted as `dropped`) instead of queueing behind a slow model.

Agreement is judged per example on every output the two answers share: numbers in [0, 1] are
compared as decisions (same side of 0.5, as for the churn probability), other values exactly.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np

from router.backends import Backend, PredictCall, Prediction, failure_reason
from router.metrics import RouterMetrics
from serving.tfserving import errors

log = logging.getLogger(__name__)


def agree(model: Prediction, legacy: Prediction) -> bool:
    """Whether the model's and the legacy system's answers agree on every shared output."""
    shared = set(model.outputs) & set(legacy.outputs)
    if not shared:
        return False
    for name in shared:
        a, b = np.asarray(model.outputs[name]), np.asarray(legacy.outputs[name])
        if a.shape != b.shape:
            return False
        if a.dtype.kind == "f" and b.dtype.kind == "f" and a.size and 0 <= a.min() and a.max() <= 1 and 0 <= b.min() and b.max() <= 1:
            if not np.array_equal(a >= 0.5, b >= 0.5):
                return False
        elif not np.array_equal(a, b):
            return False
    return True


class Shadow:
    """Starts and counts shadow calls for one router process."""

    def __init__(self, metrics: RouterMetrics, max_in_flight: int):
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def start(self, experiment: str, backend: Backend, call: PredictCall, legacy: Prediction, timeout: float) -> asyncio.Task[None] | None:
        """Start one shadow call; None if it was dropped because too many are running."""
        if self.in_flight >= self.max_in_flight:
            self.metrics.shadow_requests.labels(experiment, "dropped").inc()
            return None
        self.in_flight += 1
        return asyncio.get_running_loop().create_task(self._run(experiment, backend, call, legacy, timeout))

    async def _run(self, experiment: str, backend: Backend, call: PredictCall, legacy: Prediction, timeout: float) -> None:
        start = time.perf_counter()
        try:
            model = await backend.predict(call, timeout)
        except errors.UserFacingError as err:
            self.metrics.shadow_requests.labels(experiment, "error").inc()
            log.debug("shadow call failed (%s): %s", failure_reason(err), err)
            return
        finally:
            self.in_flight -= 1
            self.metrics.shadow_duration.labels(experiment).observe(time.perf_counter() - start)
        self.metrics.shadow_requests.labels(experiment, "ok").inc()
        self.metrics.shadow_agreements.labels(experiment, "true" if agree(model, legacy) else "false").inc()
