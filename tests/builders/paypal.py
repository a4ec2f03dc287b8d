"""Builders of realistic PayPal webhooks for tests, benchmarks and the e2e test.

Shapes follow PayPal's REST objects (reference/webhooks.md §3.2): the event envelope
(``id``, ``event_type``, ``create_time``, ``resource_type``, ``resource``), a v1 subscription
with ``billing_info``, a v1 sale and a v2 capture. Ids and times have fixed defaults.

Signing (a throw-away PKI, ``sign_paypal`` for the five ``paypal-*`` headers, and
``mock_paypal``, a fake PayPal for ``httpx.MockTransport``) lives in
``tests.builders.paypal_pki`` and is re-exported here.
"""

from __future__ import annotations

import json
from typing import Any

from tests.builders.paypal_pki import (
    CERT_URL,
    SANDBOX_CN,
    TRANSMISSION_ID,
    SamplePki,
    make_test_pki,
    mock_paypal,
    sign_paypal,
)

__all__ = [
    "CAPTURE_ID",
    "CERT_URL",
    "CREATE_TIME",
    "EVENT_ID",
    "ORDER_ID",
    "PAYER_ID",
    "PLAN_ID",
    "SALE_ID",
    "SANDBOX_CN",
    "SUBSCRIPTION_ID",
    "TRANSMISSION_ID",
    "WEBHOOK_ID",
    "SamplePki",
    "make_test_pki",
    "mock_paypal",
    "paypal_body",
    "paypal_capture",
    "paypal_event",
    "paypal_payment_failed",
    "paypal_sale",
    "paypal_sale_completed",
    "paypal_subscription",
    "sign_paypal",
]

CREATE_TIME = "2025-06-15T15:06:40Z"  # 1_750_000_000, the Stripe samples' CREATED
EVENT_ID = "WH-2WR32451HC0233532-67976317FL4543714"
SUBSCRIPTION_ID = "I-BW452GLLEP1G"
# Not the spec's example plan id P-5ML4271244454362WXNWU5NQ: its 13-digit run is Luhn-valid,
# so the ingest's card-number check (pan.py) would reject the body with 422.
PLAN_ID = "P-2UF78835G6983425GLSM44MA"
PAYER_ID = "2J6QB8YJQSJRJ"
SALE_ID = "80F85758S3080410K"
CAPTURE_ID = "7NW873794T343360M"
ORDER_ID = "5O190127TN364715T"
WEBHOOK_ID = "8PT597110X687430LKGECATA"


def paypal_event(
    event_type: str,
    resource: dict[str, Any],
    *,
    resource_type: str,
    event_id: str = EVENT_ID,
    create_time: str = CREATE_TIME,
    summary: str | None = None,
) -> dict[str, Any]:
    """A PayPal webhook event envelope around ``resource``."""
    return {
        "id": event_id,
        "event_version": "1.0",
        "create_time": create_time,
        "resource_type": resource_type,
        "resource_version": "2.0",
        "event_type": event_type,
        "summary": summary or event_type.replace(".", " ").lower(),
        "resource": resource,
        "links": [
            {
                "href": f"https://api.paypal.com/v1/notifications/webhooks-events/{event_id}",
                "rel": "self",
                "method": "GET",
            },
            {
                "href": f"https://api.paypal.com/v1/notifications/webhooks-events/{event_id}/resend",
                "rel": "resend",
                "method": "POST",
            },
        ],
    }


def paypal_body(event: dict[str, Any]) -> bytes:
    """The bytes PayPal would send: compact JSON."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def paypal_subscription(
    *,
    sub_id: str = SUBSCRIPTION_ID,
    status: str = "ACTIVE",
    payer_id: str = PAYER_ID,
    failed_payments_count: int = 0,
    reason_code: str | None = None,
    amount: str = "49.99",
    currency: str = "USD",
    failed_at: str = CREATE_TIME,
    next_retry: str | None = "2025-06-20T15:06:40Z",
) -> dict[str, Any]:
    """A v1 subscription; with ``reason_code`` it carries ``last_failed_payment``."""
    money = {"currency_code": currency, "value": amount}
    billing: dict[str, Any] = {
        "outstanding_balance": money if failed_payments_count else {**money, "value": "0.00"},
        "cycle_executions": [
            {
                "tenure_type": "REGULAR",
                "sequence": 1,
                "cycles_completed": 4,
                "cycles_remaining": 0,
                "current_pricing_scheme_version": 1,
                "total_cycles": 0,
            }
        ],
        "last_payment": {"amount": money, "time": "2025-05-15T15:06:40Z"},
        "next_billing_time": "2025-07-15T10:00:00Z",
        "failed_payments_count": failed_payments_count,
    }
    if reason_code is not None:
        billing["last_failed_payment"] = {
            "amount": money,
            "time": failed_at,
            "reason_code": reason_code,
            **({"next_payment_retry_time": next_retry} if next_retry else {}),
        }
    return {
        "id": sub_id,
        "plan_id": PLAN_ID,
        "status": status,
        "status_update_time": CREATE_TIME,
        "start_time": "2025-02-15T10:00:00Z",
        "quantity": "1",
        "shipping_amount": {"currency_code": currency, "value": "0.00"},
        "subscriber": {
            "name": {"given_name": "John", "surname": "Doe"},
            "email_address": "customer@example.com",
            "payer_id": payer_id,
        },
        "billing_info": billing,
        "create_time": "2025-02-15T09:58:12Z",
        "update_time": CREATE_TIME,
        "plan_overridden": False,
        "links": [
            {
                "href": f"https://api.paypal.com/v1/billing/subscriptions/{sub_id}",
                "rel": "self",
                "method": "GET",
            }
        ],
    }


def paypal_sale(
    *,
    sale_id: str = SALE_ID,
    state: str = "completed",
    billing_agreement_id: str | None = SUBSCRIPTION_ID,
    total: str = "49.99",
    currency: str = "USD",
    reason_code: str | None = None,
) -> dict[str, Any]:
    """A v1 sale (``billing_agreement_id`` names the subscription it paid)."""
    sale: dict[str, Any] = {
        "id": sale_id,
        "state": state,
        "amount": {"total": total, "currency": currency, "details": {"subtotal": total}},
        "payment_mode": "INSTANT_TRANSFER",
        "protection_eligibility": "ELIGIBLE",
        "transaction_fee": {"value": "1.75", "currency": currency},
        "create_time": CREATE_TIME,
        "update_time": CREATE_TIME,
        "links": [],
    }
    if billing_agreement_id is not None:
        sale["billing_agreement_id"] = billing_agreement_id
    if reason_code is not None:
        sale["reason_code"] = reason_code
    return sale


def paypal_capture(
    *,
    capture_id: str = CAPTURE_ID,
    status: str = "DECLINED",
    value: str = "100.00",
    currency: str = "USD",
    invoice_id: str | None = "INV-2025-0042",
    order_id: str | None = ORDER_ID,
    response_code: str | None = "5120",
    advice_code: str | None = None,
    status_reason: str | None = None,
) -> dict[str, Any]:
    """A v2 capture; a card decline carries ``processor_response``."""
    capture: dict[str, Any] = {
        "id": capture_id,
        "status": status,
        "amount": {"currency_code": currency, "value": value},
        "final_capture": True,
        "seller_protection": {"status": "NOT_ELIGIBLE"},
        "create_time": CREATE_TIME,
        "update_time": CREATE_TIME,
        "links": [],
    }
    if invoice_id is not None:
        capture["invoice_id"] = invoice_id
    if order_id is not None:
        capture["supplementary_data"] = {"related_ids": {"order_id": order_id}}
    processor = {"response_code": response_code, "payment_advice_code": advice_code}
    if any(processor.values()):
        capture["processor_response"] = {k: v for k, v in processor.items() if v}
    if status_reason is not None:
        capture["status_details"] = {"reason": status_reason}
    return capture


def paypal_payment_failed(
    *, reason_code: str = "PAYMENT_DENIED", failed_payments_count: int = 1, **kwargs: Any
) -> dict[str, Any]:
    """Failure builder: ``BILLING.SUBSCRIPTION.PAYMENT.FAILED`` for the sample subscription."""
    sub = paypal_subscription(
        reason_code=reason_code, failed_payments_count=failed_payments_count, **kwargs
    )
    return paypal_event("BILLING.SUBSCRIPTION.PAYMENT.FAILED", sub, resource_type="subscription")


def paypal_sale_completed(*, event_id: str = EVENT_ID + "R", **kwargs: Any) -> dict[str, Any]:
    """Recovery builder: ``PAYMENT.SALE.COMPLETED`` paying the sample subscription."""
    return paypal_event(
        "PAYMENT.SALE.COMPLETED", paypal_sale(**kwargs), resource_type="sale", event_id=event_id
    )
