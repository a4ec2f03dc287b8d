"""Where a record sits in Kafka: the coordinates every read model and audit line carries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Coords:
    """Kafka coordinates of one record."""

    topic: str
    partition: int
    offset: int
