"""A circuit breaker per (tenant, provider): stop calling a provider that keeps failing.

A provider that is down (or a tenant whose credentials were revoked) answers every retry
with ``Unavailable``. Without a breaker each due command would still wait for its timeout,
one after another, and hammer an API that is already in trouble; with one, the executor
asks ``allow(key)`` first and leaves the command pending while the circuit is open.

States, per key::

    closed --N consecutive failures--> open --reset_after_s--> half-open
    half-open --the one trial succeeds--> closed
    half-open --the one trial fails-----> open (for another reset_after_s)

Only ``Unavailable`` counts as a failure (the caller decides what to report): a decline or
a ``Rejected`` is an answer, which proves the provider is up, so the caller reports those
as ``succeeded``. Half-open lets exactly ONE call through until it is reported: concurrent
commands for the same key keep waiting instead of all rushing a barely-recovered API.

Pure: no I/O, the clock is injected (``time.monotonic`` by default), so tests drive time.
The gauge ``paywatch_charge_breaker_open{provider}`` counts the open (or half-open) circuits
per provider; a breaker may be given its own gauge (tests) or ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

Key = tuple[str, str]
"""(tenant, provider)."""

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

OPEN_GAUGE = Gauge(
    "paywatch_charge_breaker_open",
    "Charge circuits not closed (open or half-open), by provider",
    ["provider"],
)


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    """When the circuit last opened; None while closed."""
    trial_out: bool = False
    """Half-open: the one trial call has been allowed and not reported yet."""


class CircuitBreaker:
    """Closed/open/half-open state per key; see the module doc."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_after_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        gauge: Gauge | None = OPEN_GAUGE,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_after_s <= 0:
            raise ValueError("reset_after_s must be positive")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._gauge = gauge
        self._circuits: dict[Key, _Circuit] = {}

    def state(self, key: Key) -> str:
        """``closed``, ``open`` or ``half-open`` (open whose wait is over)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return CLOSED
        if self._clock() - circuit.opened_at >= self.reset_after_s:
            return HALF_OPEN
        return OPEN

    def allow(self, key: Key) -> bool:
        """May a call for ``key`` go out now? Half-open allows one until it is reported."""
        state = self.state(key)
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        circuit = self._circuits[key]
        if circuit.trial_out:
            return False
        circuit.trial_out = True
        return True

    def succeeded(self, key: Key) -> None:
        """The provider answered (paid, declined or rejected): close the circuit."""
        circuit = self._circuits.pop(key, None)
        if circuit is not None and circuit.opened_at is not None:
            self._count(key, -1)

    def failed(self, key: Key) -> None:
        """The provider did not answer usably (``Unavailable``)."""
        circuit = self._circuits.setdefault(key, _Circuit())
        if circuit.opened_at is not None:
            if self.state(key) == HALF_OPEN:  # the trial failed: a full wait again
                circuit.opened_at = self._clock()
                circuit.trial_out = False
            # else: a call sent before the circuit opened; the wait stays as it was.
            return
        circuit.failures += 1
        if circuit.failures >= self.failure_threshold:
            circuit.opened_at = self._clock()
            self._count(key, +1)

    def open_keys(self) -> list[Key]:
        """Keys whose circuit is not closed (open or half-open), sorted."""
        return sorted(k for k, c in self._circuits.items() if c.opened_at is not None)

    def _count(self, key: Key, delta: int) -> None:
        if self._gauge is not None:
            self._gauge.labels(provider=key[1]).inc(delta)
