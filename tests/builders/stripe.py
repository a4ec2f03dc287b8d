"""Builders of realistic Stripe payloads for tests, benchmarks and the e2e test.

Shapes follow Stripe's API objects (reference/webhooks.md §3.1): ``basil=True`` builds the
``2025-03-31.basil``+ invoice (``parent.subscription_details``, ``payments``), ``basil=False``
the older one (``subscription``, ``payment_intent``, ``charge`` on the invoice, ``invoice`` on
charges and PaymentIntents). Card data is test data and only ever brand/last4/expiry/
fingerprint: never a card number. Pure: every id and time has a fixed default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

LEGACY_API_VERSION = "2024-06-20"
BASIL_API_VERSION = "2025-03-31.basil"
CREATED = 1_750_000_000
DAY = 86_400

EVENT_ID = "evt_1RaQ2xLkdIwHu7ixY3nB8cDe"
INVOICE_ID = "in_1RaQ1sLkdIwHu7ixK9pLm2Qw"
CUSTOMER_ID = "cus_SVq8dXnWkY3hTz"
SUBSCRIPTION_ID = "sub_1RaPzWLkdIwHu7ixV4bNc7Rt"
PAYMENT_INTENT_ID = "pi_3RaQ1tLkdIwHu7ix0Zq5Hx2M"
CHARGE_ID = "ch_3RaQ1tLkdIwHu7ix0Ju4Ty6P"
PAYMENT_METHOD_ID = "pm_1RaPzVLkdIwHu7ixDq2Wn8Ls"
FINGERPRINT = "Xt5EWLLDS7FJjR1c"

_FAILURE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "lost_card": "Your card has been declined.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}


def stripe_event(
    type: str,
    obj: dict[str, Any],
    *,
    event_id: str = EVENT_ID,
    created: int = CREATED,
    api_version: str = BASIL_API_VERSION,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Stripe event envelope around ``obj`` (``data.previous_attributes`` on updates)."""
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


def stripe_body(event: dict[str, Any]) -> bytes:
    """The bytes Stripe would send: pretty-printed JSON, as its deliveries are."""
    return json.dumps(event, indent=2).encode("utf-8")


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` value for ``body`` signed with ``secret`` at ``timestamp``."""
    signature = hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256)
    return f"t={timestamp},v1={signature.hexdigest()}"


def stripe_invoice(
    *,
    basil: bool,
    invoice_id: str = INVOICE_ID,
    customer: str = CUSTOMER_ID,
    subscription: str | None = SUBSCRIPTION_ID,
    payment_intent: str | dict[str, Any] | None = PAYMENT_INTENT_ID,
    charge: str | dict[str, Any] | None = CHARGE_ID,
    amount_due: int = 4900,
    paid: bool = False,
    currency: str = "usd",
    attempt_count: int = 1,
    next_payment_attempt: int | None = CREATED + 3 * DAY,
    status: str | None = None,
    with_payments: bool = True,
    created: int = CREATED,
) -> dict[str, Any]:
    """An invoice in either API shape. ``with_payments=False`` omits the includable list."""
    amount_paid = amount_due if paid else 0
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Acme Analytics",
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_remaining": amount_due - amount_paid,
        "amount_shipping": 0,
        "attempt_count": attempt_count,
        "attempted": True,
        "auto_advance": not paid,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "customer_email": "billing@example.com",
        "customer_name": "Jenny Rosen",
        "due_date": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_1Nv0FG/{invoice_id}",
        "last_finalization_error": None,
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else next_payment_attempt,
        "number": "ACME-0042",
        "period_end": created,
        "period_start": created - 30 * DAY,
        "status": status or ("paid" if paid else "open"),
        "subtotal": amount_due,
        "total": amount_due,
        "lines": _invoice_lines(invoice_id, amount_due, currency, created),
    }
    if basil:
        invoice["parent"] = _invoice_parent(subscription)
        if with_payments:
            invoice["payments"] = _invoice_payments(
                invoice_id, payment_intent, amount_due, amount_paid, currency, created
            )
    else:
        invoice.update(
            {
                "subscription": subscription,
                "payment_intent": payment_intent,
                "charge": charge,
                "paid": paid,
                "paid_out_of_band": False,
                "subscription_details": {"metadata": {}},
            }
        )
    return invoice


def stripe_charge_failed(
    *,
    basil: bool = True,
    charge_id: str = CHARGE_ID,
    payment_intent: str | None = PAYMENT_INTENT_ID,
    customer: str = CUSTOMER_ID,
    invoice: str | None = None,
    amount: int = 4900,
    currency: str = "usd",
    failure_code: str = "card_declined",
    reason: str | None = "insufficient_funds",
    outcome_type: str = "issuer_declined",
    advice_code: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    brand: str = "visa",
    last4: str = "4242",
    created: int = CREATED,
) -> dict[str, Any]:
    """A failed Charge with its ``outcome`` (``invoice`` only in the pre-basil shape)."""
    blocked = outcome_type == "blocked"
    charge: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": 0,
        "amount_refunded": 0,
        "balance_transaction": None,
        "billing_details": _billing_details(),
        "captured": False,
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": "Subscription update",
        "failure_code": failure_code,
        "failure_message": _FAILURE_MESSAGES.get(reason or failure_code, "Your card was declined."),
        "livemode": False,
        "metadata": {},
        "outcome": {
            "advice_code": advice_code,
            "network_advice_code": network_advice_code,
            "network_decline_code": network_decline_code,
            "network_status": "not_sent_to_network" if blocked else "declined_by_network",
            "reason": reason,
            "risk_level": "highest" if blocked else "normal",
            "risk_score": 91 if blocked else 32,
            "seller_message": "Stripe blocked this payment."
            if blocked
            else f"The bank returned the decline code `{reason}`.",
            "type": outcome_type,
        },
        "paid": False,
        "payment_intent": payment_intent,
        "payment_method": PAYMENT_METHOD_ID,
        "payment_method_details": {"type": "card", "card": _charge_card(brand, last4)},
        "refunded": False,
        "status": "failed",
    }
    if not basil:
        charge["invoice"] = invoice
    return charge


def stripe_payment_intent_failed(
    *,
    basil: bool = True,
    intent_id: str = PAYMENT_INTENT_ID,
    customer: str = CUSTOMER_ID,
    invoice: str | None = None,
    amount: int = 4900,
    currency: str = "usd",
    code: str = "card_declined",
    decline_code: str | None = "insufficient_funds",
    advice_code: str | None = None,
    network_advice_code: str | None = None,
    network_decline_code: str | None = None,
    brand: str = "visa",
    last4: str = "4242",
    created: int = CREATED,
) -> dict[str, Any]:
    """A PaymentIntent whose ``last_payment_error`` explains the failure."""
    intent: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_received": 0,
        "capture_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": customer,
        "description": "Subscription update",
        "last_payment_error": {
            "advice_code": advice_code,
            "charge": CHARGE_ID,
            "code": code,
            "decline_code": decline_code,
            "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
            "message": _FAILURE_MESSAGES.get(decline_code or code, "Your card was declined."),
            "network_advice_code": network_advice_code,
            "network_decline_code": network_decline_code,
            "payment_method": _payment_method(brand, last4, customer, created),
            "type": "card_error",
        },
        "latest_charge": CHARGE_ID,
        "livemode": False,
        "metadata": {},
        "payment_method": None,
        "payment_method_types": ["card"],
        "status": "requires_payment_method",
    }
    if not basil:
        intent["invoice"] = invoice
    return intent


def stripe_subscription(
    *,
    basil: bool = True,
    sub_id: str = SUBSCRIPTION_ID,
    customer: str = CUSTOMER_ID,
    status: str = "past_due",
    latest_invoice: str | None = INVOICE_ID,
    currency: str = "usd",
    created: int = CREATED - 90 * DAY,
) -> dict[str, Any]:
    """A Subscription (billing periods on the items from basil on, on the root before)."""
    period = {"current_period_start": CREATED - 30 * DAY, "current_period_end": CREATED}
    item: dict[str, Any] = {
        "id": "si_SVq8LkdIwHu7ix",
        "object": "subscription_item",
        "quantity": 1,
        "price": {
            "id": "price_1RaPxKLkdIwHu7ixPro",
            "object": "price",
            "currency": currency,
            "unit_amount": 4900,
            "recurring": {"interval": "month", "interval_count": 1},
        },
    }
    sub: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "billing_cycle_anchor": created,
        "cancel_at_period_end": False,
        "canceled_at": CREATED if status == "canceled" else None,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "default_payment_method": PAYMENT_METHOD_ID,
        "ended_at": CREATED if status == "canceled" else None,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": False,
        "metadata": {},
        "status": status,
    }
    (item if basil else sub).update(period)
    return sub


def _invoice_lines(invoice_id: str, amount: int, currency: str, created: int) -> dict[str, Any]:
    line = {
        "id": "il_1RaQ1sLkdIwHu7ixLn3Xk",
        "object": "line_item",
        "amount": amount,
        "currency": currency,
        "description": "1 \u00d7 Pro plan (monthly)",
        "period": {"start": created - 30 * DAY, "end": created},
        "quantity": 1,
    }
    return {
        "object": "list",
        "data": [line],
        "has_more": False,
        "total_count": 1,
        "url": f"/v1/invoices/{invoice_id}/lines",
    }


def _invoice_parent(subscription: str | None) -> dict[str, Any] | None:
    if subscription is None:
        return None
    return {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": subscription},
    }


def _invoice_payments(
    invoice_id: str,
    payment_intent: str | dict[str, Any] | None,
    amount_due: int,
    amount_paid: int,
    currency: str,
    created: int,
) -> dict[str, Any]:
    entries = (
        []
        if payment_intent is None
        else [
            {
                "id": "inpay_1RaQ1tLkdIwHu7ixWq8",
                "object": "invoice_payment",
                "amount_paid": amount_paid or None,
                "amount_requested": amount_due,
                "created": created,
                "currency": currency,
                "invoice": invoice_id,
                "is_default": True,
                "livemode": False,
                "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                "status": "paid" if amount_paid else "open",
                "status_transitions": {
                    "canceled_at": None,
                    "paid_at": created if amount_paid else None,
                },
            }
        ]
    )
    return {
        "object": "list",
        "data": entries,
        "has_more": False,
        "total_count": len(entries),
        "url": f"/v1/invoice_payments?invoice={invoice_id}",
    }


def _billing_details() -> dict[str, Any]:
    return {
        "address": {
            "city": None,
            "country": "US",
            "line1": None,
            "line2": None,
            "postal_code": "94107",
            "state": None,
        },
        "email": "billing@example.com",
        "name": "Jenny Rosen",
        "phone": None,
    }


def _charge_card(brand: str, last4: str) -> dict[str, Any]:
    return {
        "amount_authorized": None,
        "brand": brand,
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": "pass",
            "cvc_check": None,
        },
        "country": "US",
        "exp_month": 12,
        "exp_year": 2030,
        "fingerprint": FINGERPRINT,
        "funding": "credit",
        "last4": last4,
        "network": brand,
        "three_d_secure": None,
        "wallet": None,
    }


def _payment_method(brand: str, last4: str, customer: str, created: int) -> dict[str, Any]:
    return {
        "id": PAYMENT_METHOD_ID,
        "object": "payment_method",
        "billing_details": _billing_details(),
        "card": {
            "brand": brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": "pass",
                "cvc_check": None,
            },
            "country": "US",
            "display_brand": brand,
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": FINGERPRINT,
            "funding": "credit",
            "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": created - 90 * DAY,
        "customer": customer,
        "livemode": False,
        "type": "card",
    }
