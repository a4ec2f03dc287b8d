"""Where tenant policy changes go: ``PolicyChanged`` records on ``recovery.policies``.

A change counts only once the broker acknowledged it (an idempotent acks=all producer);
Kafka down means ``Retryable`` and nothing changed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from paywatch.kafka.appender import KafkaAppender
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import kafka_security
from paywatch.schemas.codec import Codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PolicyChanged
from paywatch.schemas.topics import RECOVERY_POLICIES, tenant_key
from paywatch.settings import Settings


class Appender(Protocol):
    """An acks=all producer that answers only after the broker ack (KafkaAppender)."""

    async def append(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Write one record; (partition, offset), or Retryable."""
        ...


@dataclass(frozen=True)
class PolicyLog:
    """Where policy changes go: ``recovery.policies``, keyed by tenant."""

    appender: Appender
    codec: Codec
    topic: str

    async def append(self, change: PolicyChanged) -> Coords:
        """Append one change and wait for the broker ack."""
        value = self.codec.encode(change, topic=self.topic)
        key = tenant_key(change.tenant).encode()
        partition, offset = await self.appender.append(self.topic, key, value)
        return Coords(self.topic, partition, offset)


@asynccontextmanager
async def open_policy_log(settings: Settings, bootstrap: str) -> AsyncIterator[PolicyLog]:
    """A PolicyLog on its own idempotent producer (reconnecting while Kafka is down)."""
    appender = KafkaAppender(
        bootstrap,
        settings.ingest_ack_timeout_s,
        client_id="paywatch-policy",
        security=kafka_security(settings),
    )
    await appender.start()
    try:
        yield PolicyLog(appender, make_codec(settings), settings.topic(RECOVERY_POLICIES))
    finally:
        await appender.stop()
