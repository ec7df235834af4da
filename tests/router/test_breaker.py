"""The circuit breaker's state machine on an injected clock: closed -> open -> half-open -> closed or reopened."""

from __future__ import annotations

from router.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from router.config import CircuitBreakerSpec, LegacyCircuitBreakerSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **spec) -> CircuitBreaker:
    config = {"min_requests": 4, "max_error_rate": 0.5, "window_seconds": 10, "open_seconds": 30, "half_open_probes": 2, **spec}
    return CircuitBreaker(CircuitBreakerSpec(**config), "model", clock=clock)


def trip(b: CircuitBreaker) -> None:
    for _ in range(4):
        ticket = b.admit()
        assert ticket is not None
        b.record(False, ticket)
    assert b.state == OPEN


def test_opens_on_the_error_rate_and_holds_calls_off_for_the_open_period():
    clock = Clock()
    b = breaker(clock)
    for ok in (True, False, True):
        b.record(ok, b.admit())
    assert b.state == CLOSED and b.gauge() == 0.0  # 3 calls: fewer than min_requests
    assert b.record(False, b.admit()) is False  # 2 of 4 is not above 50%
    assert b.record(False, b.admit()) is True  # 3 of 5 is
    assert b.state == OPEN and b.open and b.gauge() == 1.0
    assert "3 of 5 model-arm calls failed" in b.stats()["reason"]
    clock.now += 29.9
    assert b.admit() is None and b.state == OPEN


def test_half_open_lets_the_probes_through_and_closes_when_they_succeed():
    clock = Clock()
    b = breaker(clock)
    trip(b)
    clock.now += 30
    assert b.state == HALF_OPEN and b.gauge() == 0.5  # by the clock alone: a scrape sees it before any request
    first, second = b.admit(), b.admit()
    assert first is not None and second is not None
    assert b.admit() is None, "only half_open_probes calls at once; the others stay on the fallback"
    b.record(True, first)
    assert b.state == HALF_OPEN
    b.record(True, second)
    assert b.state == CLOSED and not b.open and b.gauge() == 0.0
    assert b.stats()["window_calls"] == 0, "a closed breaker judges a fresh window"
    for _ in range(3):  # the old failures are forgotten: three failures do not reopen it
        b.record(False, b.admit())
    assert b.state == CLOSED


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_maximum():
    clock = Clock()
    b = breaker(clock, max_open_seconds=100)
    trip(b)
    periods = []
    for _ in range(4):
        opened = clock.now
        while b.state == OPEN:
            clock.now += 1
        periods.append(clock.now - opened)
        probe = b.admit()
        assert b.record(False, probe) is True
        assert b.state == OPEN
    assert periods == [30, 60, 100, 100]
    clock.now += 100
    for _ in range(2):
        b.record(True, b.admit())
    assert b.state == CLOSED
    trip(b)  # closed since: the next opening starts from open_seconds again
    assert b.stats()["open_seconds"] == 30


def test_results_of_calls_admitted_in_an_earlier_state_do_not_count():
    clock = Clock()
    b = breaker(clock)
    slow = b.admit()  # started while closed, answers after the breaker opened and half-opened
    trip(b)
    clock.now += 30
    probe = b.admit()
    b.record(False, slow)
    assert b.state == HALF_OPEN, "a stale failure must not reopen the breaker"
    b.record(True, slow)
    b.record(True, probe)
    assert b.state == HALF_OPEN, "a stale success must not count as a probe"


def test_an_abandoned_probe_gives_its_slot_back():
    clock = Clock()
    b = breaker(clock, half_open_probes=1)
    trip(b)
    clock.now += 30
    probe = b.admit()
    assert probe is not None and b.admit() is None
    b.abandon(probe)  # the client went away: no verdict
    again = b.admit()
    assert again is not None
    b.record(True, again)
    assert b.state == CLOSED


def test_open_seconds_null_stays_open_until_the_configuration_changes():
    clock = Clock()
    b = breaker(clock, open_seconds=None)
    trip(b)
    clock.now += 10 ** 6
    assert b.state == OPEN and b.admit() is None
    assert b.stats()["open_seconds"] is None


def test_disabled_admits_everything_and_never_opens():
    clock = Clock()
    b = breaker(clock, enabled=False)
    for _ in range(50):
        assert b.record(False, b.admit()) is False
    assert b.state == CLOSED and b.gauge() == 0.0 and not b.stats()["open"]


def test_the_legacy_breakers_defaults_open_only_on_a_mostly_failing_system_and_probe_soon():
    spec = LegacyCircuitBreakerSpec()
    assert (spec.max_error_rate, spec.window_seconds, spec.open_seconds) == (0.5, 10.0, 5.0)
    spec = LegacyCircuitBreakerSpec(min_requests=5)  # a partial section keeps the legacy defaults
    assert spec.max_error_rate == 0.5 and spec.min_requests == 5


def test_calls_older_than_the_window_are_forgotten():
    clock = Clock()
    b = breaker(clock)  # window 10 s, at least 4 calls, more than 50% failing
    for _ in range(3):
        b.record(False, b.admit())
    clock.now += 10  # those three leave the window
    for _ in range(3):
        b.record(True, b.admit())
    assert b.stats()["window_calls"] == 3 and b.stats()["window_errors"] == 0
    b.record(False, b.admit())
    b.record(False, b.admit())
    assert b.state == CLOSED  # 2 of 5 in the window, not 5 of 8
    clock.now += 5
    b.record(False, b.admit())
    assert b.state == CLOSED  # 3 of 6 is not above 50%
    b.record(False, b.admit())
    assert b.state == OPEN  # 4 of 7 is


def test_seconds_to_probe_counts_down_the_open_period():
    clock = Clock()
    b = breaker(clock)
    assert b.seconds_to_probe() == 0.0
    trip(b)
    assert b.seconds_to_probe() == 30.0
    clock.now += 29.5
    assert b.seconds_to_probe() == 0.5
    clock.now += 1
    assert b.seconds_to_probe() == 0.0 and b.state == HALF_OPEN
    forever = breaker(clock, open_seconds=None)
    trip(forever)
    assert forever.seconds_to_probe() == 1.0
