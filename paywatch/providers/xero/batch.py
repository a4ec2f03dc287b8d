"""Xero webhook batches: parse, intent-to-receive, dedupe key, subject, references (pure).

Batch (reference/webhooks.md §3.5, ``XeroAPI/Xero-OpenAPI`` ``xero-webhooks.yaml``)::

    {"events": [{"resourceUrl", "resourceId", "eventDateUtc", "eventType", "eventCategory",
                 "tenantId", "tenantType"}],
     "firstEventSequence", "lastEventSequence", "entropy"}

``eventDateUtc`` carries no offset (``2024-06-21T01:15:39.902``): it is UTC. Only
``INVOICE`` events (CREATE/UPDATE) name something to fetch; CONTACT, SUBSCRIPTION and
CREDITNOTE events are ignored (a credit note allocated to an invoice changes the invoice,
which is expected to raise its own UPDATE [U]). An empty ``events`` list is Xero's
intent-to-receive handshake. Xero has no event ids: a delivery's dedupe key hashes every
event's ``(tenantId, eventCategory, resourceId, eventType, eventDateUtc)`` (§4), and an
intent-to-receive batch hashes its sequence numbers and entropy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.thin.fields import iso_utc, load_json, text
from paywatch.providers.thin.refs import Kind, ResourceRef, collapse, content_hash

PROVIDER = "xero"
CATEGORY_KINDS: dict[str, Kind] = {"INVOICE": "invoice"}
"""Event categories worth a fetch, and the kind of resource they name."""
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""Ids that may go into a URL path segment or a header (Xero's are UUIDs)."""
_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z_]{0,31}")


def parse_batch(body: bytes) -> dict[str, Any]:
    """A Xero batch: an object with an ``events`` list whose invoice events are well formed."""
    doc = load_json(body, "Xero webhook body")
    if not isinstance(doc, dict):
        raise PayloadError("a Xero webhook is a JSON object")
    events = doc.get("events")
    if not isinstance(events, list):
        raise PayloadError("Xero webhook has no 'events' list")
    for position, event in enumerate(events):
        if not isinstance(event, dict):
            raise PayloadError(f"Xero event {position} is not an object")
        if _relevant(event):
            _ref(event, position)
    return doc


def is_intent_to_receive(doc: Mapping[str, Any]) -> bool:
    """True for Xero's intent-to-receive handshake: a batch without events."""
    return doc.get("events") == []


def delivery_key(doc: Mapping[str, Any]) -> str:
    """Content hash of the batch (Xero sends no event ids)."""
    events = doc.get("events")
    if not isinstance(events, list) or not events:
        parts = [f"{k}={doc.get(k)!s:.200}" for k in ("firstEventSequence", "entropy")]
        return content_hash("xero-itr:", parts)
    return content_hash("xero:", [_event_key(e) for e in events])


def _event_key(event: Any) -> str:
    if not isinstance(event, dict):
        return repr(event)[:500]
    fields = ("tenantId", "eventCategory", "resourceId", "eventType", "eventDateUtc")
    return "|".join(f"{event.get(name)!s:.200}" for name in fields)


def subject(doc: Mapping[str, Any]) -> str | None:
    """The invoice id when the batch names exactly one, else the one organisation, else None."""
    refs = references(doc)
    invoices = {r.resource_id for r in refs}
    if len(invoices) == 1:
        return invoices.pop()
    tenants = {r.tenant_ref for r in refs}
    return tenants.pop() if len(tenants) == 1 else None


def references(doc: Mapping[str, Any], *, collapse_repeats: bool = True) -> list[ResourceRef]:
    """What to fetch for a parsed batch: one ref per invoice event, delivery order."""
    events = doc.get("events")
    if not isinstance(events, list):
        raise PayloadError("Xero webhook has no 'events' list")
    refs = [
        _ref(event, position)
        for position, event in enumerate(events)
        if isinstance(event, dict) and _relevant(event)
    ]
    return collapse(refs) if collapse_repeats else refs


def _relevant(event: Mapping[str, Any]) -> bool:
    category = event.get("eventCategory")
    return isinstance(category, str) and category in CATEGORY_KINDS


def _ref(event: Mapping[str, Any], position: int) -> ResourceRef:
    category = event["eventCategory"]
    tenant_id, resource_id = text(event, "tenantId"), text(event, "resourceId")
    if tenant_id is None or not ID.fullmatch(tenant_id):
        raise PayloadError(f"Xero event {position} has no usable tenantId")
    if resource_id is None or not ID.fullmatch(resource_id):
        raise PayloadError(f"Xero event {position} has no usable resourceId")
    event_type = text(event, "eventType")
    if event_type is None or not _EVENT_TYPE.fullmatch(event_type):
        raise PayloadError(f"Xero event {position} has no usable eventType")
    at = iso_utc(event.get("eventDateUtc"))
    if at is None:
        raise PayloadError(f"Xero event {position} has no ISO 8601 eventDateUtc")
    return ResourceRef(
        provider=PROVIDER,
        tenant_ref=tenant_id,
        kind=CATEGORY_KINDS[category],
        resource_id=resource_id.lower(),
        event_type=f"{category}.{event_type.upper()}",
        event_time=at,
        index=position,
    )
