"""The Checkout.com adapter of the Provider port (reference/webhooks.md §1.8, §2.8, §4)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from paywatch.errors import PayloadError, VerificationError
from paywatch.providers.base import (
    Provider,
    Secrets,
    envelope,
    load_json,
    reject_card_numbers,
    subject_ref,
)
from paywatch.providers.checkout import normalize as fields_of
from paywatch.providers.checkout.normalize import DEFAULT_EVENTS
from paywatch.schemas.coords import Coords
from paywatch.schemas.models import EventType, PaymentEvent, RawWebhook

SIGNATURE_HEADER = "cko-signature"
_HEX_DIGEST = re.compile(r"[0-9A-Fa-f]{64}")
DEFAULT_SUBSCRIPTION_KEY = "subscription_id"


def signature_header(headers: Mapping[str, str]) -> str | None:
    """The ``Cko-Signature`` value (keys are expected lowercased; other cases are a fallback)."""
    value = headers.get(SIGNATURE_HEADER)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
    return value


def sign(body: bytes, signature_key: str) -> str:
    """Lower-case hex HMAC-SHA256 of the raw body, keyed with the webhook's signature key."""
    return hmac.new(signature_key.encode("utf-8"), body, hashlib.sha256).hexdigest()


NOT_CARD_NUMBERS = frozenset({"scheme_id", "acquirer_transaction_id", "retrieval_reference_number"})
"""Scheme transaction ids (Visa: 15 digits) and acquirer references: long digit strings
that pass the Luhn check by chance (~1 in 10), never card numbers."""


class CheckoutProvider(Provider):
    """Checkout.com webhooks: JSON events signed by ``Cko-Signature`` (hex HMAC-SHA256).

    ``events``: event type -> EventType (default ``DEFAULT_EVENTS``: payment_declined and
    payment_capture_declined fail, payment_captured recovers) [U: event names].
    ``payment_types``: when given, only payments whose ``data.payment_type`` is one of these
    (case-insensitive, e.g. {"recurring", "unscheduled"}) become events; default: all.
    ``subscription_key``: the ``data.metadata`` key holding the merchant's subscription id.
    The signature key keys the HMAC as its UTF-8 text [U: as Checkout.com's examples do].
    """

    name: str = "checkout"
    secret_names: tuple[str, ...] = ("signature_key",)

    scans_card_numbers: bool = True
    """parse() also scans the decoded JSON (the normalize agent parses too)."""
    not_card_numbers: frozenset[str] = NOT_CARD_NUMBERS
    """Digit-only values masked in ingest's raw-byte scan and skipped in parse's scan."""

    def __init__(
        self,
        events: Mapping[str, EventType] | None = None,
        payment_types: Collection[str] | None = None,
        subscription_key: str = DEFAULT_SUBSCRIPTION_KEY,
    ) -> None:
        self.events: Mapping[str, EventType] = dict(DEFAULT_EVENTS if events is None else events)
        self.payment_types = (
            None if payment_types is None else frozenset(t.lower() for t in payment_types)
        )
        self.subscription_key = subscription_key

    def verify(
        self, body: bytes, headers: Mapping[str, str], secrets: Secrets, now: datetime
    ) -> None:
        """Raise VerificationError unless Cko-Signature is the body's HMAC with a key.

        No time is signed, so ``now`` is unused (Checkout.com has no replay window).
        """
        value = signature_header(headers)
        if value is None:
            raise VerificationError("missing Cko-Signature header")
        claimed = value.strip()
        if not _HEX_DIGEST.fullmatch(claimed):
            raise VerificationError("malformed Cko-Signature header: expected 64 hex characters")
        keys = [s["signature_key"] for s in secrets if s.get("signature_key")]
        if not keys:
            raise VerificationError("no Checkout.com signature_key configured for this tenant")
        wanted = claimed.lower().encode("ascii")
        if not any(hmac.compare_digest(sign(body, key).encode("ascii"), wanted) for key in keys):
            raise VerificationError("Cko-Signature does not match the body for any signature_key")

    def parse(self, body: bytes) -> dict[str, Any]:
        """An event: a JSON object with string ``id`` and ``type`` and an object ``data``."""
        doc = load_json(body)
        if not isinstance(doc, dict):
            raise PayloadError("a Checkout.com event is a JSON object")
        for key in ("id", "type"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise PayloadError(f"Checkout.com event has no string {key!r}")
        if not isinstance(doc.get("data"), dict):
            raise PayloadError("Checkout.com event has no object 'data'")
        reject_card_numbers(doc, "event", self.not_card_numbers)
        return doc

    def subject(self, doc: Mapping[str, Any]) -> str | None:
        """The merchant's payment reference (its invoice), else the payment id."""
        data = fields_of.obj(doc, "data")
        return subject_ref(fields_of.text(data, "reference") or fields_of.text(data, "id"))

    def provider_event_id(self, doc: Mapping[str, Any]) -> str:
        """Checkout.com's event id (``evt_...``) [U: assumed stable across redeliveries]."""
        evt_id = doc.get("id")
        if not isinstance(evt_id, str) or not evt_id:
            raise PayloadError("Checkout.com event has no string 'id'")
        return evt_id

    def normalize_doc(
        self, raw: RawWebhook, doc: Mapping[str, Any], at: Coords
    ) -> list[PaymentEvent]:
        """Canonical events of one Checkout.com event; unmapped types give []."""
        kind = self.events.get(doc["type"])
        if kind is None or not self._in_scope(doc):
            return []
        evt_id = self.provider_event_id(doc)
        return [
            envelope(
                raw,
                at,
                evt_id,
                partial(fields_of.fields, doc, kind, self.subscription_key),
                source_type=doc["type"],
                occurred_at=fields_of.occurred_at(doc),
                invalid=f"Checkout.com event {evt_id} has unexpected field values",
            )
        ]

    def _in_scope(self, doc: Mapping[str, Any]) -> bool:
        if self.payment_types is None:
            return True
        payment_type = fields_of.text(fields_of.obj(doc, "data"), "payment_type")
        return payment_type is not None and payment_type.lower() in self.payment_types


checkout = CheckoutProvider()
"""The Checkout.com provider: the default event map, every payment type."""
