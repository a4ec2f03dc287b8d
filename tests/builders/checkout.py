"""Builders of realistic Checkout.com webhooks for tests, benchmarks and the e2e test.

Shapes follow Checkout.com's ``payment_declined`` webhook example (reference/webhooks.md
§1.8): ``{"id": "evt_...", "type", "version", "created_on", "data": {...}}`` with integer
minor-unit amounts, ``response_code``/``response_summary``, ``processing`` (raw scheme
code, Mastercard advice code, recommendation code), ``source`` (card facts: scheme, last 4,
expiry, fingerprint, never a card number) and ``retry``. Signing follows §2.8: the
``Cko-Signature`` header is the hex HMAC-SHA256 of the raw body. Pure: fixed defaults.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_KEY = "8f3b2c1d-5e6a-4b7c-9d0e-1f2a3b4c5d6e"
"""A dev webhook signature key (Checkout.com shows a UUID-like string in the Dashboard) [U]."""
EVENT_ID = "evt_wlbf3ivtsjjuxjabg3jlju4ysa"
RECOVERY_EVENT_ID = "evt_az5sblvku4ge3dwpztvyizgcau"
PAYMENT_ID = "pay_do6kcxcq4pwehkbrupwnohnbyq"
RECOVERY_PAYMENT_ID = "pay_mbabizu24mvu3mela5njyhpit4"
CUSTOMER_ID = "cus_m3cixs4slzcelfjmdcodlgyvkq"
REFERENCE = "INV-2026-0615"
SUBSCRIPTION_ID = "sub_pro_monthly_8841"
CREATED_ON = "2026-06-15T09:30:14.3352174Z"
PROCESSED_ON = "2026-06-15T09:30:12.4752751Z"
RECOVERY_ON = "2026-06-18T14:02:51.1031877Z"

_SUMMARIES = {
    "10000": "Approved",
    "20005": "Declined - Do Not Honour",
    "20051": "Insufficient Funds",
    "20054": "Expired Card",
    "20059": "Suspected Fraud",
    "30004": "Pick Up Card (No Fraud)",
    "40101": "Risk Blocked Transaction",
}


def checkout_event(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str = EVENT_ID,
    created_on: str = CREATED_ON,
) -> dict[str, Any]:
    """The event envelope around ``data``."""
    return {
        "id": event_id,
        "type": event_type,
        "version": "1.0.29",
        "created_on": created_on,
        "data": data,
        "_links": {"self": {"href": f"https://api.sandbox.checkout.com/events/{event_id}"}},
    }


def checkout_payment(
    *,
    response_code: str = "20051",
    payment_id: str = PAYMENT_ID,
    reference: str | None = REFERENCE,
    amount: int = 4900,
    currency: str = "EUR",
    scheme: str = "VISA",
    processed_on: str = PROCESSED_ON,
    payment_type: str = "Recurring",
    processing: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A payment ``data`` object; ``processing``/``retry`` default to a realistic decline."""
    declined = not response_code.startswith("1")
    data: dict[str, Any] = {
        "id": payment_id,
        "action_id": "act_kjxqqajgnyie3l66ujvddw7gqm",
        "amount": amount,
        "auth_code": "" if declined else "710130",
        "currency": currency,
        "customer": {"id": CUSTOMER_ID, "email": "jo@example.com"},
        "metadata": {"subscription_id": SUBSCRIPTION_ID},
        "payment_type": payment_type,
        "processed_on": processed_on,
        "processing": {
            "acquirer_transaction_id": "623951711607972924924",
            "retrieval_reference_number": "053353257136",
            **(processing or {}),
        },
        "response_code": response_code,
        "response_summary": _SUMMARIES.get(response_code, "Declined"),
        "scheme_id": "399198565818571",
        "source": {
            "id": "src_d5e4jlpi3syepp7nrjo3jk734a",
            "type": "card",
            "expiry_month": 6,
            "expiry_year": 2029,
            "scheme": scheme,
            "last_4": "4242" if scheme == "VISA" else "4444",
            "fingerprint": "71580B426F1D190D29087FF265D8F48DF1AD34EDE41C27CBFF9D23C1A14D1776",
            "bin": "424242" if scheme == "VISA" else "555555",
            "card_type": "CREDIT",
            "issuer_country": "GB",
        },
    }
    if reference is not None:
        data["reference"] = reference
    if retry is not None:
        data["retry"] = retry
    return data


def checkout_failure(**payment: Any) -> dict[str, Any]:
    """A ``payment_declined`` event: insufficient funds, Checkout.com retrying in 3 days."""
    defaults: dict[str, Any] = {
        "processing": {"partner_response_code": "51", "recommendation_code": "02"},
        "retry": {
            "attempts_made": 1,
            "max_attempts": 4,
            "ends_on": "2026-06-29T09:30:12Z",
            "next_attempt_on": "2026-06-18T09:30:12Z",
        },
    }
    return checkout_event("payment_declined", checkout_payment(**{**defaults, **payment}))


def checkout_recovery(**payment: Any) -> dict[str, Any]:
    """A ``payment_captured`` event of a later payment for the same invoice reference."""
    defaults: dict[str, Any] = {
        "response_code": "10000",
        "payment_id": RECOVERY_PAYMENT_ID,
        "processed_on": RECOVERY_ON,
    }
    return checkout_event(
        "payment_captured",
        checkout_payment(**{**defaults, **payment}),
        event_id=RECOVERY_EVENT_ID,
        created_on=RECOVERY_ON,
    )


def checkout_body(event: dict[str, Any]) -> bytes:
    """The bytes Checkout.com would send: compact JSON."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def sign_checkout(body: bytes, signature_key: str = SIGNATURE_KEY) -> str:
    """The ``Cko-Signature`` value: lower-case hex HMAC-SHA256 of the raw body."""
    return hmac.new(signature_key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def checkout_headers(body: bytes, signature_key: str = SIGNATURE_KEY) -> dict[str, str]:
    """Lower-cased request headers of a signed delivery."""
    return {
        "content-type": "application/json; charset=utf-8",
        "cko-signature": sign_checkout(body, signature_key),
    }
