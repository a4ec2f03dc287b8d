"""Where a record sits in Kafka: the coordinates every read model and audit line carries."""

from __future__ import annotations

from typing import NamedTuple


class Coords(NamedTuple):
    """Kafka coordinates of one record (a tuple, so ``topic, partition, offset = at`` works)."""

    topic: str
    partition: int
    offset: int
