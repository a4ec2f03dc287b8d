"""Braintree notification (as a dict) -> PaymentEvent fields (reference/webhooks.md §1.3, §3.3).

Braintree has no invoices and no event ids, so (documented choices):

* ``invoice_ref`` is one billing cycle of a subscription: ``"<subscription id>:<billing
  period start date>"``. Braintree's automatic retries of a past-due subscription keep the
  billing period dates (Braintree GraphQL ``RecurringBillingSubscriptionTimeline``), so a
  failure, its retries and the charge that recovers it share one ref, and next month's
  failure opens a new one. The period comes from the transaction's own ``subscription``
  details, else from the subscription; without either the subscription id alone is used,
  and a transaction outside any subscription is tracked under its transaction id.
* the dedupe key hashes (kind, timestamp, subject id, transaction id): see ``dedupe_key``.
* ``provider_retry_at`` is ``next_billing_date`` (midnight UTC) while the subscription is
  "Past Due": Braintree moves that date along its retry schedule [U: the date is in the
  merchant's time zone].
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from paywatch.errors import PayloadError
from paywatch.providers.braintree.declines import Facts, decline
from paywatch.providers.money import to_minor
from paywatch.schemas.models import Decline, EventType, PaymentMethod

Fields = dict[str, Any]

KINDS: dict[str, EventType] = {
    "subscription_charged_unsuccessfully": EventType.PAYMENT_FAILED,
    "subscription_charged_successfully": EventType.PAYMENT_SUCCEEDED,
    "subscription_went_past_due": EventType.SUBSCRIPTION_PAST_DUE,
    "subscription_went_active": EventType.SUBSCRIPTION_REACTIVATED,
    "subscription_canceled": EventType.SUBSCRIPTION_CANCELED,
    "subscription_expired": EventType.SUBSCRIPTION_CANCELED,
    "transaction_settlement_declined": EventType.PAYMENT_FAILED,
    "transaction_settled": EventType.PAYMENT_SUCCEEDED,
}
"""Handled kinds; every other kind (check, disputes, disbursements...) gives no event."""

_FAILURES = frozenset({EventType.PAYMENT_FAILED, EventType.SUBSCRIPTION_PAST_DUE})
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_BRANDS = {"mastercard": "mastercard", "american express": "amex", "visa": "visa"}


def obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A nested element as a mapping ({} when absent or not an element)."""
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def text(mapping: Mapping[str, Any], key: str) -> str | None:
    """A leaf's text, None when absent, nil or empty."""
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def timestamp(doc: Mapping[str, Any]) -> datetime:
    """The notification's ``timestamp`` as an aware UTC datetime."""
    value = text(doc, "timestamp")
    if value is None:
        raise PayloadError("Braintree notification has no timestamp")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise PayloadError("Braintree notification timestamp is not ISO 8601") from exc


def subject_ids(doc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(subject id, transaction id)``: the subscription/transaction/other subject's id."""
    subject = obj(doc, "subject")
    txn = _transaction(subject)
    for name in ("subscription", "transaction", "dispute", "disbursement"):
        if text(obj(subject, name), "id"):
            return text(obj(subject, name), "id"), text(txn, "id")
    return None, text(txn, "id")


def dedupe_key(doc: Mapping[str, Any]) -> str:
    """Braintree sends no event id: sha256 of kind, timestamp, subject and transaction ids.

    A redelivery carries the same payload, so the same key; NUL separates the parts (XML
    text cannot contain NUL, so no two tuples join to the same string).
    """
    subject_id, txn_id = subject_ids(doc)
    parts = [text(doc, "kind") or "", timestamp(doc).isoformat(), subject_id or "", txn_id or ""]
    return "bt_" + hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:40]


def fields(doc: Mapping[str, Any], default_currency: str | None) -> Fields | None:
    """PaymentEvent fields of a handled kind, None for other kinds."""
    kind = KINDS.get(text(doc, "kind") or "")
    if kind is None:
        return None
    subject = obj(doc, "subject")
    sub = obj(subject, "subscription")
    txn = _transaction(subject)
    if not text(sub, "id") and not text(txn, "id"):
        raise PayloadError(f"Braintree {doc.get('kind')} names no subscription or transaction")
    failed = kind is EventType.PAYMENT_FAILED
    currency = _currency(txn) or default_currency
    amount = text(txn, "amount")
    return {
        "type": kind,
        "invoice_ref": invoice_ref(sub, txn),
        "customer_ref": text(obj(txn, "customer"), "id") or text(txn, "customer_id"),
        "subscription_ref": text(sub, "id") or text(txn, "subscription_id"),
        "payment_ref": text(txn, "id"),
        "amount_minor": to_minor(amount, currency) if amount and currency else None,
        "currency": currency,
        "attempt": _int(sub, "failure_count") if kind in _FAILURES else None,
        "provider_retry_at": _retry_at(sub) if kind in _FAILURES else None,
        "decline": transaction_decline(txn) if failed else None,
        "payment_method": card(txn) if failed else None,
    }


def invoice_ref(sub: Mapping[str, Any], txn: Mapping[str, Any]) -> str:
    """``"<subscription id>:<billing period start>"``, or the transaction id (module doc)."""
    sub_id = text(sub, "id") or text(txn, "subscription_id")
    if sub_id is None:
        txn_id = text(txn, "id")
        if txn_id is None:
            raise PayloadError("Braintree transaction has no id")
        return txn_id
    period = text(obj(txn, "subscription"), "billing_period_start_date") or text(
        sub, "billing_period_start_date"
    )
    return f"{sub_id}:{period}" if period else sub_id


def transaction_decline(txn: Mapping[str, Any]) -> Decline:
    """The classified decline of a failed transaction (UNKNOWN when it says nothing)."""
    card_type = text(obj(txn, "credit_card"), "card_type")
    return decline(
        Facts(
            code=text(txn, "processor_response_code")
            or text(txn, "processor_settlement_response_code"),
            response_type=text(txn, "processor_response_type"),
            gateway_rejection=text(txn, "gateway_rejection_reason"),
            network=_brand(card_type),
            advice_code=text(txn, "merchant_advice_code"),
            network_code=text(txn, "network_response_code"),
            text=text(txn, "processor_response_text")
            or text(txn, "processor_settlement_response_text"),
        )
    )


def card(txn: Mapping[str, Any]) -> PaymentMethod | None:
    """Brand, last 4, expiry and Braintree's card fingerprint; never more."""
    details = obj(txn, "credit_card")
    if not details:
        return None
    last4 = text(details, "last_4")
    return PaymentMethod(
        brand=_brand(text(details, "card_type")),
        last4=last4 if last4 and len(last4) == 4 and last4.isdigit() else None,
        exp_month=_int(details, "expiration_month"),
        exp_year=_int(details, "expiration_year"),
        fingerprint=text(details, "unique_number_identifier"),
    )


def _transaction(subject: Mapping[str, Any]) -> Mapping[str, Any]:
    """The subject's transaction, else the subscription's latest (first listed) one."""
    if obj(subject, "transaction"):
        return obj(subject, "transaction")
    transactions = obj(subject, "subscription").get("transactions")
    if isinstance(transactions, list):
        return next((t for t in transactions if isinstance(t, dict)), {})
    return {}


def _currency(txn: Mapping[str, Any]) -> str | None:
    value = text(txn, "currency_iso_code")
    return value.upper() if value and _CURRENCY.fullmatch(value) else None


def _brand(card_type: str | None) -> str | None:
    if not card_type:
        return None
    lowered = card_type.strip().lower()
    return _BRANDS.get(lowered, lowered) or None


def _int(mapping: Mapping[str, Any], key: str) -> int | None:
    value = text(mapping, key)
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


def _retry_at(sub: Mapping[str, Any]) -> datetime | None:
    date = text(sub, "next_billing_date")
    if text(sub, "status") != "Past Due" or date is None:
        return None
    try:
        return datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
