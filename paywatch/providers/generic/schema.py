"""paywatch's generic webhook payload, v1: a small public schema any billing system can send.

Transport: Standard Webhooks (see ``signature``); the ``webhook-id`` header is the event id.
Body: one UTF-8 JSON object::

    {
      "type": "payment.failed",                 # required; see TYPES (others are ignored)
      "occurred_at": "2026-06-15T09:30:12Z",    # required; ISO 8601 with a UTC offset
      "id": "msg_2Kq...",                       # optional; best set to the webhook-id
      "invoice_ref": "INV-2026-0615",           # the invoice/order (fallbacks below)
      "customer_ref": "cus_42",                 # optional
      "subscription_ref": "sub_7",              # optional
      "payment_ref": "pay_9",                   # optional; the payment attempt
      "amount": "49.99",                        # decimal string in major units, or
      "amount_minor": 4999,                     # integer minor units (never both)
      "currency": "EUR",                        # ISO 4217; required with "amount"
      "attempt": 2,                             # optional; 1-based attempt number
      "next_retry_at": "2026-06-18T09:30:12Z",  # optional; a retry the sender will make
      "decline": {                              # optional; read for payment.failed only
        "code": "insufficient_funds",           # the sender's code
        "category": "SOFT",                     # SOFT | HARD | ACTION | FRAUD | UNKNOWN
        "message": "Insufficient funds",
        "network": "visa",                      # card network, for the network rules:
        "network_code": "51",                   #   scheme response code (Visa)
        "advice_code": "02",                    #   Mastercard merchant advice code
        "merchant_side": false                  # true: the merchant's setup is at fault
      },
      "payment_method": {"brand": "visa", "last4": "4242", "exp_month": 6, "exp_year": 2029}
    }

``type`` -> PaymentEvent type: ``payment.failed`` PAYMENT_FAILED, ``payment.succeeded``
PAYMENT_SUCCEEDED, ``payment_method.updated`` PAYMENT_METHOD_UPDATED,
``subscription.past_due`` SUBSCRIPTION_PAST_DUE, ``subscription.reactivated``
SUBSCRIPTION_REACTIVATED, ``subscription.canceled`` SUBSCRIPTION_CANCELED,
``invoice.voided`` INVOICE_VOIDED, ``invoice.overdue`` INVOICE_OVERDUE,
``invoice.uncollectible`` INVOICE_UNCOLLECTIBLE, ``card.expiring`` CARD_EXPIRING.

Without ``invoice_ref`` the event is filed under ``sub:<subscription_ref>``, else
``cus:<customer_ref>``; with none of the three it is malformed. Unknown keys are ignored
(senders may add fields); a known key with the wrong type is malformed (HTTP 400 at
ingest, dead letter in normalize). Never send card numbers: a body carrying one is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.generic import declines
from paywatch.providers.money import to_minor
from paywatch.schemas.models import Decline, DeclineCategory, EventType, PaymentMethod

TYPES: Mapping[str, EventType] = {
    "payment.failed": EventType.PAYMENT_FAILED,
    "payment.succeeded": EventType.PAYMENT_SUCCEEDED,
    "payment_method.updated": EventType.PAYMENT_METHOD_UPDATED,
    "subscription.past_due": EventType.SUBSCRIPTION_PAST_DUE,
    "subscription.reactivated": EventType.SUBSCRIPTION_REACTIVATED,
    "subscription.canceled": EventType.SUBSCRIPTION_CANCELED,
    "invoice.voided": EventType.INVOICE_VOIDED,
    "invoice.overdue": EventType.INVOICE_OVERDUE,
    "invoice.uncollectible": EventType.INVOICE_UNCOLLECTIBLE,
    "card.expiring": EventType.CARD_EXPIRING,
}
Fields = dict[str, Any]
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_LAST4 = re.compile(r"[0-9]{4}")


def text(doc: Mapping[str, Any], key: str) -> str | None:
    """An optional string field ("" and null count as absent)."""
    value = doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{key!r} must be a string")
    return value


def _int(doc: Mapping[str, Any], key: str, low: int, high: int = 2**63 - 1) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PayloadError(f"{key!r} must be an integer from {low} to {high}")
    return value


def _obj(doc: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, dict):
        raise PayloadError(f"{key!r} must be an object")
    return value


def timestamp(doc: Mapping[str, Any], key: str) -> datetime | None:
    """An optional ISO 8601 time with a UTC offset, in UTC."""
    value = text(doc, key)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
        aware = when.astimezone(UTC) if when.tzinfo else None
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"{key!r} is not an ISO 8601 time") from exc
    if aware is None:
        raise PayloadError(f"{key!r} has no UTC offset")
    return aware


def occurred_at(doc: Mapping[str, Any]) -> datetime:
    """The required ``occurred_at``."""
    when = timestamp(doc, "occurred_at")
    if when is None:
        raise PayloadError("generic event has no 'occurred_at'")
    return when


def _currency(doc: Mapping[str, Any]) -> str | None:
    currency = text(doc, "currency")
    if currency is not None and not _CURRENCY.fullmatch(currency):
        raise PayloadError("'currency' must be a three-letter ISO 4217 code")
    return currency.upper() if currency else None


def _amount(doc: Mapping[str, Any], currency: str | None) -> int | None:
    minor = _int(doc, "amount_minor", -(2**63))
    amount = doc.get("amount")
    if amount is None:
        return minor
    if minor is not None:
        raise PayloadError("give 'amount' or 'amount_minor', not both")
    if isinstance(amount, bool) or not isinstance(amount, str | int | Decimal):
        raise PayloadError("'amount' must be a decimal string")
    if currency is None:
        raise PayloadError("'amount' needs a 'currency'")
    return to_minor(amount, currency)


def _invoice_ref(doc: Mapping[str, Any]) -> str:
    invoice = text(doc, "invoice_ref")
    subscription, customer = text(doc, "subscription_ref"), text(doc, "customer_ref")
    if invoice:
        return invoice
    if subscription:
        return f"sub:{subscription}"
    if customer:
        return f"cus:{customer}"
    raise PayloadError("generic event names no invoice_ref, subscription_ref or customer_ref")


def _category(value: Any) -> DeclineCategory:
    if value is None:
        return DeclineCategory.UNKNOWN
    try:
        return DeclineCategory(value.upper() if isinstance(value, str) else value)
    except ValueError as exc:
        raise PayloadError(
            "'decline.category' must be SOFT, HARD, ACTION, FRAUD or UNKNOWN"
        ) from exc


def _decline(doc: Mapping[str, Any]) -> Decline:
    data = _obj(doc, "decline") or {}
    merchant_side = data.get("merchant_side", False)
    if not isinstance(merchant_side, bool):
        raise PayloadError("'decline.merchant_side' must be true or false")
    network = text(data, "network")
    return declines.decline(
        code=text(data, "code"),
        category=_category(data.get("category")),
        message=text(data, "message"),
        merchant_side=merchant_side,
        network=network.lower() if network else None,
        network_code=text(data, "network_code"),
        advice_code=text(data, "advice_code"),
    )


def _payment_method(doc: Mapping[str, Any]) -> PaymentMethod | None:
    data = _obj(doc, "payment_method")
    if not data:
        return None
    last4 = text(data, "last4")
    if last4 is not None and not _LAST4.fullmatch(last4):
        raise PayloadError("'payment_method.last4' must be four digits")
    return PaymentMethod(
        brand=text(data, "brand"),
        last4=last4,
        exp_month=_int(data, "exp_month", 1, 12),
        exp_year=_int(data, "exp_year", 1900, 9999),
        fingerprint=text(data, "fingerprint"),
    )


def fields(doc: Mapping[str, Any], kind: EventType) -> Fields:
    """PaymentEvent fields of one generic event of a known type."""
    currency = _currency(doc)
    failed = kind is EventType.PAYMENT_FAILED
    return {
        "type": kind,
        "invoice_ref": _invoice_ref(doc),
        "customer_ref": text(doc, "customer_ref"),
        "subscription_ref": text(doc, "subscription_ref"),
        "payment_ref": text(doc, "payment_ref"),
        "amount_minor": _amount(doc, currency),
        "currency": currency,
        "attempt": _int(doc, "attempt", 1),
        "provider_retry_at": timestamp(doc, "next_retry_at"),
        "decline": _decline(doc) if failed else None,
        "payment_method": _payment_method(doc),
    }
