"""Read model `failures`: one row per failed-attempt event."""

from __future__ import annotations

from typing import Any

from paywatch.projections.base import ReadModel, each
from paywatch.projections.merge import CopyMerge
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import DeclineCategory, EventType, PaymentEvent
from paywatch.schemas.topics import PAYMENTS_EVENTS

WRITE = CopyMerge(
    "failures",
    tuple(
        "event_id tenant invoice_ref provider customer_ref payment_ref occurred_at"
        " amount_minor currency attempt decline_code decline_category decline_network"
        " network_code advice_code decline_message card_brand card_last4"
        " topic partition offset".split()
    ),
    key=("event_id",),
)
"""A known event id is left alone (a redelivery changes nothing)."""


FAILURE_ROW_TYPES = frozenset({EventType.PAYMENT_FAILED, EventType.INVOICE_OVERDUE})
"""One failures row per failed attempt; for ledgers, per invoice gone overdue."""


def row(event: PaymentEvent, at: Coords) -> tuple[Any, ...] | None:
    """The failures row of a failed collection (PAYMENT_FAILED, INVOICE_OVERDUE), else None."""
    if event.type not in FAILURE_ROW_TYPES:
        return None
    d = event.decline
    pm = event.payment_method
    return (
        event.event_id,
        event.tenant,
        event.invoice_ref,
        event.provider,
        event.customer_ref,
        event.payment_ref,
        event.occurred_at,
        event.amount_minor,
        event.currency,
        event.attempt,
        d.code if d else None,
        (d.category if d else DeclineCategory.UNKNOWN).value,
        d.network if d else None,
        d.network_code if d else None,
        d.advice_code if d else None,
        d.message if d else None,
        pm.brand if pm else None,
        pm.last4 if pm else None,
        at.topic,
        at.partition,
        at.offset,
    )


READ_MODEL = ReadModel("failures", {PAYMENTS_EVENTS: PaymentEvent}, rows=each(row), write=WRITE)
