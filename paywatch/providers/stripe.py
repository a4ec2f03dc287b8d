"""Stripe: verify ``Stripe-Signature``, parse events, normalize them to PaymentEvents.

Pure (reference/webhooks.md §1.1, §2.1, §3.1): no clock, no I/O. Header keys are expected
lowercased, as the ingest passes them (a case-insensitive scan is the fallback). Both
invoice shapes are read: before API ``2025-03-31.basil`` (``subscription``,
``payment_intent``, ``charge`` on the invoice) and after it
(``parent.subscription_details.subscription``, ``payments.data[].payment``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from paywatch.errors import PayloadError, VerificationError
from paywatch.providers.base import Secrets, event_id
from paywatch.providers.declines import classify_stripe
from paywatch.schemas.models import (
    Decline,
    DeclineCategory,
    EventType,
    PaymentEvent,
    PaymentMethod,
    RawRef,
    RawWebhook,
)

DEFAULT_TOLERANCE = 300
"""Seconds a signed timestamp may differ from ``now`` (the SDK's default)."""

SIGNATURE_HEADER = "stripe-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_MALFORMED = "malformed Stripe-Signature header: expected t=<unix>,v1=<hex>[,v1=<hex>]"

Fields = dict[str, Any]
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


class StripeProvider:
    """The Stripe adapter of the Provider port."""

    name: str = "stripe"
    secret_names: tuple[str, ...] = ("signing_secret",)

    def __init__(self, tolerance: int = DEFAULT_TOLERANCE) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0 seconds")
        self.tolerance = tolerance

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless a v1 signature over the raw body matches a secret.

        ``headers`` keys are expected lowercased (the ingest lowercases them). Stricter than
        the SDK: timestamps more than ``tolerance`` seconds in the *future* are refused too
        (the SDK only refuses old ones). ``now`` must be timezone-aware.
        """
        header = _signature_header(headers)
        if header is None:
            raise VerificationError("missing Stripe-Signature header")
        timestamp, candidates = _parse_signature_header(header)
        keys = [s["signing_secret"] for s in secrets if s.get("signing_secret")]
        if not keys:
            raise VerificationError("no Stripe signing_secret configured for this tenant")
        if not any(_signed_by(key, timestamp, body, candidates) for key in keys):
            raise VerificationError("no v1 signature matches the body for any signing secret")
        age = now.timestamp() - timestamp
        if age > self.tolerance:
            raise VerificationError(f"signature timestamp is more than {self.tolerance} s old")
        if -age > self.tolerance:
            raise VerificationError(
                f"signature timestamp is more than {self.tolerance} s in the future"
            )

    def parse(self, body: bytes) -> dict[str, Any]:
        """Decode a Stripe event: a JSON object with ``id``, ``type`` and ``data.object``."""
        try:
            doc = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise PayloadError("body is not UTF-8") from exc
        except RecursionError as exc:
            raise PayloadError("JSON nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
            raise PayloadError(f"body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise PayloadError("a Stripe event is a JSON object")
        for key in ("id", "type"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise PayloadError(f"Stripe event has no string {key!r}")
        if not isinstance(_obj(doc, "data").get("object"), dict):
            raise PayloadError("Stripe event has no object 'data.object'")
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """Invoice id when the event names one, else the customer id, else None."""
        evt_type = doc.get("type")
        obj = _obj(_obj(doc, "data"), "object")
        if not isinstance(evt_type, str):
            return None
        if evt_type.startswith("invoice."):
            return _ref(obj.get("id")) or _ref(obj.get("customer"))
        if evt_type.startswith("customer.subscription."):
            return _ref(obj.get("latest_invoice")) or _ref(obj.get("customer"))
        return _ref(obj.get("invoice")) or _ref(obj.get("customer"))

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """Stripe's event id (``evt_...``)."""
        evt_id = doc.get("id")
        if not isinstance(evt_id, str) or not evt_id:
            raise PayloadError("Stripe event has no string 'id'")
        return evt_id

    def normalize(
        self, raw: RawWebhook, topic: str, partition: int, offset: int
    ) -> list[PaymentEvent]:
        """Canonical events of one Stripe webhook; unhandled event types give []."""
        doc = self.parse(raw.body)
        evt_type: str = doc["type"]
        handler = _HANDLERS.get(evt_type)
        fields = handler(doc["data"]) if handler else None
        # One Stripe event gives at most one canonical event today; the index keeps ids
        # distinct should a handler ever emit several.
        drafts = [fields] if fields is not None else []
        evt_id = self.provider_event_id(doc)
        ref = RawRef(topic=topic, partition=partition, offset=offset, provider_event_id=evt_id)
        try:
            return [
                PaymentEvent(
                    event_id=event_id(raw.tenant, raw.provider, evt_id, index),
                    tenant=raw.tenant,
                    provider=raw.provider,
                    source_type=evt_type,
                    occurred_at=_created(doc),
                    raw=ref,
                    **draft,
                )
                for index, draft in enumerate(drafts)
            ]
        except ValidationError as exc:
            raise PayloadError(f"Stripe event {evt_id} has unexpected field values") from exc


stripe = StripeProvider()
"""The Stripe provider with the SDK's default 300 s tolerance."""


def _signature_header(headers: Mapping[str, str]) -> str | None:
    value = headers.get(SIGNATURE_HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    return value


def _parse_signature_header(header: str) -> tuple[int, list[str]]:
    timestamp: str | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not key:
            raise VerificationError(_MALFORMED)
        if key == "t":
            if timestamp is not None:
                raise VerificationError("malformed Stripe-Signature header: more than one t=")
            timestamp = value
        elif key == "v1":
            signatures.append(value)
        # v0 (the test-mode scheme) and unknown schemes are ignored, as the SDK does.
    if timestamp is None:
        raise VerificationError("Stripe-Signature header has no t= timestamp")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise VerificationError("Stripe-Signature timestamp is not an integer")
    if not signatures:
        raise VerificationError("Stripe-Signature header has no v1 signature (v0 is ignored)")
    return int(timestamp), signatures


def _signed_by(secret: str, timestamp: int, body: bytes, candidates: list[str]) -> bool:
    # The secret is used whole (with its whsec_ prefix); the raw bytes are never re-encoded.
    mac = hmac.new(secret.encode("utf-8"), b"%d." % timestamp, hashlib.sha256)
    mac.update(body)
    expected = mac.hexdigest()
    # compare_digest refuses non-ASCII str; such a value cannot match a hex digest anyway.
    return any(c.isascii() and hmac.compare_digest(expected, c) for c in candidates)


def _obj(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def _str(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return value if isinstance(value, str) and value else None


def _int(mapping: Mapping[str, Any], key: str) -> int | None:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ref(value: Any) -> str | None:
    """An id, whether Stripe sent it as a string or as an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise PayloadError(f"timestamp {value} out of range") from exc


def _created(doc: Mapping[str, Any]) -> datetime:
    created = _timestamp(doc.get("created"))
    if created is None:
        raise PayloadError("Stripe event has no integer 'created'")
    return created


def _currency(obj: Mapping[str, Any]) -> str | None:
    currency = _str(obj, "currency")
    return currency.upper() if currency and currency.isascii() and currency.isalpha() else None


def _require_id(obj: Mapping[str, Any], what: str) -> str:
    obj_id = _str(obj, "id")
    if obj_id is None:
        raise PayloadError(f"Stripe {what} has no id")
    return obj_id


def _card(card: Mapping[str, Any]) -> PaymentMethod | None:
    """Only the card facts safe to keep; anything else on the card is dropped."""
    if not card:
        return None
    last4 = _str(card, "last4")
    return PaymentMethod(
        brand=_str(card, "brand"),
        last4=last4 if last4 and len(last4) == 4 and last4.isdigit() else None,
        exp_month=_int(card, "exp_month"),
        exp_year=_int(card, "exp_year"),
        fingerprint=_str(card, "fingerprint"),
    )


def _charge_card(charge: Mapping[str, Any]) -> Mapping[str, Any]:
    return _obj(_obj(charge, "payment_method_details"), "card")


def _error_card(error: Mapping[str, Any]) -> Mapping[str, Any]:
    return _obj(_obj(error, "payment_method"), "card")


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
    outcome = _obj(charge, "outcome")
    return _decline(
        code=_str(charge, "failure_code"),
        decline_code=_str(outcome, "reason"),
        advice_code=_str(outcome, "advice_code"),
        network=_str(_charge_card(charge), "network"),
        network_advice_code=_str(outcome, "network_advice_code"),
        network_decline_code=_str(outcome, "network_decline_code"),
        outcome_type=_str(outcome, "type"),
        message=_str(charge, "failure_message"),
    )


def _error_decline(error: Mapping[str, Any]) -> Decline:
    """A PaymentIntent ``last_payment_error`` (or invoice ``last_finalization_error``)."""
    card = _error_card(error)
    # A PaymentMethod card names no single network; its preferred one, else its brand.
    network = _str(_obj(card, "networks"), "preferred") or _str(card, "brand")
    return _decline(
        code=_str(error, "code"),
        decline_code=_str(error, "decline_code"),
        advice_code=_str(error, "advice_code"),
        network=network,
        network_advice_code=_str(error, "network_advice_code"),
        network_decline_code=_str(error, "network_decline_code"),
        outcome_type=None,
        message=_str(error, "message"),
    )


def _invoice_payment(invoice: Mapping[str, Any]) -> Any:
    """The payment behind an invoice: a PaymentIntent/charge id or expanded object."""
    legacy = invoice.get("payment_intent") or invoice.get("charge")
    if legacy:
        return legacy
    entries = _obj(invoice, "payments").get("data")
    payments = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    chosen = next((e for e in payments if e.get("is_default") is True), None)
    payment = _obj(chosen or (payments[0] if payments else {}), "payment")
    return payment.get("payment_intent") or payment.get("charge")


def _invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    details = _obj(_obj(invoice, "parent"), "subscription_details")
    return _ref(invoice.get("subscription")) or _ref(details.get("subscription"))


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
        return _card(_error_card(_obj(payment, "last_payment_error")))
    return None


def _invoice_amount(kind: EventType, invoice: Mapping[str, Any]) -> int | None:
    if kind is EventType.PAYMENT_SUCCEEDED:
        return _int(invoice, "amount_paid")
    due = _int(invoice, "amount_due")
    return due if due is not None else _int(invoice, "amount_remaining")


def _invoice(evt_type: str, data: Mapping[str, Any]) -> Fields:
    invoice = _obj(data, "object")
    kind = _INVOICE_TYPES[evt_type]
    payment = _invoice_payment(invoice)
    failed = kind is EventType.PAYMENT_FAILED
    return {
        "type": kind,
        "invoice_ref": _require_id(invoice, "invoice"),
        "customer_ref": _ref(invoice.get("customer")),
        "subscription_ref": _invoice_subscription(invoice),
        "payment_ref": _ref(payment),
        "amount_minor": _invoice_amount(kind, invoice),
        "currency": _currency(invoice),
        "attempt": _int(invoice, "attempt_count"),
        # What Stripe itself will retry, so the saga does not double-retry.
        "provider_retry_at": _timestamp(invoice.get("next_payment_attempt")),
        "decline": _invoice_failure(evt_type, invoice, payment) if failed else None,
        "payment_method": _invoice_card(invoice, payment) if failed else None,
    }


def _charge_failed(data: Mapping[str, Any]) -> Fields:
    charge = _obj(data, "object")
    charge_id = _require_id(charge, "charge")
    intent = _ref(charge.get("payment_intent"))
    return {
        "type": EventType.PAYMENT_FAILED,
        # One-off payments (and basil+ payloads, which dropped Charge.invoice) are tracked
        # under their payment id.
        "invoice_ref": _ref(charge.get("invoice")) or intent or charge_id,
        "customer_ref": _ref(charge.get("customer")),
        "payment_ref": intent or charge_id,
        "amount_minor": _int(charge, "amount"),
        "currency": _currency(charge),
        "decline": _charge_decline(charge),
        "payment_method": _card(_charge_card(charge)),
    }


def _intent_failed(data: Mapping[str, Any]) -> Fields:
    intent = _obj(data, "object")
    intent_id = _require_id(intent, "payment_intent")
    error = _obj(intent, "last_payment_error")
    return {
        "type": EventType.PAYMENT_FAILED,
        "invoice_ref": _ref(intent.get("invoice")) or intent_id,
        "customer_ref": _ref(intent.get("customer")),
        "payment_ref": intent_id,
        "amount_minor": _int(intent, "amount"),
        "currency": _currency(intent),
        "decline": _error_decline(error) if error else Decline(),
        "payment_method": _card(_error_card(error)),
    }


def _subscription(kind: EventType, sub: Mapping[str, Any]) -> Fields:
    sub_id = _require_id(sub, "subscription")
    return {
        "type": kind,
        "invoice_ref": _ref(sub.get("latest_invoice")) or f"sub:{sub_id}",
        "customer_ref": _ref(sub.get("customer")),
        "subscription_ref": sub_id,
        "currency": _currency(sub),
    }


def _subscription_updated(data: Mapping[str, Any]) -> Fields | None:
    sub = _obj(data, "object")
    status = _str(sub, "status")
    # previous_attributes carries status only when this update changed it.
    before = _str(_obj(data, "previous_attributes"), "status")
    if before is None or before == status:
        return None
    if status in _PAST_DUE:
        return _subscription(EventType.SUBSCRIPTION_PAST_DUE, sub)
    if status == "active" and before in _PAST_DUE:
        return _subscription(EventType.SUBSCRIPTION_REACTIVATED, sub)
    return None


def _subscription_deleted(data: Mapping[str, Any]) -> Fields:
    return _subscription(EventType.SUBSCRIPTION_CANCELED, _obj(data, "object"))


_HANDLERS: dict[str, Handler] = {
    **{evt_type: partial(_invoice, evt_type) for evt_type in _INVOICE_TYPES},
    "charge.failed": _charge_failed,
    "payment_intent.payment_failed": _intent_failed,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
}
