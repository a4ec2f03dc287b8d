"""Builders of generic (Standard Webhooks) deliveries for tests, benchmarks and e2e.

Payloads follow paywatch's generic schema (``paywatch.providers.generic.schema``); signing
follows the Standard Webhooks spec: ``webhook-signature: v1,<base64 HMAC-SHA256>`` over
``f"{webhook_id}.{webhook_timestamp}.{body}"`` keyed with the base64-decoded part of a
``whsec_`` secret. Pure: every id and time has a fixed default (pass ``timestamp=`` the
current Unix time when a running ingest must accept the delivery).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"""A dev secret in the spec's form (``whsec_`` + base64 of 24 random bytes)."""
MSG_ID = "msg_2Kq8vZ3mTnW6xY4pR7sL1dF9"
RECOVERY_MSG_ID = "msg_2Kq9cB5nUoX7yZ5qS8tM2eG0"
TIMESTAMP = 1_781_515_812
"""2026-06-15T09:30:12Z, the failure's occurred_at."""
INVOICE_REF = "INV-2026-0615"
CUSTOMER_REF = "cus_4f2a91"
SUBSCRIPTION_REF = "sub_pro_monthly_8841"


def generic_payload(event_type: str = "payment.failed", **fields: Any) -> dict[str, Any]:
    """A generic event of ``event_type``; ``fields`` override or add schema keys."""
    payload: dict[str, Any] = {
        "type": event_type,
        "occurred_at": "2026-06-15T09:30:12Z",
        "invoice_ref": INVOICE_REF,
        "customer_ref": CUSTOMER_REF,
        "subscription_ref": SUBSCRIPTION_REF,
        "amount": "49.99",
        "currency": "EUR",
    }
    return {**payload, **fields}


def generic_failure(**fields: Any) -> dict[str, Any]:
    """A ``payment.failed`` with a soft Visa decline, the second attempt."""
    defaults: dict[str, Any] = {
        "id": MSG_ID,
        "payment_ref": "pay_7d1e02",
        "attempt": 2,
        "next_retry_at": "2026-06-18T09:30:12Z",
        "decline": {
            "code": "insufficient_funds",
            "category": "SOFT",
            "message": "Insufficient funds",
            "network": "visa",
            "network_code": "51",
        },
        "payment_method": {"brand": "visa", "last4": "4242", "exp_month": 6, "exp_year": 2029},
    }
    return generic_payload("payment.failed", **{**defaults, **fields})


def generic_recovery(**fields: Any) -> dict[str, Any]:
    """A ``payment.succeeded`` for the same invoice, three days later."""
    defaults: dict[str, Any] = {
        "id": RECOVERY_MSG_ID,
        "occurred_at": "2026-06-18T09:30:15Z",
        "payment_ref": "pay_9a3c55",
        "attempt": 3,
    }
    return generic_payload("payment.succeeded", **{**defaults, **fields})


def generic_body(payload: dict[str, Any]) -> bytes:
    """The bytes a sender would post: compact JSON."""
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def sign_generic(
    body: bytes, secret: str = SIGNING_SECRET, msg_id: str = MSG_ID, timestamp: int = TIMESTAMP
) -> str:
    """The ``webhook-signature`` entry ``v1,<base64>`` for one message."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def generic_headers(
    body: bytes, secret: str = SIGNING_SECRET, msg_id: str = MSG_ID, timestamp: int = TIMESTAMP
) -> dict[str, str]:
    """Lower-cased request headers of a signed delivery."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_generic(body, secret, msg_id, timestamp),
    }
