"""Adyen notification items -> PaymentEvent fields (reference/webhooks.md §1.7, §3.7).

One event per mapped item. ``amount.value`` is already in minor units [V]. The invoice is
the merchant's ``merchantReference`` (the reference it gave the payment: its invoice or
order number), else the payment's PSP reference. A modification (capture, chargeback)
carries the payment's PSP reference in ``originalReference``; that is its ``payment_ref``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from paywatch.errors import PayloadError
from paywatch.providers.adyen import declines
from paywatch.schemas.models import Decline, EventType, PaymentMethod

Fields = dict[str, Any]
Scope = Literal["all", "recurring"]

DEFAULT_EVENTS: Mapping[str, EventType] = {
    "AUTHORISATION:false": EventType.PAYMENT_FAILED,
    "AUTHORISATION:true": EventType.PAYMENT_SUCCEEDED,
    "CAPTURE_FAILED:true": EventType.PAYMENT_FAILED,
    "CHARGEBACK:true": EventType.PAYMENT_FAILED,
}
"""``"<eventCode>:<success>"`` -> event type. REFUND_FAILED is left out on purpose: a refund
the merchant could not pay out is not a payment the customer failed to make. Other codes
(NOTIFICATION_OF_CHARGEBACK, CAPTURE with success=false, ...) can be added per deployment."""

RECURRING_MODELS = frozenset({"Subscription", "CardOnFile", "UnscheduledCardOnFile"})
_EXPIRY = re.compile(r"([0-9]{1,2})/([0-9]{4})")
_LAST4 = re.compile(r"[0-9]{4}")
_CURRENCY = re.compile(r"[A-Za-z]{3}")


def _str(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def _obj(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _flag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.strip().lower() if isinstance(value, str) else ""


def event_key(item: Mapping[str, Any]) -> str:
    """``"<eventCode>:<success>"``, the key of the event map."""
    return f"{_str(item, 'eventCode') or ''}:{_flag(item.get('success'))}"


def item_id(item: Mapping[str, Any]) -> str:
    """The dedupe id of one item: pspReference, eventCode and success [U]."""
    psp = _str(item, "pspReference")
    code = _str(item, "eventCode")
    if psp is None or code is None:
        raise PayloadError("Adyen notification item has no pspReference or eventCode")
    return f"{psp}:{code}:{_flag(item.get('success'))}"


def occurred_at(item: Mapping[str, Any]) -> datetime:
    """``eventDate`` (ISO 8601 with an offset) in UTC."""
    text = _str(item, "eventDate")
    if text is None:
        raise PayloadError("Adyen notification item has no 'eventDate'")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(f"eventDate {text[:40]!r} is not ISO 8601") from exc
    if when.tzinfo is None:
        raise PayloadError("eventDate has no UTC offset")
    try:
        return when.astimezone(UTC)
    except OverflowError as exc:  # year 1 with a positive offset
        raise PayloadError("eventDate out of range") from exc


def is_recurring(item: Mapping[str, Any]) -> bool:
    """Does the item name a recurring/stored-card payment (needs additionalData enabled) [U]."""
    data = _obj(item, "additionalData")
    return (
        data.get("recurringProcessingModel") in RECURRING_MODELS
        or data.get("shopperInteraction") == "ContAuth"
        or any(key.startswith("recurring.") for key in data)
    )


def _amount(item: Mapping[str, Any]) -> tuple[int | None, str | None]:
    amount = _obj(item, "amount")
    value = amount.get("value")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    minor = value if isinstance(value, int) and not isinstance(value, bool) else None
    currency = _str(amount, "currency")
    return minor, currency.upper() if currency and _CURRENCY.fullmatch(currency) else None


def _expiry(text: str | None) -> tuple[int | None, int | None]:
    match = _EXPIRY.fullmatch(text.strip()) if text else None
    if not match or not 1 <= int(match.group(1)) <= 12:
        return None, None
    return int(match.group(1)), int(match.group(2))


def _card(item: Mapping[str, Any]) -> PaymentMethod | None:
    """Brand, last four and expiry from additionalData (or a success's ``reason``)."""
    data = _obj(item, "additionalData")
    summary, expiry = _str(data, "cardSummary"), _str(data, "expiryDate")
    reason = (_str(item, "reason") or "").split(":")
    if event_key(item) == "AUTHORISATION:true" and len(reason) == 3:
        # A successful card authorisation's reason is "authCode:last4:MM/YYYY".
        summary, expiry = summary or reason[1], expiry or reason[2]
    last4 = summary if summary and _LAST4.fullmatch(summary) else None
    month, year = _expiry(expiry)
    brand = _str(item, "paymentMethod") or _str(data, "paymentMethod")
    if not (brand or last4 or month):
        return None
    return PaymentMethod(brand=brand, last4=last4, exp_month=month, exp_year=year)


def _decline(item: Mapping[str, Any], network: str | None) -> Decline:
    code = _str(item, "eventCode")
    reason = _str(item, "reason")
    data = _obj(item, "additionalData")
    if code == "CHARGEBACK":
        return declines.chargeback(reason, data, network)
    decline = declines.refusal(reason, data, network)
    if code != "AUTHORISATION" and code:
        return decline.model_copy(update={"code": code.lower()})
    return decline


def fields(item: Mapping[str, Any], kind: EventType) -> Fields:
    """PaymentEvent fields of one mapped item."""
    psp = _str(item, "pspReference")
    original = _str(item, "originalReference")
    data = _obj(item, "additionalData")
    network = declines.network_of(_str(item, "paymentMethod") or _str(data, "paymentMethod"))
    minor, currency = _amount(item)
    modification = _str(item, "eventCode") != "AUTHORISATION"
    return {
        "type": kind,
        "invoice_ref": _str(item, "merchantReference") or original or psp,
        "customer_ref": _str(data, "shopperReference") or _str(data, "recurring.shopperReference"),
        "payment_ref": original if modification and original else psp,
        "amount_minor": minor,
        "currency": currency,
        "decline": _decline(item, network) if kind is EventType.PAYMENT_FAILED else None,
        "payment_method": _card(item),
    }
