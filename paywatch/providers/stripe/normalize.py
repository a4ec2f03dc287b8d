"""Stripe event ``data`` -> PaymentEvent fields (reference/webhooks.md §3.1).

Both invoice shapes are read: before API ``2025-03-31.basil`` (``subscription``,
``payment_intent``, ``charge`` on the invoice) and after it
(``parent.subscription_details.subscription``, ``payments.data[].payment``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from paywatch.providers.stripe.declines import classify_stripe
from paywatch.providers.stripe.fields import (
    Fields,
    currency,
    integer,
    obj,
    ref,
    require_id,
    string,
    timestamp,
)
from paywatch.schemas.models import Decline, DeclineCategory, EventType, PaymentMethod

Handler = Callable[[Mapping[str, Any]], Fields | None]
"""Reads an event's ``data`` (``object`` + ``previous_attributes``); None: nothing to emit."""

_INVOICE_TYPES: dict[str, EventType] = {
    "invoice.payment_failed": EventType.PAYMENT_FAILED,
    "invoice.payment_action_required": EventType.PAYMENT_FAILED,
    "invoice.paid": EventType.PAYMENT_SUCCEEDED,
    "invoice.payment_succeeded": EventType.PAYMENT_SUCCEEDED,
    "invoice.voided": EventType.INVOICE_VOIDED,
    "invoice.marked_uncollectible": EventType.INVOICE_UNCOLLECTIBLE,
    "invoice.overdue": EventType.INVOICE_OVERDUE,
}
_PAST_DUE = frozenset({"past_due", "unpaid"})


def _card(card: Mapping[str, Any]) -> PaymentMethod | None:
    """Only the card facts safe to keep; anything else on the card is dropped."""
    if not card:
        return None
    last4 = string(card, "last4")
    return PaymentMethod(
        brand=string(card, "brand"),
        last4=last4 if last4 and len(last4) == 4 and last4.isdigit() else None,
        exp_month=integer(card, "exp_month"),
        exp_year=integer(card, "exp_year"),
        fingerprint=string(card, "fingerprint"),
    )


def _charge_card(charge: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj(obj(charge, "payment_method_details"), "card")


def _error_card(error: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj(obj(error, "payment_method"), "card")


def _decline(*, message: str | None, **facts: str | None) -> Decline:
    return Decline(
        code=facts["decline_code"] or facts["code"],
        category=classify_stripe(**facts),
        network=facts["network"],
        network_code=facts["network_decline_code"],
        advice_code=facts["network_advice_code"] or facts["advice_code"],
        message=message,
    )


def _charge_decline(charge: Mapping[str, Any]) -> Decline:
    outcome = obj(charge, "outcome")
    return _decline(
        code=string(charge, "failure_code"),
        decline_code=string(outcome, "reason"),
        advice_code=string(outcome, "advice_code"),
        network=string(_charge_card(charge), "network"),
        network_advice_code=string(outcome, "network_advice_code"),
        network_decline_code=string(outcome, "network_decline_code"),
        outcome_type=string(outcome, "type"),
        message=string(charge, "failure_message"),
    )


def _error_decline(error: Mapping[str, Any]) -> Decline:
    """A PaymentIntent ``last_payment_error`` (or invoice ``last_finalization_error``)."""
    card = _error_card(error)
    # A PaymentMethod card names no single network; its preferred one, else its brand.
    network = string(obj(card, "networks"), "preferred") or string(card, "brand")
    return _decline(
        code=string(error, "code"),
        decline_code=string(error, "decline_code"),
        advice_code=string(error, "advice_code"),
        network=network,
        network_advice_code=string(error, "network_advice_code"),
        network_decline_code=string(error, "network_decline_code"),
        outcome_type=None,
        message=string(error, "message"),
    )


def _invoice_payment(invoice: Mapping[str, Any]) -> Any:
    """The payment behind an invoice: a PaymentIntent/charge id or expanded object."""
    legacy = invoice.get("payment_intent") or invoice.get("charge")
    if legacy:
        return legacy
    entries = obj(invoice, "payments").get("data")
    payments = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    chosen = next((e for e in payments if e.get("is_default") is True), None)
    payment = obj(chosen or (payments[0] if payments else {}), "payment")
    return payment.get("payment_intent") or payment.get("charge")


def _invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    details = obj(obj(invoice, "parent"), "subscription_details")
    return ref(invoice.get("subscription")) or ref(details.get("subscription"))


def _invoice_failure(evt_type: str, invoice: Mapping[str, Any], payment: Any) -> Decline:
    if evt_type == "invoice.payment_action_required":
        return Decline(code="authentication_required", category=DeclineCategory.ACTION)
    charge = invoice.get("charge")
    if isinstance(charge, dict):
        return _charge_decline(charge)
    if isinstance(payment, dict) and isinstance(payment.get("last_payment_error"), dict):
        return _error_decline(payment["last_payment_error"])
    if isinstance(invoice.get("last_finalization_error"), dict):
        return _error_decline(invoice["last_finalization_error"])
    return Decline(category=DeclineCategory.UNKNOWN)


def _invoice_card(invoice: Mapping[str, Any], payment: Any) -> PaymentMethod | None:
    charge = invoice.get("charge")
    if isinstance(charge, dict):
        return _card(_charge_card(charge))
    if isinstance(payment, dict):
        return _card(_error_card(obj(payment, "last_payment_error")))
    return None


def _invoice_amount(kind: EventType, invoice: Mapping[str, Any]) -> int | None:
    if kind is EventType.PAYMENT_SUCCEEDED:
        return integer(invoice, "amount_paid")
    due = integer(invoice, "amount_due")
    return due if due is not None else integer(invoice, "amount_remaining")


def _invoice(evt_type: str, data: Mapping[str, Any]) -> Fields:
    invoice = obj(data, "object")
    kind = _INVOICE_TYPES[evt_type]
    payment = _invoice_payment(invoice)
    failed = kind is EventType.PAYMENT_FAILED
    return {
        "type": kind,
        "invoice_ref": require_id(invoice, "invoice"),
        "customer_ref": ref(invoice.get("customer")),
        "subscription_ref": _invoice_subscription(invoice),
        "payment_ref": ref(payment),
        "amount_minor": _invoice_amount(kind, invoice),
        "currency": currency(invoice),
        "attempt": integer(invoice, "attempt_count"),
        # What Stripe itself will retry, so the saga does not double-retry.
        "provider_retry_at": timestamp(invoice.get("next_payment_attempt")),
        "decline": _invoice_failure(evt_type, invoice, payment) if failed else None,
        "payment_method": _invoice_card(invoice, payment) if failed else None,
    }


def _charge_failed(data: Mapping[str, Any]) -> Fields:
    charge = obj(data, "object")
    charge_id = require_id(charge, "charge")
    intent = ref(charge.get("payment_intent"))
    return {
        "type": EventType.PAYMENT_FAILED,
        # One-off payments (and basil+ payloads, which dropped Charge.invoice) are tracked
        # under their payment id.
        "invoice_ref": ref(charge.get("invoice")) or intent or charge_id,
        "customer_ref": ref(charge.get("customer")),
        "payment_ref": intent or charge_id,
        "amount_minor": integer(charge, "amount"),
        "currency": currency(charge),
        "decline": _charge_decline(charge),
        "payment_method": _card(_charge_card(charge)),
    }


def _intent_failed(data: Mapping[str, Any]) -> Fields:
    intent = obj(data, "object")
    intent_id = require_id(intent, "payment_intent")
    error = obj(intent, "last_payment_error")
    return {
        "type": EventType.PAYMENT_FAILED,
        "invoice_ref": ref(intent.get("invoice")) or intent_id,
        "customer_ref": ref(intent.get("customer")),
        "payment_ref": intent_id,
        "amount_minor": integer(intent, "amount"),
        "currency": currency(intent),
        "decline": _error_decline(error) if error else Decline(),
        "payment_method": _card(_error_card(error)),
    }


def _subscription(kind: EventType, sub: Mapping[str, Any]) -> Fields:
    sub_id = require_id(sub, "subscription")
    return {
        "type": kind,
        "invoice_ref": ref(sub.get("latest_invoice")) or f"sub:{sub_id}",
        "customer_ref": ref(sub.get("customer")),
        "subscription_ref": sub_id,
        "currency": currency(sub),
    }


def _subscription_updated(data: Mapping[str, Any]) -> Fields | None:
    sub = obj(data, "object")
    status = string(sub, "status")
    # previous_attributes carries status only when this update changed it.
    before = string(obj(data, "previous_attributes"), "status")
    if before is None or before == status:
        return None
    if status in _PAST_DUE:
        return _subscription(EventType.SUBSCRIPTION_PAST_DUE, sub)
    if status == "active" and before in _PAST_DUE:
        return _subscription(EventType.SUBSCRIPTION_REACTIVATED, sub)
    return None


def _subscription_deleted(data: Mapping[str, Any]) -> Fields:
    return _subscription(EventType.SUBSCRIPTION_CANCELED, obj(data, "object"))


HANDLERS: dict[str, Handler] = {
    **{evt_type: partial(_invoice, evt_type) for evt_type in _INVOICE_TYPES},
    "charge.failed": _charge_failed,
    "payment_intent.payment_failed": _intent_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
}
"""Handler per Stripe event type; other types give no canonical event."""
