"""Tenant-keyed topics paywatch appends to and waits for: a record counts once acked.

``recovery.policies`` (:mod:`paywatch.tenants.policy_log`) and ``ops.audit``
(:mod:`paywatch.tenants.ops_audit`) are both written this way: one record at a time, keyed
by tenant, through an idempotent acks=all producer of their own that answers only after
the broker's ack; Kafka down means ``Retryable`` and the caller lets nothing count.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from paywatch.kafka.appender import KafkaAppender
from paywatch.kafka.codec import make_codec
from paywatch.kafka.security import kafka_security
from paywatch.schemas.codec import Codec
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import OpsAudit, PolicyChanged
from paywatch.schemas.topics import tenant_key
from paywatch.settings import Settings

R = TypeVar("R", PolicyChanged, OpsAudit)
L = TypeVar("L", bound="TenantLog[Any]")


class Appender(Protocol):
    """An acks=all producer that answers only after the broker ack (KafkaAppender)."""

    async def append(self, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
        """Write one record; (partition, offset), or Retryable."""
        ...


@dataclass(frozen=True)
class TenantLog(Generic[R]):
    """One tenant-keyed topic: its appender, codec and full topic name."""

    appender: Appender
    codec: Codec
    topic: str

    async def append(self, record: R) -> Coords:
        """Append one record, keyed by its tenant, and wait for the broker ack."""
        value = self.codec.encode(record, topic=self.topic)
        key = tenant_key(record.tenant).encode()
        partition, offset = await self.appender.append(self.topic, key, value)
        return Coords(self.topic, partition, offset)


@asynccontextmanager
async def open_tenant_log(
    kind: type[L], settings: Settings, bootstrap: str, topic: str, client_id: str
) -> AsyncIterator[L]:
    """A `kind` of log on `topic` (logical name), on its own idempotent producer
    (reconnecting while Kafka is down)."""
    appender = KafkaAppender(
        bootstrap,
        settings.ingest_ack_timeout_s,
        client_id=client_id,
        security=kafka_security(settings),
    )
    await appender.start()
    try:
        yield kind(appender, make_codec(settings), settings.topic(topic))
    finally:
        await appender.stop()
