"""Circuit breakers on each arm's backend, closed -> open -> half-open (config `fallback.circuit_breaker`, `fallback.legacy_circuit_breaker`).

Closed -> open -> half-open -> closed, the cycle of Hystrix, resilience4j and Envoy's outlier
detection. Closed, a breaker counts the backend's calls in one-second buckets over a sliding
window; when the window holds at least `min_requests` calls and the error rate passes
`max_error_rate`, it opens. Open, no call reaches the backend for `open_seconds`: the model arm's
requests are answered by the legacy fallback, the legacy arm's get a fast 503 (or the model, if
`fallback.to_model` is on) instead of each waiting for a connect error or the timeout. Then it is
half-open: the next `half_open_probes` requests are let through as probes while the rest stay on
the open path; all probes succeeding closes it, one failing reopens it for twice the last period
(at most `max_open_seconds`), so a backend that stays down is probed less and less often.

Before the half-open state the model arm's breaker stayed open until the configuration changed,
"because a model that failed its guardrail should get traffic again only by a decision": after the
model server came back from a crash, 100% of the model arm's traffic stayed on legacy until someone
edited the file. That reasoning mixed two things. The guardrail decision is the ramp controller's
(or a human's) and lives in the configuration: a rollback sets the model's weight to 0, so no
model-arm request exists to probe with, and the breaker cannot undo it. The breaker is this
replica's quick protection against a backend that fails now; the requests it turns away are
counted as fallbacks, which is what the fallback guardrail reads. So it probes on its own, and a
configuration change (file or weights API, the controller's ramp included) still builds a new,
closed breaker. `open_seconds: null` keeps the old behaviour: open until the configuration changes.

A call is admitted with a ticket (the breaker's epoch): a result that comes back after the state
changed (a slow call started before the breaker opened) does not count in the new state, and a
probe that ends without a verdict (the client went away) gives its slot back (`abandon`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal, TypedDict

from router.config import CircuitBreakerSpec
from serving.tfserving import errors

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"
#: `modelramp_circuit_open` per state: 1 while all the arm's traffic is held off its backend, 0.5
#: while only probes reach it, so one gauge (and the dashboard's existing panel) shows the cycle.
GAUGE_VALUE: dict[State, float] = {CLOSED: 0.0, HALF_OPEN: 0.5, OPEN: 1.0}


class CircuitOpen(errors.Unavailable):
    """The arm's breaker holds the call off its backend: no call was made (503, gRPC UNAVAILABLE).

    `retry_after`: whole seconds until the breaker lets probes through, for REST's `Retry-After`
    (a client that retries sooner gets the same answer).
    """

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class BreakerStats(TypedDict):
    open: bool  # open or half-open: the arm's traffic (all but the probes) is held off its backend
    state: State
    reason: str
    open_seconds: float | None  # the current (or last) open period; None: until the configuration changes
    window_calls: int
    window_errors: int


class CircuitBreaker:
    """Sliding-window error-rate breaker for one arm, with a half-open probe phase."""

    def __init__(self, config: CircuitBreakerSpec, arm: str = "model", clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.arm = arm
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, calls, errors]
        self._calls = self._failures = 0  # over the buckets
        self._state: State = CLOSED
        self._epoch = 0  # changes on every transition: tickets of an earlier state are stale
        self._opened_at = 0.0
        self._open_for: float | None = config.open_seconds
        self._reopens = 0  # failed probe rounds since the breaker last closed (the backoff's exponent)
        self._probes = 0  # probes admitted in this half-open state and not abandoned
        self._probes_ok = 0
        self.opened_reason = ""

    # ---- state -----------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state now; an open breaker whose period has passed reads half-open (read-only: for metrics)."""
        if self._state == OPEN and self._open_for is not None and self._clock() - self._opened_at >= self._open_for:
            return HALF_OPEN
        return self._state

    @property
    def open(self) -> bool:
        """True while the arm's traffic is held off its backend (open, or half-open but for the probes)."""
        return self.config.enabled and self.state != CLOSED

    def seconds_to_probe(self) -> float:
        """Seconds until an open breaker lets probes through (0 once it does; 1 when only a new configuration closes it)."""
        if self._state != OPEN:
            return 0.0
        if self._open_for is None:
            return 1.0
        return max(0.0, self._open_for - (self._clock() - self._opened_at))

    def gauge(self) -> float:
        """The value of `modelramp_circuit_open` (read when /metrics is scraped)."""
        return GAUGE_VALUE[self.state] if self.config.enabled else 0.0

    # ---- calls -----------------------------------------------------------------------------
    def admit(self) -> int | None:
        """A ticket for one backend call (pass it to `record` or `abandon`), or None: hold the call off."""
        if not self.config.enabled:
            return self._epoch
        if self._state == OPEN and self.state == HALF_OPEN:
            self._transition(HALF_OPEN)
            log.warning("circuit breaker HALF-OPEN for the %s arm after %.3gs open: letting %d probe request(s) through",
                        self.arm, self._open_for or 0.0, self.config.half_open_probes)
        if self._state == CLOSED:
            return self._epoch
        if self._state == HALF_OPEN and self._probes < self.config.half_open_probes:
            self._probes += 1
            return self._epoch
        return None

    def record(self, ok: bool, ticket: int | None = None) -> bool:
        """Count one call admitted with `ticket` (None: the current state's); True if this call opened the breaker."""
        if not self.config.enabled or (ticket is not None and ticket != self._epoch):
            return False
        if self._state == OPEN:
            return False
        if self._state == HALF_OPEN:
            if not ok:
                self._trip(f"a probe request failed after {self._open_for or 0.0:.3g}s open", reopen=True)
                return True
            self._probes_ok += 1
            if self._probes_ok >= self.config.half_open_probes:
                log.warning("circuit breaker CLOSED for the %s arm: %d probe request(s) succeeded", self.arm, self._probes_ok)
                self._reopens = 0
                self.opened_reason = ""
                self._transition(CLOSED)
            return False
        # Running totals beside the buckets: every call of both arms passes here, and summing the
        # window's buckets on each call made admit + record 5.4 us against 1.1 us (timeit, 1,000
        # calls/s filling a 10 s window).
        now = int(self._clock())
        buckets = self._buckets
        if not buckets or buckets[-1][0] != now:
            buckets.append([now, 0, 0])
            horizon = now - self.config.window_seconds
            while buckets[0][0] <= horizon:
                _, old_calls, old_failures = buckets.popleft()
                self._calls -= old_calls
                self._failures -= old_failures
        bucket = buckets[-1]
        bucket[1] += 1
        self._calls += 1
        if not ok:
            bucket[2] += 1
            self._failures += 1
        calls = self._calls
        if calls < self.config.min_requests:
            return False
        failures = self._failures
        if failures / calls > self.config.max_error_rate:
            self._trip(f"{failures} of {calls} {self.arm}-arm calls failed in the last "
                       f"{self.config.window_seconds:g}s (limit {self.config.max_error_rate:.0%})", reopen=False)
            return True
        return False

    def abandon(self, ticket: int) -> None:
        """A call admitted with `ticket` ended without a verdict (cancelled, the client's own error): free its probe slot."""
        if self.config.enabled and ticket == self._epoch and self._state == HALF_OPEN and self._probes > self._probes_ok:
            self._probes -= 1

    # ---- transitions -----------------------------------------------------------------------
    def _trip(self, reason: str, reopen: bool) -> None:
        self._reopens = self._reopens + 1 if reopen else 0
        base = self.config.open_seconds
        # Doubling per failed probe round, as resilience4j's exponential wait: a backend that stays
        # down gets a probe round every few minutes at most, one that blipped is back in seconds.
        self._open_for = None if base is None else min(base * 2.0 ** self._reopens, max(base, self.config.max_open_seconds))
        self.opened_reason = reason
        self._opened_at = self._clock()
        self._transition(OPEN)
        until = "the configuration changes" if self._open_for is None else f"probes in {self._open_for:.3g}s"
        log.error("circuit breaker OPEN for the %s arm: %s; its traffic is held off its backend until %s", self.arm, reason, until)

    def _transition(self, state: State) -> None:
        self._state = state
        self._epoch += 1
        self._probes = self._probes_ok = 0
        self._buckets.clear()  # a closed breaker starts a fresh window: the old one judged the old state
        self._calls = self._failures = 0

    def stats(self) -> BreakerStats:
        calls, failures = self._calls, self._failures
        state = self.state if self.config.enabled else CLOSED
        return {"open": state != CLOSED, "state": state, "reason": self.opened_reason, "open_seconds": self._open_for,
                "window_calls": calls, "window_errors": failures}
