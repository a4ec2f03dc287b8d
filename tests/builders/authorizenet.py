"""Builders of realistic Authorize.Net webhooks for tests, benchmarks and the e2e test.

Envelope and payload shapes follow reference/webhooks.md §3.4 (the official webhooks page and
``academe/authorizenet-objects`` tests): ``notificationId``, ``eventType``, ``eventDate``,
``webhookId``, ``payload`` with ``responseCode``, ``authAmount`` (a decimal number, no
currency), ``entityName``, ``id``. Signing follows §2.4. Pure: fixed defaults.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_KEY = (
    "4C6F72656D20697073756D20646F6C6F722073697420616D65742C20636F6E73"
    "656374657475722061646970697363696E6720656C69742E20446576206B6579"
)
"""A dev Signature Key in Authorize.Net's form: 128 upper-case hex characters."""
NOTIFICATION_ID = "5c3f7e1a-9b2d-4c8e-a6f0-3d1b7e9c2a54"
WEBHOOK_ID = "0e8f4d2c-6a1b-4f3e-9c7d-5b2a8e1f6c30"
EVENT_DATE = "2026-06-15T09:30:12.4470031Z"
TRANSACTION_ID = "60213874521"
INVOICE_NUMBER = "INV-2026-0615"
SUBSCRIPTION_ID = "8241937"
CUSTOMER_PROFILE_ID = "527262"

PAYMENT_AUTHCAPTURE = "net.authorize.payment.authcapture.created"
FRAUD_DECLINED = "net.authorize.payment.fraud.declined"
SUBSCRIPTION_SUSPENDED = "net.authorize.customer.subscription.suspended"


def authorizenet_event(
    event_type: str,
    payload: dict[str, Any],
    *,
    notification_id: str = NOTIFICATION_ID,
    event_date: str = EVENT_DATE,
) -> dict[str, Any]:
    """The notification envelope around ``payload``."""
    return {
        "notificationId": notification_id,
        "eventType": event_type,
        "eventDate": event_date,
        "webhookId": WEBHOOK_ID,
        "payload": payload,
    }


def authorizenet_transaction(
    *,
    response_code: int = 2,
    amount: float = 49.00,
    transaction_id: str = TRANSACTION_ID,
    invoice_number: str | None = INVOICE_NUMBER,
    reason_code: int | None = None,
    reason_text: str | None = None,
) -> dict[str, Any]:
    """A transaction payload (``responseCode`` 1 approved, 2 declined, 3 error, 4 held).

    ``reason_code``/``reason_text`` model a payload enriched from getTransactionDetails;
    Authorize.Net's own webhook does not carry them [U].
    """
    payload: dict[str, Any] = {
        "responseCode": response_code,
        "authCode": "QW4E7T" if response_code == 1 else "",
        "avsResponse": "Y",
        "authAmount": amount,
        "entityName": "transaction",
        "id": transaction_id,
    }
    if invoice_number is not None:
        payload["invoiceNumber"] = invoice_number
    if reason_code is not None:
        payload["responseReasonCode"] = reason_code
    if reason_text is not None:
        payload["responseReasonDescription"] = reason_text
    return payload


def authorizenet_subscription(
    *, subscription_id: str = SUBSCRIPTION_ID, status: str = "suspended", amount: float = 49.00
) -> dict[str, Any]:
    """An ARB subscription payload."""
    return {
        "name": "Pro monthly",
        "amount": amount,
        "status": status,
        "profile": {
            "customerProfileId": CUSTOMER_PROFILE_ID,
            "customerPaymentProfileId": "531780",
            "customerShippingAddressId": "549106",
        },
        "entityName": "subscription",
        "id": subscription_id,
    }


def authorizenet_failure(**transaction: Any) -> dict[str, Any]:
    """A declined ``authcapture.created`` (responseCode 2)."""
    return authorizenet_event(
        PAYMENT_AUTHCAPTURE, authorizenet_transaction(**{"response_code": 2, **transaction})
    )


def authorizenet_recovery(**transaction: Any) -> dict[str, Any]:
    """An approved ``authcapture.created`` for the same invoice number (a later attempt)."""
    defaults = {"response_code": 1, "transaction_id": "60213901187"}
    return authorizenet_event(
        PAYMENT_AUTHCAPTURE,
        authorizenet_transaction(**{**defaults, **transaction}),
        notification_id="a71e0c39-2f54-4b8d-9e16-c0d4f7a3b285",
        event_date="2026-06-18T14:02:51.1031877Z",
    )


def authorizenet_body(event: dict[str, Any]) -> bytes:
    """The bytes Authorize.Net would send: compact JSON."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def sign_authorizenet(
    body: bytes, signature_key: str = SIGNATURE_KEY, hex_key: bool = False
) -> str:
    """The ``X-ANET-Signature`` value: ``sha512=`` + upper-case hex HMAC-SHA512 of the body.

    ``hex_key`` keys the HMAC with the hex-decoded Signature Key instead of the string.
    """
    key = bytes.fromhex(signature_key) if hex_key else signature_key.encode("utf-8")
    return "sha512=" + hmac.new(key, body, hashlib.sha512).hexdigest().upper()


def authorizenet_headers(body: bytes, signature_key: str = SIGNATURE_KEY) -> dict[str, str]:
    """Lower-cased request headers of a signed delivery."""
    return {
        "content-type": "application/json",
        "x-anet-signature": sign_authorizenet(body, signature_key),
        "x-request-id": "c2a4e6f8-1b3d-4f5a-8c7e-9d0b2a4c6e8f",
    }
