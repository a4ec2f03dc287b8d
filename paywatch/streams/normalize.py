"""Pure step of the normalize agent: one raw record -> canonical events or a dead letter."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from paywatch.errors import CodecError, PayloadError, UnknownProvider
from paywatch.providers.base import Provider
from paywatch.providers.registry import get_provider
from paywatch.schemas.codec import Codec
from paywatch.schemas.models import DeadLetter, PaymentEvent, RawWebhook, dead_letter_reason
from paywatch.schemas.topics import invoice_key


@dataclass(frozen=True)
class Normalized:
    """Events for one raw webhook plus the key that identifies the delivery for dedupe."""

    dedupe_key: str
    events: list[PaymentEvent] = field(default_factory=list)
    raw: RawWebhook | None = None
    doc: dict[str, Any] = field(default_factory=dict)
    """The parsed body (thin providers fetch what it names)."""
    provider_event_id: str = ""


def event_key(event: PaymentEvent) -> bytes:
    """Kafka key of payments.events: tenant/invoice_ref (one saga per key)."""
    return invoice_key(event.tenant, event.invoice_ref).encode()


def normalize_record(
    codec: Codec,
    providers: dict[str, Provider],
    value: bytes,
    topic: str,
    partition: int,
    offset: int,
) -> Normalized:
    """Decode and normalize one webhooks.raw record (raises the POISON errors below)."""
    raw = codec.decode(value, RawWebhook, topic=topic)
    provider = get_provider(raw.provider, providers)
    doc = provider.parse(raw.body)  # once: normalize receives the document
    pid = provider.provider_event_id(doc)
    key = f"{raw.tenant}/{raw.provider}/{pid}"
    events = provider.normalize(raw, topic, partition, offset, doc)
    return Normalized(key, events, raw, doc, pid)


def dead_letter(
    *,
    stage: str = "normalize",
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    error: BaseException | str,
    now: datetime,
) -> DeadLetter:
    """A DeadLetter for a record a stage could not handle (``error``: exception or reason)."""
    return DeadLetter(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        stage=stage,
        error=dead_letter_reason(error),
        key=key,
        payload=value,
        failed_at=now,
    )


POISON = (CodecError, PayloadError, UnknownProvider)
"""Errors that will never succeed on retry: the record goes to the DLQ."""
