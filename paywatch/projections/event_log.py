"""Read model `event_log`: every canonical event with its Kafka coordinates (audit)."""

from __future__ import annotations

from typing import Any

from paywatch.projections.base import ReadModel, each, execute_many
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS

INSERT = (
    "INSERT INTO event_log (event_id, tenant, type, provider, source_type, invoice_ref,"
    ' customer_ref, occurred_at, topic, partition, "offset", payload)'
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    " ON CONFLICT (event_id) DO NOTHING"
)


def row(event: PaymentEvent, at: Coords) -> tuple[Any, ...]:
    """The event_log row of one event."""
    return (
        event.event_id,
        event.tenant,
        event.type.value,
        event.provider,
        event.source_type,
        event.invoice_ref,
        event.customer_ref,
        event.occurred_at,
        at.topic,
        at.partition,
        at.offset,
        event.model_dump(mode="json"),
    )


READ_MODEL = ReadModel(
    "event_log", {PAYMENTS_EVENTS: PaymentEvent}, rows=each(row), write=execute_many(INSERT)
)
