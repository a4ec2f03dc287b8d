"""Read model `event_log`: every canonical event with its Kafka coordinates (audit)."""

from __future__ import annotations

from typing import Any

from paywatch.projections.base import ReadModel, each
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS

WRITE = CopyMerge(
    "event_log",
    tuple(
        "event_id tenant type provider source_type invoice_ref customer_ref occurred_at"
        " topic partition offset payload".split()
    ),
    key=("event_id",),
    json=frozenset({"payload"}),
)
"""A known event id is left alone (a redelivery changes nothing)."""


def row(event: PaymentEvent, at: Coords) -> tuple[Any, ...]:
    """The event_log row of one event (the payload as JSON text)."""
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
        event.model_dump_json(),
    )


READ_MODEL = ReadModel("event_log", {PAYMENTS_EVENTS: PaymentEvent}, rows=each(row), write=WRITE)
