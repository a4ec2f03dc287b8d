"""The demo sample behind the banner's curl (a realistic, card-free Stripe failure)."""

from __future__ import annotations

import json
import time

_RETRY_AT = 1_750_259_200
"""``next_payment_attempt`` the demo invoice has always carried (a fixed instant)."""


def sample_failure_body(now: int | None = None) -> bytes:
    """A Stripe `invoice.payment_failed` event (basil shape) as compact JSON bytes."""
    created = int(time.time()) if now is None else now
    payment = {"type": "payment_intent", "payment_intent": "pi_3RaQ1tLkdIwHu7ix0Zq5Hx2M"}
    invoice = {
        "id": "in_demo_0001",
        "object": "invoice",
        "customer": "cus_demo_0001",
        "amount_due": 4900,
        "amount_paid": 0,
        "amount_remaining": 4900,
        "attempt_count": 1,
        "created": created,
        "currency": "usd",
        "next_payment_attempt": _RETRY_AT,
        "status": "open",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"metadata": {}, "subscription": "sub_demo_0001"},
        },
        "payments": {"object": "list", "data": [{"is_default": True, "payment": payment}]},
    }
    event = {
        "id": f"evt_demo_{created}",
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created,
        "data": {"object": invoice},
        "livemode": False,
        "type": "invoice.payment_failed",
    }
    return json.dumps(event, separators=(",", ":")).encode()
