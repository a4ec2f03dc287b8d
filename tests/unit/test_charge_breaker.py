"""The charge circuit breaker's state machine, driven by an injected clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge

from paywatch.charging.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

KEY = ("acme", "stripe")
OTHER = ("acme", "adyen")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, gauge: Gauge | None = None, threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_after_s=30.0, clock=clock, gauge=gauge)


def test_closed_until_n_consecutive_failures() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.failed(KEY)
        assert b.state(KEY) == CLOSED and b.allow(KEY)
    b.failed(KEY)
    assert b.state(KEY) == OPEN
    assert not b.allow(KEY)
    assert b.open_keys() == [KEY]


def test_a_success_resets_the_count() -> None:
    b = breaker(Clock())
    b.failed(KEY)
    b.failed(KEY)
    b.succeeded(KEY)
    b.failed(KEY)
    b.failed(KEY)
    assert b.state(KEY) == CLOSED


def test_keys_are_independent() -> None:
    b = breaker(Clock())
    for _ in range(3):
        b.failed(KEY)
    assert b.state(KEY) == OPEN
    assert b.state(OTHER) == CLOSED and b.allow(OTHER)
    assert b.state(("other-tenant", "stripe")) == CLOSED


def test_half_open_after_the_wait_allows_exactly_one_trial() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed(KEY)
    clock.now += 29.9
    assert b.state(KEY) == OPEN and not b.allow(KEY)
    clock.now += 0.1
    assert b.state(KEY) == HALF_OPEN
    assert b.allow(KEY)
    assert not b.allow(KEY), "a second call while the trial is out"
    assert b.open_keys() == [KEY]


def test_successful_trial_closes() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed(KEY)
    clock.now += 30
    assert b.allow(KEY)
    b.succeeded(KEY)
    assert b.state(KEY) == CLOSED and b.allow(KEY) and b.allow(KEY)
    assert b.open_keys() == []
    b.failed(KEY)  # the count starts again from zero
    assert b.state(KEY) == CLOSED


def test_failed_trial_reopens_for_a_full_wait() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed(KEY)
    clock.now += 45
    assert b.allow(KEY)
    b.failed(KEY)
    assert b.state(KEY) == OPEN and not b.allow(KEY)
    clock.now += 29
    assert b.state(KEY) == OPEN
    clock.now += 1
    assert b.state(KEY) == HALF_OPEN and b.allow(KEY)


def test_a_late_failure_while_open_does_not_extend_the_wait() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed(KEY)
    clock.now += 20
    b.failed(KEY)  # a call sent before the circuit opened reports late
    clock.now += 10
    assert b.state(KEY) == HALF_OPEN


def test_gauge_counts_open_circuits_per_provider() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("test_breaker_open", "open circuits", ["provider"], registry=registry)
    clock = Clock()
    b = breaker(clock, gauge, threshold=1)

    def value(provider: str) -> float | None:
        return registry.get_sample_value("test_breaker_open", {"provider": provider})

    b.failed(("a", "stripe"))
    b.failed(("b", "stripe"))
    b.failed(("a", "adyen"))
    assert value("stripe") == 2 and value("adyen") == 1
    clock.now += 30
    assert b.allow(("a", "stripe"))
    b.failed(("a", "stripe"))  # the trial failed: still open, counted once
    assert value("stripe") == 2
    b.succeeded(("b", "stripe"))
    assert value("stripe") == 1
    b.succeeded(("b", "stripe"))  # closing a closed circuit changes nothing
    assert value("stripe") == 1


@pytest.mark.parametrize(("threshold", "reset"), [(0, 30.0), (5, 0.0)])
def test_refuses_nonsense_settings(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=threshold, reset_after_s=reset, gauge=None)
