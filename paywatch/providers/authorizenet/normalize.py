"""Authorize.Net notification -> PaymentEvent fields (reference/webhooks.md §1.4, §3.4).

Payment events (``net.authorize.payment.*``, ``payload.entityName == "transaction"``):

* ``authcapture.created``, ``capture.created``, ``priorAuthCapture.created``: responseCode 1
  is PAYMENT_SUCCEEDED, 2 (declined) and 3 (error) PAYMENT_FAILED, 4 (held for review)
  nothing yet: the review ends in ``fraud.approved`` / ``fraud.declined``;
* ``authorization.created``: 2 or 3 is PAYMENT_FAILED (an approved auth-only is no payment);
* ``fraud.declined``: PAYMENT_FAILED, FRAUD; ``fraud.approved``: PAYMENT_SUCCEEDED;
* ``refund.created``, ``void.created``, ``fraud.held``: nothing.

Subscription events (ARB): ``suspended`` is SUBSCRIPTION_PAST_DUE (a charge failed; ARB
stops charging until fixed), ``terminated`` and ``cancelled`` SUBSCRIPTION_CANCELED; they are
tracked under ``"sub:<subscription id>"``. Payments are tracked under ``invoiceNumber``, else
``merchantReferenceId``, else the transaction id: the webhook does not link an ARB charge to
its subscription [U]. Amounts are decimal numbers without currency: the provider's
configured default currency applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.authorizenet.declines import decline
from paywatch.providers.money import to_minor
from paywatch.schemas.models import EventType

Fields = dict[str, Any]

_PAYMENT = "net.authorize.payment."
_SUBSCRIPTION = "net.authorize.customer.subscription."
_BY_RESPONSE: dict[str, dict[int, EventType]] = {
    "authcapture.created": {1: EventType.PAYMENT_SUCCEEDED},
    "capture.created": {1: EventType.PAYMENT_SUCCEEDED},
    "priorAuthCapture.created": {1: EventType.PAYMENT_SUCCEEDED},
    "authorization.created": {},
}
_FAILED_CODES = (2, 3)
_FRAUD: dict[str, EventType] = {
    "fraud.declined": EventType.PAYMENT_FAILED,
    "fraud.approved": EventType.PAYMENT_SUCCEEDED,
}
_SUBSCRIPTIONS: dict[str, EventType] = {
    "suspended": EventType.SUBSCRIPTION_PAST_DUE,
    "terminated": EventType.SUBSCRIPTION_CANCELED,
    "cancelled": EventType.SUBSCRIPTION_CANCELED,
}


def obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object ({} when absent or not an object)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def ident(mapping: Mapping[str, Any], key: str) -> str | None:
    """An id sent as a string or an integer, as a string."""
    value = mapping.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def event_date(doc: Mapping[str, Any]) -> datetime:
    """``eventDate`` (e.g. ``2017-03-29T20:48:02.0080095Z``) as an aware UTC datetime."""
    value = doc.get("eventDate")
    if not isinstance(value, str) or not value:
        raise PayloadError("Authorize.Net notification has no eventDate")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise PayloadError("Authorize.Net eventDate is not ISO 8601") from exc


def subject(doc: Mapping[str, Any]) -> str | None:
    """The ref events of this notification are tracked under, when it names one."""
    evt_type = doc.get("eventType")
    payload = obj(doc, "payload")
    if isinstance(evt_type, str) and evt_type.startswith(_SUBSCRIPTION):
        sub_id = ident(payload, "id")
        return f"sub:{sub_id}" if sub_id else None
    return _payment_ref(payload)


def fields(doc: Mapping[str, Any], currency: str) -> Fields | None:
    """PaymentEvent fields of a handled event type, None for others."""
    evt_type = doc["eventType"]
    payload = obj(doc, "payload")
    if evt_type.startswith(_PAYMENT):
        return _payment(evt_type.removeprefix(_PAYMENT), payload, currency)
    if evt_type.startswith(_SUBSCRIPTION):
        return _subscription(evt_type.removeprefix(_SUBSCRIPTION), payload, currency)
    return None


def _payment_ref(payload: Mapping[str, Any]) -> str | None:
    return (
        ident(payload, "invoiceNumber")
        or ident(payload, "merchantReferenceId")
        or ident(payload, "id")
    )


def _response_code(payload: Mapping[str, Any]) -> int | None:
    value = payload.get("responseCode")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 4:
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _payment_type(action: str, payload: Mapping[str, Any]) -> EventType | None:
    if action in _FRAUD:
        return _FRAUD[action]
    if action not in _BY_RESPONSE:
        return None
    code = _response_code(payload)
    if code is None:
        raise PayloadError(f"Authorize.Net {action} has no integer payload.responseCode")
    if code in _FAILED_CODES:
        return EventType.PAYMENT_FAILED
    return _BY_RESPONSE[action].get(code)


def _amount(payload: Mapping[str, Any], key: str, currency: str) -> int | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        return None
    return to_minor(value, currency)


def _payment(action: str, payload: Mapping[str, Any], currency: str) -> Fields | None:
    kind = _payment_type(action, payload)
    if kind is None:
        return None
    trans_id = ident(payload, "id")
    if trans_id is None:
        raise PayloadError("Authorize.Net payment event has no payload.id")
    failed = kind is EventType.PAYMENT_FAILED
    reason = ident(payload, "responseReasonCode")
    text = payload.get("responseReasonDescription")
    return {
        "type": kind,
        "invoice_ref": _payment_ref(payload) or trans_id,
        "customer_ref": ident(obj(payload, "profile"), "customerProfileId"),
        "payment_ref": trans_id,
        "amount_minor": _amount(payload, "authAmount", currency),
        "currency": currency,
        "decline": (
            decline(
                reason,
                _response_code(payload),
                text if isinstance(text, str) and text else None,
                fraud_event=action == "fraud.declined",
            )
            if failed
            else None
        ),
    }


def _subscription(action: str, payload: Mapping[str, Any], currency: str) -> Fields | None:
    kind = _SUBSCRIPTIONS.get(action)
    if kind is None:
        return None
    sub_id = ident(payload, "id")
    if sub_id is None:
        raise PayloadError("Authorize.Net subscription event has no payload.id")
    return {
        "type": kind,
        "invoice_ref": f"sub:{sub_id}",
        "customer_ref": ident(obj(payload, "profile"), "customerProfileId"),
        "subscription_ref": sub_id,
        "amount_minor": _amount(payload, "amount", currency),
        "currency": currency,
    }
