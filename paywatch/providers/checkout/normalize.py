"""Checkout.com events -> PaymentEvent fields (reference/webhooks.md §1.8, §3).

Event shape (Checkout.com's ``payment_declined`` example): ``{"id": "evt_...", "type",
"version", "created_on", "data": {"id": "pay_...", "reference", "amount", "currency",
"customer": {"id"}, "payment_type", "processed_on", "processing": {...}, "response_code",
"response_summary", "source": {"scheme", "last_4", "expiry_month", "expiry_year",
"fingerprint"}, "metadata": {...}, "retry": {"attempts_made", "next_attempt_on"}}}``.
Amounts are integer minor units. The invoice is the merchant's ``reference`` (its invoice
or order number), else the payment id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.checkout import declines
from paywatch.schemas.models import EventType, PaymentMethod

Fields = dict[str, Any]

DEFAULT_EVENTS: Mapping[str, EventType] = {
    "payment_declined": EventType.PAYMENT_FAILED,
    "payment_capture_declined": EventType.PAYMENT_FAILED,
    "payment_captured": EventType.PAYMENT_SUCCEEDED,
}
"""Event type -> canonical type [U: names from §1.8]. ``payment_captured`` (money moved)
is the recovery signal rather than ``payment_approved``, so an auto-captured payment is not
counted twice; map ``payment_approved`` instead for authorise-only integrations."""

_CURRENCY = re.compile(r"[A-Za-z]{3}")
_LAST4 = re.compile(r"[0-9]{4}")


def obj(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A nested object, or {} when absent or not an object."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string field (integers are written as text), else None."""
    value = mapping.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _int(mapping: Mapping[str, Any], key: str) -> int | None:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def timestamp(value: Any) -> datetime | None:
    """An ISO 8601 time (Checkout.com writes up to 7 fractional digits) in UTC, or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        return when.astimezone(UTC) if when.tzinfo else None
    except (ValueError, OverflowError):
        return None


def occurred_at(doc: Mapping[str, Any]) -> datetime:
    """When the payment was processed, else when the event was created."""
    when = timestamp(obj(doc, "data").get("processed_on")) or timestamp(doc.get("created_on"))
    if when is None:
        raise PayloadError("Checkout.com event has no ISO 8601 'processed_on' or 'created_on'")
    return when


def network(data: Mapping[str, Any]) -> str | None:
    """The card scheme, lower-cased ("VISA" -> "visa")."""
    scheme = (text(obj(data, "source"), "scheme") or "").strip().lower()
    return scheme or None


def _card(data: Mapping[str, Any]) -> PaymentMethod | None:
    source = obj(data, "source")
    last4 = text(source, "last_4")
    month = _int(source, "expiry_month")
    fields = {
        "brand": network(data),
        "last4": last4 if last4 and _LAST4.fullmatch(last4) else None,
        "exp_month": month if month and 1 <= month <= 12 else None,
        "exp_year": _int(source, "expiry_year"),
        "fingerprint": text(source, "fingerprint"),
    }
    return PaymentMethod(**fields) if any(v is not None for v in fields.values()) else None


def _currency(data: Mapping[str, Any]) -> str | None:
    currency = text(data, "currency")
    return currency.upper() if currency and _CURRENCY.fullmatch(currency) else None


def invoice_ref(data: Mapping[str, Any]) -> str:
    """The merchant's reference, else the payment id."""
    ref = text(data, "reference") or text(data, "id")
    if ref is None:
        raise PayloadError("Checkout.com event data has no 'reference' or payment 'id'")
    return ref


def fields(doc: Mapping[str, Any], kind: EventType, subscription_key: str) -> Fields:
    """PaymentEvent fields of one mapped event."""
    data = obj(doc, "data")
    retry = obj(data, "retry")
    failed = kind is EventType.PAYMENT_FAILED
    return {
        "type": kind,
        "invoice_ref": invoice_ref(data),
        "customer_ref": text(obj(data, "customer"), "id"),
        "subscription_ref": text(obj(data, "metadata"), subscription_key),
        "payment_ref": text(data, "id"),
        "amount_minor": _int(data, "amount"),
        "currency": _currency(data),
        "attempt": _int(retry, "attempts_made") if failed else None,
        # A retry Checkout.com itself scheduled, so the saga does not double-retry.
        "provider_retry_at": timestamp(retry.get("next_attempt_on")) if failed else None,
        "decline": declines.decline(data, network(data)) if failed else None,
        "payment_method": _card(data),
    }
