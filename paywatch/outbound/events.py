"""The events paywatch sends to tenants' webhook endpoints: types and JSON envelope.

An event is made once from the record that caused it (a saga transition, a recovery
command, an alert) and its id is derived from that record, so a redelivery, a restart or a
replay of the same record never makes a second event: the id is the Standard Webhooks
``webhook-id`` receivers deduplicate on. The envelope is a contract (README "Outbound
webhooks"): ``{"id", "type", "created_at", "tenant", "data"}``; ``data`` depends on ``type``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

EventType = Literal[
    "recovery.retry_due",
    "recovery.notification_due",
    "invoice.recovered",
    "invoice.awaiting_customer",
    "invoice.exhausted",
    "invoice.canceled",
    "recovery.escalated",
    "alert.opened",
    "alert.resolved",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "recovery.retry_due",
    "recovery.notification_due",
    "invoice.recovered",
    "invoice.awaiting_customer",
    "invoice.exhausted",
    "invoice.canceled",
    "recovery.escalated",
    "alert.opened",
    "alert.resolved",
)

_NAMESPACE = uuid.UUID("5a0c6f1e-9f5e-4c59-9a38-6f0d1b7d2c11")


def event_id(source: str) -> str:
    """The stable id of the event caused by ``source`` (e.g. ``command:<command id>``,
    ``transition:<transition id>``, ``alert:<alert id>/<status>``): ``evt_`` + 32 hex."""
    return "evt_" + uuid.uuid5(_NAMESPACE, source).hex


@dataclass(frozen=True)
class OutboundEvent:
    """One event for a tenant's endpoints (each subscribed endpoint gets one delivery)."""

    id: str
    type: EventType
    tenant: str
    created_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    def envelope(self) -> dict[str, Any]:
        """The JSON body sent (and stored in the delivery log)."""
        return {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "tenant": self.tenant,
            "data": self.data,
        }
