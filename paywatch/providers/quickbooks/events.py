"""QuickBooks Online webhook deliveries, both formats: parse, dedupe key, references (pure).

Legacy (reference/webhooks.md §3.6)::

    {"eventNotifications": [{"realmId": "...", "dataChangeEvent": {"entities": [
        {"name": "Invoice", "id": "...", "operation": "Update", "lastUpdated": "..."}]}}]}

CloudEvents (an array, told apart by being one; ``specversion`` 1.0)::

    [{"specversion": "1.0", "id": "<uuid>", "type": "qbo.invoice.updated.v1",
      "time": "...Z", "intuitentityid": "<id>", "intuitaccountid": "<realmId>", "data": {}}]

Both become ``ResourceRef``\\ s with ``event_type`` ``<Entity>.<Operation>`` in the legacy
spelling (``qbo.invoice.voided.v1`` -> ``Invoice.Void``), so a change delivered in either
format has the same dedupe key. Relevant (§1.6): Invoice Create/Update/Emailed/Void/Delete
(Delete needs no fetch: ``fetch=False``) and Payment Create/Update (fetched, then the
invoices it pays are fetched: ``follow_ups``). Payment Delete/Void are not followed: the
payment is gone, and the reopened invoice is expected to send its own Update [U].

Dedupe key of a delivery: a CloudEvents delivery of one event uses its ``id``; otherwise a
hash of the event ids (CloudEvents) or of every entity's realm, name, id, operation and
``lastUpdated`` (legacy has no ids).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from paywatch.errors import PayloadError
from paywatch.providers.thin.fields import iso_utc, load_json, obj, text
from paywatch.providers.thin.refs import Kind, ResourceRef, collapse, content_hash

PROVIDER = "quickbooks"
OPERATIONS: dict[str, frozenset[str]] = {
    "invoice": frozenset({"Create", "Update", "Emailed", "Void", "Delete"}),
    "payment": frozenset({"Create", "Update"}),
}
"""Entity (lower case) -> operations worth a fetch."""
NO_FETCH = frozenset({"Delete"})
_VERBS = {
    "created": "Create",
    "updated": "Update",
    "deleted": "Delete",
    "voided": "Void",
    "merged": "Merge",
    "emailed": "Emailed",
}
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_EPOCH_MS = re.compile(r"[0-9]{1,15}")
_END_MS = 253_402_300_800_000
"""Epoch milliseconds of 10000-01-01T00:00Z, the first instant a ``datetime`` cannot hold."""


class Change(NamedTuple):
    """One entity change as delivered, before validation."""

    position: int
    realm: Any
    entity: str
    entity_id: Any
    operation: str
    time: Any


def parse_delivery(body: bytes) -> dict[str, Any]:
    """Legacy object as is, or ``{"cloudevents": [...]}``; relevant changes are validated."""
    doc = load_json(body, "QuickBooks webhook body")
    if isinstance(doc, list):
        if not all(isinstance(event, dict) for event in doc):
            raise PayloadError("a QuickBooks CloudEvents delivery is an array of objects")
        parsed: dict[str, Any] = {"cloudevents": doc}
    elif isinstance(doc, dict):
        _check_legacy(doc)
        parsed = doc
    else:
        raise PayloadError("a QuickBooks webhook is a JSON object or array")
    references(parsed)
    return parsed


def _check_legacy(doc: Mapping[str, Any]) -> None:
    notes = doc.get("eventNotifications")
    if not isinstance(notes, list) or not all(isinstance(n, dict) for n in notes):
        raise PayloadError("QuickBooks webhook has no 'eventNotifications' list")
    for note in notes:
        entities = obj(note, "dataChangeEvent").get("entities")
        if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
            raise PayloadError("QuickBooks notification has no 'dataChangeEvent.entities' list")


def changes(doc: Mapping[str, Any]) -> Iterator[Change]:
    """Every entity change of a delivery, in delivery order (PayloadError on a bad envelope)."""
    events = doc.get("cloudevents")
    if isinstance(events, list):
        yield from _cloud_changes(events)
        return
    _check_legacy(doc)  # callers may pass a document that did not come from parse_delivery
    position = 0
    for note in doc.get("eventNotifications") or []:
        for entity in obj(note, "dataChangeEvent").get("entities") or []:
            name = str(entity.get("name", "")).lower()
            operation = str(entity.get("operation", ""))
            yield Change(
                position,
                note.get("realmId"),
                name,
                entity.get("id"),
                operation,
                entity.get("lastUpdated"),
            )
            position += 1


def _cloud_changes(events: list[Any]) -> Iterator[Change]:
    for position, event in enumerate(events):
        if not isinstance(event, dict):
            raise PayloadError("a QuickBooks CloudEvents delivery is an array of objects")
        parts = str(event.get("type", "")).split(".")
        entity, verb = (parts[1], parts[2]) if len(parts) >= 3 and parts[0] == "qbo" else ("", "")
        operation = _VERBS.get(verb.lower(), verb.capitalize())
        realm, entity_id = event.get("intuitaccountid"), event.get("intuitentityid")
        yield Change(position, realm, entity.lower(), entity_id, operation, event.get("time"))


def references(doc: Mapping[str, Any], *, collapse_repeats: bool = True) -> list[ResourceRef]:
    """What to fetch for a parsed delivery: invoice and payment changes, delivery order."""
    refs = [
        _ref(change)
        for change in changes(doc)
        if change.operation in OPERATIONS.get(change.entity, frozenset())
    ]
    return collapse(refs) if collapse_repeats else refs


def _ref(change: Change) -> ResourceRef:
    where = f"QuickBooks change {change.position}"
    if not isinstance(change.realm, str) or not ID.fullmatch(change.realm):
        raise PayloadError(f"{where} has no usable realm id")
    if not isinstance(change.entity_id, str) or not ID.fullmatch(change.entity_id):
        raise PayloadError(f"{where} has no usable entity id")
    at = event_time(change.time)
    if at is None:
        raise PayloadError(f"{where} has no readable time")
    kind: Kind = "invoice" if change.entity == "invoice" else "payment"
    return ResourceRef(
        provider=PROVIDER,
        tenant_ref=change.realm,
        kind=kind,
        resource_id=change.entity_id,
        event_type=f"{change.entity.capitalize()}.{change.operation}",
        event_time=at,
        index=change.position,
        fetch=change.operation not in NO_FETCH,
    )


def event_time(value: Any) -> datetime | None:
    """``lastUpdated`` / ``time``: ISO 8601 (any offset) or epoch milliseconds, as UTC.

    None when unreadable, including superscript digits (``str.isdigit`` accepts them, ``int``
    does not) and milliseconds past year 9999 (no ``datetime`` holds them).
    """
    if isinstance(value, str) and _EPOCH_MS.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < _END_MS:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=value)
    return iso_utc(value)


def delivery_key(doc: Mapping[str, Any]) -> str:
    """The CloudEvent id of a one-event delivery, else a content hash (see module docstring)."""
    events = doc.get("cloudevents")
    if isinstance(events, list):
        ids = [f"{e.get('id')!s:.200}" for e in events if isinstance(e, dict)]
        only = text(events[0], "id") if len(events) == 1 and isinstance(events[0], dict) else None
        if only is not None and len(only) <= 200:
            return only
        return content_hash("qbo-ce:", ids)
    parts = [
        f"{c.realm!s:.100}|{c.entity}|{c.entity_id!s:.100}|{c.operation:.40}|{c.time!s:.60}"
        for c in changes(doc)
    ]
    return content_hash("qbo:", parts)


REALM_KEYS = frozenset({"realmId", "intuitaccountid"})


def without_realm_ids(doc: Any) -> Any:
    """A copy of a decoded delivery with digit-only realm ids blanked (no recursion).

    Realm ids are 15-19 digit numbers (sandbox ones start with 4), so one in ten passes the
    Luhn check and would look like a card number to a byte-level scan.
    """
    root: list[Any] = [doc]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, doc)]
    while stack:
        parent, key, node = stack.pop()
        if isinstance(node, dict):
            copy: dict[Any, Any] = {}
            parent[key] = copy
            for k, v in node.items():
                blank = k in REALM_KEYS and isinstance(v, str) and v.isdigit()
                copy[k] = "" if blank else v
                stack.append((copy, k, copy[k]))
        elif isinstance(node, list):
            items = list(node)
            parent[key] = items
            stack.extend((items, i, v) for i, v in enumerate(items))
    return root[0]


def subject(doc: Mapping[str, Any]) -> str | None:
    """The one invoice/payment id of the delivery, else its one realm id, else None."""
    refs = references(doc)
    resources = {(r.kind, r.resource_id) for r in refs}
    if len(resources) == 1:
        return resources.pop()[1]
    realms = {r.tenant_ref for r in refs}
    return realms.pop() if len(realms) == 1 else None
