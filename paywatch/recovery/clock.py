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
Saga time overflows ``datetime`` after (year 9999 - now) / s of wall time: about a month
at 86400, which is plenty for a demo; at scale 1 it never matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


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
        return self.anchor + (wall - self.anchor) * self.scale

    def to_wall(self, saga: datetime) -> datetime:
        """The wall instant of a saga instant."""
        if self.identity:
            return saga
        return self.anchor + (saga - self.anchor) / self.scale
