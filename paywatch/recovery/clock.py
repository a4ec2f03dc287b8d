"""The saga clock: ``PAYWATCH_TIME_SCALE`` compresses recovery schedules (demos, tests).

At scale 1 (production) saga time *is* wall time and nothing is converted. At scale
``s`` saga time runs ``s`` times faster than wall time from a fixed anchor: a wall instant
``w`` is the saga instant ``anchor + (w - anchor) * s``. The shell converts every time
going into ``decide`` (now, event times) to saga time and every time coming out (due
times, transition times) back to wall time, so the pure policy never knows, Kafka records
carry wall times that the executor and the read models can use as they are, and a
"day 1" retry at scale 86400 is due one wall second after the failure.

The anchor must not move while sagas are open (their timers are stored in saga time), so
the worker keeps it in its state directory (``time-anchor``, see
:mod:`paywatch.streams.saga_clock`), written on first start.
Saga time would overflow ``datetime`` (years 1-9999) for wall times more than about a
month from the anchor at 86400, and provider times are often that old (an invoice created
weeks before, a retry date a provider announced); so a scaled saga time is kept within
``SPAN`` of the anchor, saturating: a time that far before (after) the anchor is simply
"long before" ("long after") for the policy. At scale 1 nothing is converted or bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

SPAN = timedelta(days=365 * 1000)
"""How far from the anchor a scaled saga time may go (stays inside datetime's years)."""


@dataclass(frozen=True)
class SagaClock:
    """Converts between wall time and saga time (identity at scale 1)."""

    scale: float = 1.0
    anchor: datetime = datetime(2026, 1, 1, tzinfo=UTC)

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError("time scale must be positive")

    @property
    def identity(self) -> bool:
        """True at scale 1: no conversion at all."""
        return self.scale == 1.0

    def to_saga(self, wall: datetime) -> datetime:
        """The saga instant of a wall instant."""
        if self.identity:
            return wall
        delta = wall - self.anchor
        if abs(delta.total_seconds()) * self.scale > SPAN.total_seconds():
            return self.anchor + (SPAN if delta > timedelta(0) else -SPAN)  # saturated
        return self.anchor + delta * self.scale  # exact to the microsecond

    def to_wall(self, saga: datetime) -> datetime:
        """The wall instant of a saga instant."""
        if self.identity:
            return saga
        return self.anchor + (saga - self.anchor) / self.scale
