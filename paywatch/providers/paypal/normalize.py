"""PayPal event (parsed JSON) -> PaymentEvent fields (reference/webhooks.md §1.2, §3.2).

Mapping:

* ``BILLING.SUBSCRIPTION.PAYMENT.FAILED``, ``PAYMENT.SALE.DENIED``,
  ``PAYMENT.CAPTURE.DENIED`` / ``.DECLINED`` -> PAYMENT_FAILED;
* ``PAYMENT.SALE.COMPLETED``, ``PAYMENT.CAPTURE.COMPLETED`` -> PAYMENT_SUCCEEDED (emitted for
  every sale/capture: one for an invoice that never failed creates no read-model row);
* ``BILLING.SUBSCRIPTION.SUSPENDED`` -> SUBSCRIPTION_PAST_DUE, only when the subscription
  shows failed payments: PayPal suspends when ``failed_payments_count`` reaches the plan's
  ``payment_failure_threshold`` (§1.2), i.e. it stopped retrying, like Stripe's ``unpaid``.
  A suspension without failed payments is the merchant's own action and gives [];
* ``BILLING.SUBSCRIPTION.CANCELLED`` -> SUBSCRIPTION_CANCELED;
* ``BILLING.SUBSCRIPTION.ACTIVATED`` / ``RE-ACTIVATED`` -> SUBSCRIPTION_REACTIVATED. PayPal
  does not say whether an activation follows a suspension; the first activation of a
  subscription that never failed creates no read-model row either.

``invoice_ref`` (documented choice): PayPal has no invoice per billing cycle, and the
recovery signal ``PAYMENT.SALE.COMPLETED`` names only the subscription
(``billing_agreement_id``), no cycle. PayPal's own dunning state is per subscription
(``failed_payments_count``: consecutive failures, reset on success), so a subscription's
dunning episode is tracked under the subscription id ``I-...``. One-off payments use the
merchant's ``invoice_id`` / ``invoice_number``, else the order / parent payment, else their
own id. ``attempt`` is ``failed_payments_count`` (PayPal's own retries included);
``provider_retry_at`` is ``last_failed_payment.next_payment_retry_time``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.money import to_minor
from paywatch.providers.paypal.declines import paypal_decline
from paywatch.schemas.models import Decline, DeclineCategory, EventType

Fields = dict[str, Any]
Overrides = Mapping[str, DeclineCategory]
Handler = Callable[[Mapping[str, Any], Overrides], Fields | None]

_CURRENCY = re.compile(r"[A-Za-z]{3}")
_FAILED = EventType.PAYMENT_FAILED
_SUCCEEDED = EventType.PAYMENT_SUCCEEDED


def obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested object ({} when absent or not an object)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string field, else None."""
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def timestamp(value: Any) -> datetime | None:
    """An RFC 3339 PayPal time as an aware UTC datetime (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def occurred_at(doc: Mapping[str, Any]) -> datetime:
    """The event's ``create_time``, or PayloadError."""
    created = timestamp(doc.get("create_time"))
    if created is None:
        raise PayloadError("PayPal event has no RFC 3339 'create_time'")
    return created


def money(
    amount: Mapping[str, Any], value_key: str, currency_key: str
) -> tuple[int | None, str | None]:
    """(minor units, ISO currency) of a PayPal money object (None parts when absent)."""
    value, currency = amount.get(value_key), text(amount, currency_key)
    if currency is None or not _CURRENCY.fullmatch(currency):
        return None, None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None, currency.upper()
    return to_minor(value, currency), currency.upper()


def _int(mapping: Mapping[str, Any], key: str) -> int | None:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _require_id(resource: Mapping[str, Any], what: str) -> str:
    resource_id = text(resource, "id")
    if resource_id is None:
        raise PayloadError(f"PayPal {what} has no id")
    return resource_id


def _subscription_base(kind: EventType, sub: Mapping[str, Any]) -> Fields:
    sub_id = _require_id(sub, "subscription")
    return {
        "type": kind,
        "invoice_ref": sub_id,
        "subscription_ref": sub_id,
        "customer_ref": text(obj(sub, "subscriber"), "payer_id"),
    }


def _subscription_failure(kind: EventType, sub: Mapping[str, Any], overrides: Overrides) -> Fields:
    billing = obj(sub, "billing_info")
    failed = obj(billing, "last_failed_payment")
    amount = obj(failed, "amount") or obj(billing, "outstanding_balance")
    minor, currency = money(amount, "value", "currency_code")
    count = _int(billing, "failed_payments_count")
    reason = text(failed, "reason_code")
    retry = failed.get("next_payment_retry_time") if kind is _FAILED else None
    return {
        **_subscription_base(kind, sub),
        "amount_minor": minor,
        "currency": currency,
        "attempt": count if count and count > 0 else None,
        "provider_retry_at": timestamp(retry),
        "decline": paypal_decline(reason=reason, overrides=overrides),
    }


def subscription_payment_failed(resource: Mapping[str, Any], overrides: Overrides) -> Fields:
    """BILLING.SUBSCRIPTION.PAYMENT.FAILED: the subscription with its last failed payment."""
    return _subscription_failure(_FAILED, resource, overrides)


def subscription_suspended(resource: Mapping[str, Any], overrides: Overrides) -> Fields | None:
    """BILLING.SUBSCRIPTION.SUSPENDED after failed payments (see module docstring)."""
    billing = obj(resource, "billing_info")
    if not (_int(billing, "failed_payments_count") or obj(billing, "last_failed_payment")):
        return None
    return _subscription_failure(EventType.SUBSCRIPTION_PAST_DUE, resource, overrides)


def subscription_state(kind: EventType, resource: Mapping[str, Any], _: Overrides) -> Fields:
    """CANCELLED / ACTIVATED / RE-ACTIVATED: a state change of the subscription."""
    return _subscription_base(kind, resource)


def sale(kind: EventType, resource: Mapping[str, Any], overrides: Overrides) -> Fields:
    """PAYMENT.SALE.*: a v1 sale, of a subscription when it names ``billing_agreement_id``."""
    sale_id = _require_id(resource, "sale")
    agreement = text(resource, "billing_agreement_id")
    minor, currency = money(obj(resource, "amount"), "total", "currency")
    decline: Decline | None = None
    if kind is _FAILED:
        decline = paypal_decline(reason=text(resource, "reason_code"), overrides=overrides)
    return {
        "type": kind,
        "invoice_ref": sale_ref(resource) or sale_id,
        "subscription_ref": agreement,
        "payment_ref": sale_id,
        "amount_minor": minor,
        "currency": currency,
        "decline": decline,
    }


def capture(kind: EventType, resource: Mapping[str, Any], overrides: Overrides) -> Fields:
    """PAYMENT.CAPTURE.*: a v2 capture, with card processor data when the payment was a card."""
    capture_id = _require_id(resource, "capture")
    minor, currency = money(obj(resource, "amount"), "value", "currency_code")
    decline: Decline | None = None
    if kind is _FAILED:
        processor = obj(resource, "processor_response")
        decline = paypal_decline(
            response_code=text(processor, "response_code"),
            advice_code=text(processor, "payment_advice_code"),
            reason=text(obj(resource, "status_details"), "reason"),
            overrides=overrides,
        )
    return {
        "type": kind,
        "invoice_ref": capture_ref(resource) or capture_id,
        "payment_ref": capture_id,
        "amount_minor": minor,
        "currency": currency,
        "decline": decline,
    }


def sale_ref(resource: Mapping[str, Any]) -> str | None:
    """Subscription, merchant invoice number or parent payment of a sale."""
    return (
        text(resource, "billing_agreement_id")
        or text(resource, "invoice_number")
        or text(resource, "parent_payment")
    )


def capture_ref(resource: Mapping[str, Any]) -> str | None:
    """Merchant invoice id, else the order id of a capture."""
    related = obj(obj(resource, "supplementary_data"), "related_ids")
    return text(resource, "invoice_id") or text(related, "order_id")


HANDLERS: dict[str, Handler] = {
    "BILLING.SUBSCRIPTION.PAYMENT.FAILED": subscription_payment_failed,
    "BILLING.SUBSCRIPTION.SUSPENDED": subscription_suspended,
    "BILLING.SUBSCRIPTION.CANCELLED": partial(subscription_state, EventType.SUBSCRIPTION_CANCELED),
    "BILLING.SUBSCRIPTION.ACTIVATED": partial(
        subscription_state, EventType.SUBSCRIPTION_REACTIVATED
    ),
    "BILLING.SUBSCRIPTION.RE-ACTIVATED": partial(
        subscription_state, EventType.SUBSCRIPTION_REACTIVATED
    ),
    "PAYMENT.SALE.DENIED": partial(sale, _FAILED),
    "PAYMENT.SALE.COMPLETED": partial(sale, _SUCCEEDED),
    "PAYMENT.CAPTURE.DENIED": partial(capture, _FAILED),
    "PAYMENT.CAPTURE.DECLINED": partial(capture, _FAILED),
    "PAYMENT.CAPTURE.COMPLETED": partial(capture, _SUCCEEDED),
}
"""Handled event types; every other type (refunds, disputes, reversals...) gives no event."""


def fields(doc: Mapping[str, Any], overrides: Overrides) -> Fields | None:
    """PaymentEvent fields of a parsed event, or None when the type is not handled."""
    handler = HANDLERS.get(str(doc.get("event_type")))
    return handler(obj(doc, "resource"), overrides) if handler else None


def subject(doc: Mapping[str, Any]) -> str | None:
    """The ref an event is tracked under (subscription, invoice, order...), when cheap."""
    evt_type, resource = doc.get("event_type"), obj(doc, "resource")
    if not isinstance(evt_type, str):
        return None
    if evt_type.startswith("BILLING.SUBSCRIPTION."):
        return text(resource, "id")
    if evt_type.startswith("PAYMENT.SALE."):
        return sale_ref(resource) or text(resource, "id")
    if evt_type.startswith("PAYMENT.CAPTURE."):
        return capture_ref(resource) or text(resource, "id")
    return text(resource, "id")
