"""Builders of realistic Adyen Standard webhooks for tests, benchmarks and the e2e test.

Shapes follow reference/webhooks.md §3.7 and Adyen's published examples:
``{"live": "false", "notificationItems": [{"NotificationRequestItem": {...}}]}`` with
``amount.value`` in minor units and ``success`` as the string "true"/"false". Signing
follows §2.7: each item carries ``additionalData.hmacSignature``, the base64 HMAC-SHA256
(hex-decoded key) of its colon-joined signed fields. Adyen signs no header, so
``adyen_headers`` is only the content type. Card data is brand/last four/expiry only.
Pure: every id and time has a fixed default.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

HMAC_KEY = "6D2F8A41C09B3E57A1F4C8D20E6B9375F0A1C3E5D7B9F1A3C5E7092B4D6F8A1C"
"""A dev HMAC key in Adyen's form: 64 hex characters (32 bytes once decoded)."""
MERCHANT_ACCOUNT = "PaywatchDemoECOM"
PSP_REFERENCE = "QFQTPCQ8HXSKGK82"
RECOVERY_PSP_REFERENCE = "V4HZ4RBFJGXXGN82"
MERCHANT_REFERENCE = "INV-2026-0615"
SHOPPER_REFERENCE = "shopper-7f3a21"
EVENT_DATE = "2026-06-15T11:30:12+02:00"
RECOVERY_EVENT_DATE = "2026-06-18T16:02:51+02:00"
_SIGNED = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")


def adyen_item(
    *,
    event_code: str = "AUTHORISATION",
    success: bool = False,
    psp_reference: str = PSP_REFERENCE,
    original_reference: str | None = None,
    merchant_reference: str | None = MERCHANT_REFERENCE,
    value: int = 4900,
    currency: str = "EUR",
    reason: str | None = "Not enough balance",
    event_date: str = EVENT_DATE,
    payment_method: str = "visa",
    additional: dict[str, str] | None = None,
    recurring: bool = True,
) -> dict[str, Any]:
    """One ``NotificationRequestItem`` (unsigned: see ``sign_adyen``)."""
    data = {"cardSummary": "0004", "expiryDate": "03/2030", "shopperReference": SHOPPER_REFERENCE}
    if recurring:
        data.update(
            {
                "recurringProcessingModel": "Subscription",
                "shopperInteraction": "ContAuth",
                "recurring.recurringDetailReference": "M5N7TQ4TG5PFWR50",
            }
        )
    item: dict[str, Any] = {
        "additionalData": {**data, **(additional or {})},
        "amount": {"currency": currency, "value": value},
        "eventCode": event_code,
        "eventDate": event_date,
        "merchantAccountCode": MERCHANT_ACCOUNT,
        "operations": ["CANCEL", "CAPTURE", "REFUND"] if success else [],
        "paymentMethod": payment_method,
        "pspReference": psp_reference,
        "success": "true" if success else "false",
    }
    if merchant_reference is not None:
        item["merchantReference"] = merchant_reference
    if original_reference is not None:
        item["originalReference"] = original_reference
    if reason is not None:
        item["reason"] = reason
    return item


def adyen_notification(*items: dict[str, Any], live: bool = False) -> dict[str, Any]:
    """The notification envelope around ``items`` (in order)."""
    return {
        "live": "true" if live else "false",
        "notificationItems": [{"NotificationRequestItem": item} for item in items],
    }


def sign_adyen_item(item: dict[str, Any], hmac_key: str = HMAC_KEY) -> str:
    """The ``hmacSignature`` of one item (missing fields are empty strings, no escaping)."""
    amount = item.get("amount") or {}
    values = [item.get(name) for name in _SIGNED]
    values += [amount.get("value"), amount.get("currency"), item.get("eventCode")]
    values.append(item.get("success"))
    fields = ["" if value is None else str(value) for value in values]
    key = bytes.fromhex(hmac_key)
    digest = hmac.new(key, ":".join(fields).encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_adyen(notification: dict[str, Any], hmac_key: str = HMAC_KEY) -> dict[str, Any]:
    """A copy of ``notification`` with every item's ``additionalData.hmacSignature`` set."""
    signed = copy.deepcopy(notification)
    for entry in signed["notificationItems"]:
        item = entry["NotificationRequestItem"]
        item.setdefault("additionalData", {})["hmacSignature"] = sign_adyen_item(item, hmac_key)
    return signed


def adyen_failure(hmac_key: str | None = HMAC_KEY, **item: Any) -> dict[str, Any]:
    """A signed notification of a refused recurring authorisation (AUTHORISATION, false)."""
    defaults: dict[str, Any] = {
        "success": False,
        "additional": {"refusalReasonRaw": "51 : Insufficient funds", "refusalCodeRaw": "51"},
    }
    notification = adyen_notification(adyen_item(**{**defaults, **item}))
    return sign_adyen(notification, hmac_key) if hmac_key else notification


def adyen_recovery(hmac_key: str | None = HMAC_KEY, **item: Any) -> dict[str, Any]:
    """A signed notification of a later successful authorisation of the same invoice."""
    defaults: dict[str, Any] = {
        "success": True,
        "psp_reference": RECOVERY_PSP_REFERENCE,
        "reason": "074563:0004:03/2030",
        "event_date": RECOVERY_EVENT_DATE,
        "additional": {"authCode": "074563"},
    }
    notification = adyen_notification(adyen_item(**{**defaults, **item}))
    return sign_adyen(notification, hmac_key) if hmac_key else notification


def adyen_body(notification: dict[str, Any]) -> bytes:
    """The bytes Adyen would send: compact JSON."""
    return json.dumps(notification, separators=(",", ":")).encode("utf-8")


def adyen_headers(body: bytes) -> dict[str, str]:
    """Lower-cased request headers: Adyen signs inside the body, so only the content type."""
    return {"content-type": "application/json"}
