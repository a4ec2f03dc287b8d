"""Kafka -> Postgres read models. One module per read model (pure), one sink, one runner."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Coords:
    """Kafka coordinates of the record being projected."""

    topic: str
    partition: int
    offset: int
