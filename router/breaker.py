"""Circuit breaker on the model arm's error rate (config `fallback.circuit_breaker`).

Counts the arm's backend calls in one-second buckets over a sliding window. When the window holds
at least `min_requests` calls and the error rate passes `max_error_rate`, the breaker opens and
stays open "until told otherwise": the next applied configuration (file change or PUT weights)
closes it. It never closes on its own, because a model that failed its guardrail should get
traffic again only by a human's or the ramp controller's decision.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TypedDict

from router.config import CircuitBreakerSpec

log = logging.getLogger(__name__)


class BreakerStats(TypedDict):
    open: bool
    reason: str
    window_calls: int
    window_errors: int


class CircuitBreaker:
    """Sliding-window error-rate breaker for one arm."""

    def __init__(self, config: CircuitBreakerSpec, arm: str = "model", clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.arm = arm
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, calls, errors]
        self.open = False
        self.opened_reason = ""

    def allow(self) -> bool:
        """False while the breaker is open: send the arm's requests to the fallback."""
        return not (self.open and self.config.enabled)

    def record(self, ok: bool) -> bool:
        """Count one call; returns True if this call opened the breaker."""
        if not self.config.enabled or self.open:
            return False
        now = int(self._clock())
        if not self._buckets or self._buckets[-1][0] != now:
            self._buckets.append([now, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += 0 if ok else 1
        horizon = now - self.config.window_seconds
        while self._buckets and self._buckets[0][0] <= horizon:
            self._buckets.popleft()
        calls = sum(b[1] for b in self._buckets)
        if calls < self.config.min_requests:
            return False
        failures = sum(b[2] for b in self._buckets)
        if failures / calls > self.config.max_error_rate:
            self.open = True
            self.opened_reason = (f"{failures} of {calls} {self.arm}-arm calls failed in the last "
                                  f"{self.config.window_seconds:g}s (limit {self.config.max_error_rate:.0%})")
            log.error("circuit breaker OPEN for the %s arm: %s; its traffic goes to the fallback until the configuration changes",
                      self.arm, self.opened_reason)
            return True
        return False

    def stats(self) -> BreakerStats:
        calls = sum(b[1] for b in self._buckets)
        failures = sum(b[2] for b in self._buckets)
        return {"open": self.open, "reason": self.opened_reason, "window_calls": calls, "window_errors": failures}
